//! What every integration test needs: fresh certificates, the real `moat` binary with its
//! log in hand, small backends and TLS clients. Everything runs on loopback.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod daemon;
pub mod daemons;
pub mod fault;
pub mod files;
pub mod matrix;
pub mod pki;
pub mod tls_client;
pub mod tls_peer;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use pki::Pki;

/// How long any wait in the tests may last before it counts as a failure. Generous: the
/// tests wait for events, never for time, so this only bounds a broken run.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Borrows owned arguments as `&str`s, for [`Moat::start`].
pub fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A running `moat` process whose standard error is collected line by line.
pub struct Moat {
    child: Child,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    stdout: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Moat {
    /// Starts `moat ARGS...` and waits until every listener it opens has said where it listens.
    pub fn start(args: &[&str]) -> Self {
        let moat = Self::spawn(args);
        let listeners = if args.first() == Some(&"demo") { 3 } else { 1 };
        moat.wait_for_count("listening on ", listeners);
        moat
    }

    /// Starts `moat ARGS...` without waiting for anything.
    ///
    /// `["--sh", SCRIPT]` runs SCRIPT with `sh -c` instead, for tests that must set up the
    /// process (e.g. `ulimit`) before it `exec`s moat.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// Like [`Self::spawn`], with `env` added to moat's environment.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut command = match args {
            ["--sh", script] => {
                let mut sh = Command::new("sh");
                sh.args(["-c", script]);
                sh
            }
            _ => {
                let mut moat = Command::new(env!("CARGO_BIN_EXE_moat"));
                moat.args(args);
                moat.args(test_workers(args));
                moat
            }
        };
        let mut child = command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moat");
        let log = collect_lines(child.stderr.take().expect("stderr"), true);
        let stdout = collect_lines(child.stdout.take().expect("stdout"), false);
        Self { child, log, stdout }
    }

    /// The process id, e.g. to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the listener whose log line mentions `route` (`server`, `client`,
    /// `demo tls leg`, ...), or of the only one.
    pub fn addr(&self) -> SocketAddr {
        let line = self.wait_for("listening on ");
        parse_listen_line(&line)
    }

    /// The address of the listener named `route` (demo mode has three).
    pub fn addr_of(&self, route: &str) -> SocketAddr {
        let line = self.wait_for(&format!("{route}: listening on "));
        parse_listen_line(&line)
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_count(needle, 1).pop().expect("one line")
    }

    /// Waits until `count` log lines contain `needle`; returns them.
    pub fn wait_for_count(&self, needle: &str, count: usize) -> Vec<String> {
        wait_lines(&self.log, needle, count, || self.dump())
    }

    /// Waits for a line on standard output containing `needle`.
    pub fn wait_for_stdout(&self, needle: &str) -> String {
        wait_lines(&self.stdout, needle, 1, || self.dump())
            .pop()
            .expect("one line")
    }

    /// Every log line so far containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let lines = self.log.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The whole log so far.
    pub fn dump(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM (to our own child, by PID).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal such as `USR1` (to our own child, by PID).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most [`PATIENCE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "moat did not exit; log:\n{}",
                self.dump()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// CPU time (user + system) the process has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--workers N` when the suite runs with `MOAT_TEST_WORKERS=N` (`.ci/run` runs it a second
/// time so), for every moat that serves: the worker count must not change any outcome.
fn test_workers(args: &[&str]) -> Vec<String> {
    let serves = matches!(args.first(), Some(&"server" | &"client" | &"demo"))
        || (args.contains(&"--config") && !args.contains(&"check") && !args.contains(&"--check"));
    match std::env::var("MOAT_TEST_WORKERS") {
        Ok(n) if serves && !args.contains(&"--workers") => vec!["--workers".into(), n],
        _ => Vec::new(),
    }
}

fn parse_listen_line(line: &str) -> SocketAddr {
    let rest = &line[line.find("listening on ").expect("listen line") + "listening on ".len()..];
    rest.split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    echo: bool,
) -> Arc<(Mutex<Vec<String>>, Condvar)> {
    let shared = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let writer = shared.clone();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[moat] {line}");
            }
            writer.0.lock().unwrap().push(line);
            writer.1.notify_all();
        }
    });
    shared
}

fn wait_lines(
    shared: &(Mutex<Vec<String>>, Condvar),
    needle: &str,
    count: usize,
    dump: impl Fn() -> String,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut lines = shared.0.lock().unwrap();
    loop {
        let found: Vec<String> = lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect();
        if found.len() >= count {
            return found;
        }
        let now = Instant::now();
        if now >= deadline {
            drop(lines);
            panic!(
                "no {count} line(s) with {needle:?} in moat's output; log:\n{}",
                dump()
            );
        }
        lines = shared.1.wait_timeout(lines, deadline - now).unwrap().0;
    }
}

