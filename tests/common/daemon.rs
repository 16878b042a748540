//! Servers nobody here wrote (Redis, PostgreSQL, MariaDB), run by a test as throw-away
//! instances: a private directory, a free loopback port, the server's log in hand, and a stop
//! by PID when the test ends, however it ends.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The Debian/Ubuntu package that provides `program`, for the message a test fails with when
/// the program is missing.
pub fn package_of(program: &str) -> &str {
    match program {
        "redis-server" => "redis-server",
        "redis-cli" => "redis-tools",
        "psql" => "postgresql-client",
        "initdb" | "postgres" => "postgresql",
        "mariadbd" | "mariadb-install-db" => "mariadb-server",
        "mariadb" => "mariadb-client",
        other => other,
    }
}

/// Fails the test because `program` is not installed, saying what to install.
pub fn missing(program: &str) -> ! {
    panic!(
        "`{program}` is not installed or not on PATH; this test needs it \
         (Debian/Ubuntu: apt-get install {}; .ci/run installs it)",
        package_of(program)
    )
}

/// `program` where [`find_on_path`] finds it (or the path itself if it has a slash); fails the
/// test with an install hint if it is not there.
pub fn require(program: &str) -> PathBuf {
    find_on_path(program).unwrap_or_else(|| missing(program))
}

/// `program` as found on PATH, or in an sbin directory (Debian puts `mariadbd` in /usr/sbin,
/// which not every PATH has), if it is there.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether the tests run as root (the owner of `/proc/self` is the effective user).
/// PostgreSQL refuses to run as root, MariaDB wants `--user=root` said explicitly.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A system account's user and group ids, from /etc/passwd.
pub fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it, the listener is
/// closed, and the server started next binds it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port()
}

/// Starts `command` with standard input closed and its output piped; a missing program
/// fails the test with an install hint.
fn spawn_piped(what: &str, command: &mut Command) -> Child {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(&program),
            _ => panic!("cannot start {what}: {e}"),
        })
}

/// Runs `command` to completion (at most [`PATIENCE`]) and fails the test, with its output,
/// unless it succeeds. Returns how long it took.
pub fn run_to_success(what: &str, command: &mut Command) -> Duration {
    let started = Instant::now();
    let mut child = spawn_piped(what, command);
    let output = read_all(child.stdout.take(), child.stderr.take());
    let deadline = started + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in time");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let output = output.join().unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}):\n{output}");
    started.elapsed()
}

fn read_all(
    stdout: Option<impl Read + Send + 'static>,
    stderr: Option<impl Read + Send + 'static>,
) -> thread::JoinHandle<String> {
    let err = stderr.map(|mut s| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
    });
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stdout {
            let _ = s.read_to_string(&mut text);
        }
        if let Some(err) = err {
            text += &err.join().unwrap_or_default();
        }
        text
    })
}

/// A server process started by the test, its standard output and error collected line by
/// line. Dropping it stops the server with its clean-shutdown signal, by PID, and waits for it
/// to exit (killing it if it takes longer than [`PATIENCE`]).
pub struct Daemon {
    name: String,
    child: Child,
    log: Arc<Log>,
    stop_signal: &'static str,
}

#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Output streams not yet at end of file: at 0 the server has closed both.
    open: usize,
}

impl Daemon {
    /// Starts `command`; `stop_signal` (`TERM`, `INT`, ...) is the one that shuts it down
    /// cleanly. A missing program fails the test with an install hint.
    pub fn start(name: &str, command: &mut Command, stop_signal: &'static str) -> Self {
        let mut child = spawn_piped(name, command);
        let log = Arc::new(Log::default());
        log.state.lock().unwrap().open = 2;
        collect(child.stdout.take().expect("stdout"), name, log.clone());
        collect(child.stderr.take().expect("stderr"), name, log.clone());
        Self {
            name: name.to_owned(),
            child,
            log,
            stop_signal,
        }
    }

    /// Waits for a log line containing `needle` and returns it; fails the test, showing the
    /// log, if the server closes its output first or [`PATIENCE`] runs out.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.log.state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            if state.open == 0 || now >= deadline {
                let why = if state.open == 0 {
                    "exited"
                } else {
                    "took too long"
                };
                panic!(
                    "{} {why} before saying {needle:?}; its log:\n{}",
                    self.name,
                    state.lines.join("\n")
                );
            }
            state = self
                .log
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The process id of the server (the process the test started).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args([&format!("-{}", self.stop_signal), &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + PATIENCE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static, name: &str, log: Arc<Log>) {
    let name = name.to_owned();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{name}] {line}");
            log.state.lock().unwrap().lines.push(line);
            log.changed.notify_all();
        }
        log.state.lock().unwrap().open -= 1;
        log.changed.notify_all();
    });
}

/// Writes a note to the test run's standard error even when cargo captures test output, for
/// what a person reading a passing run should know (a part of a test that could not run here).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "note: {text}");
}

/// Makes `path` readable by its owner only (libpq refuses a private key others can read).
pub fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