/// A plaintext backend on loopback that runs `handler` on each connection in a thread and
/// counts the connections it accepted.
pub struct Backend {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    /// A backend that echoes everything back, then closes its write side at EOF.
    pub fn echo() -> Self {
        Self::start(|mut stream| {
            let mut reader = stream.try_clone().expect("clone");
            let _ = io::copy(&mut reader, &mut stream);
            let _ = stream.shutdown(Shutdown::Write);
        })
    }

    /// A backend that runs `handler` for each accepted connection.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                thread::spawn(move || handler(stream));
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been accepted.
    pub fn wait_accepted(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.accepted() < n {
            assert!(
                Instant::now() < deadline,
                "backend accepted {} of {n}",
                self.accepted()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// This backend's address as a string, for `--target`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

/// `len` bytes that do not repeat in any short period (xorshift), so misordered or
/// duplicated chunks cannot go unnoticed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` and reads back as many bytes at once from the same stream (a writer thread
/// and a reader), returning what was read. Both directions are busy at the same time.
pub fn echo_roundtrip<S>(
    stream: S,
    data: Vec<u8>,
    shutdown: impl FnOnce(&mut S) + Send + 'static,
) -> Vec<u8>
where
    S: Read + Write + Send + 'static + TryCloneStream,
{
    let mut reader = stream.try_clone_stream();
    let len = data.len();
    let writer = thread::spawn(move || {
        let mut stream = stream;
        for chunk in data.chunks(64 * 1024) {
            stream.write_all(chunk).expect("write to tunnel");
        }
        stream.flush().expect("flush");
        shutdown(&mut stream);
        stream
    });
    let mut got = Vec::with_capacity(len);
    reader.read_to_end(&mut got).expect("read from tunnel");
    drop(writer.join().expect("writer thread"));
    got
}

/// Streams that can be split into a reading and a writing handle.
pub trait TryCloneStream: Sized {
    /// A second handle on the same connection.
    fn try_clone_stream(&self) -> Self;
}

impl TryCloneStream for TcpStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().expect("clone stream")
    }
}

/// Connects to `addr` with a read timeout of [`PATIENCE`], so a broken tunnel fails the
/// test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Whether `stream` is closed by the peer (EOF or reset) — waiting at most [`PATIENCE`].
/// Any data that arrives first is discarded.
pub fn wait_closed(stream: &mut impl Read) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

/// A program nobody here wrote (`openssl`, `curl`, `psql`, `mariadb`), started by a test with its three standard
/// streams piped. Standard output arrives in chunks on a channel, so every read has a
/// deadline; the process is killed (by its own handle) if the test ends first.
pub struct Tool {
    name: String,
    child: Child,
    stdout: std::sync::mpsc::Receiver<Vec<u8>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Tool {
    /// Starts `program ARGS...` in `dir` (or the current directory). A missing program
    /// fails the test with a message that says what to install ([`daemon::missing`]).
    pub fn spawn(program: &str, args: &[&str], dir: Option<&std::path::Path>) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => daemon::missing(program),
            Err(e) => panic!("cannot start `{program}`: {e}"),
        };
        let (tx, stdout) = std::sync::mpsc::channel();
        let mut out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Some(thread::spawn(move || {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        }));
        Self {
            name: program.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Runs `program ARGS...` with standard input closed to completion: what it printed on
    /// standard output (trailing whitespace trimmed) if it exited successfully, else what it
    /// printed on standard error.
    pub fn output(program: &str, args: &[&str]) -> Result<String, String> {
        let mut tool = Self::spawn(program, args, None);
        drop(tool.take_stdin());
        let out = tool.read_stdout_to_end();
        let status = tool.wait();
        let err = tool.stderr();
        if status.success() {
            Ok(String::from_utf8_lossy(&out).trim_end().to_string())
        } else {
            Err(err)
        }
    }

    /// The program's standard input; dropping it closes the pipe.
    pub fn take_stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("stdin already taken")
    }

    /// Reads standard output until `done` says the bytes so far are enough, the program
    /// closes it, or [`PATIENCE`] runs out (then the program is killed). Returns what came.
    pub fn read_stdout_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    let stderr = self.stderr();
                    panic!(
                        "{} wrote {} bytes and then nothing for too long; stderr:\n{stderr}",
                        self.name,
                        got.len(),
                    );
                }
            }
        }
        got
    }

    /// Everything the program writes on standard output until it closes it.
    pub fn read_stdout_to_end(&mut self) -> Vec<u8> {
        self.read_stdout_until(|_| false)
    }

    /// Waits for the program to exit, at most [`PATIENCE`]; kills it and fails otherwise.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                let stderr = self.stderr();
                panic!("{} did not exit in time; stderr:\n{stderr}", self.name);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the program (our own child) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the program wrote on standard error; call after it has exited or been
    /// killed (it waits for the stream to close).
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Moat {
    /// Waits until `count` lines on standard output contain `needle`; returns them in order.
    pub fn wait_for_stdout_count(&self, needle: &str, count: usize) -> Vec<String> {
        wait_lines(&self.stdout, needle, count, || self.dump())
    }
}
