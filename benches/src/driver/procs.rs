//! The driver's helper processes — the backend and the load generator, both re-runs of this
//! executable pinned to CPU 1 — and a description of the machine for the results file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::Kind as Backend;
use crate::Result;

/// The CPU the generator and the backend share.
pub const LOAD_CPU: &str = "1";

/// This executable, to re-run as backend and generator.
pub fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))
}

/// The backend process; killed when dropped.
pub struct BackendProcess {
    child: Child,
    // Kept open so the backend never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub addrs: HashMap<&'static str, SocketAddr>,
}

impl BackendProcess {
    /// Starts `moat-bench backend` pinned to [`LOAD_CPU`] and reads its three addresses.
    pub fn start(log: &Path) -> Result<BackendProcess> {
        let stderr =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new("taskset")
            .args(["-c", LOAD_CPU])
            .arg(self_exe()?)
            .arg("backend")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start the backend with taskset: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("the backend's output is not readable".into());
        };
        let mut stdout = BufReader::new(stdout);
        let mut addrs = HashMap::new();
        for _ in Backend::ALL {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let parsed = line.trim().split_once(' ').and_then(|(name, addr)| {
                let kind = Backend::ALL.into_iter().find(|k| k.name() == name)?;
                Some((kind.name(), addr.parse().ok()?))
            });
            match parsed {
                Some((name, addr)) => {
                    addrs.insert(name, addr);
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the backend did not start (said `{}`); see {}",
                        line.trim(),
                        log.display()
                    ));
                }
            }
        }
        Ok(BackendProcess {
            child,
            _stdout: stdout,
            addrs,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self, kind: Backend) -> Result<SocketAddr> {
        self.addrs
            .get(kind.name())
            .copied()
            .ok_or_else(|| format!("no {} backend", kind.name()))
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `moat-bench load ARGS` pinned to [`LOAD_CPU`], with a time limit, and returns its
/// `RESULT` line. Its stderr goes to `log`.
pub fn run_generator(args: &[String], log: &Path, limit: Duration) -> Result<String> {
    wait_generator(spawn_generator(args, log)?, log, limit)
}

/// Starts `moat-bench load ARGS` pinned to [`LOAD_CPU`]; [`wait_generator`] collects it.
pub fn spawn_generator(args: &[String], log: &Path) -> Result<Child> {
    let stderr = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    Command::new("taskset")
        .args(["-c", LOAD_CPU])
        .arg(self_exe()?)
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start the load generator with taskset: {e}"))
}

/// Waits (up to `limit`) for a generator started by [`spawn_generator`] and returns its
/// `RESULT` line; kills it (its own PID only) when it overstays.
pub fn wait_generator(mut child: Child, log: &Path, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the load generator took longer than {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for the load generator: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(line) = out.lines().find(|l| l.starts_with("RESULT ")) {
        return Ok(line.to_string());
    }
    let said = fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "the load generator failed ({status}): {}",
        said.lines().last().unwrap_or("no message")
    ))
}

/// A few lines that say what machine and software produced the figures.
pub fn machine_description(peers: &[(&str, PathBuf)]) -> Vec<String> {
    let mut lines = Vec::new();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    lines.push(format!(
        "{cores} × {model}, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    ));
    if let Some(v) = first_line("rustc", &["--version"], "rustc") {
        lines.push(v);
    }
    if let Some(v) = first_line(
        "git",
        &["log", "-1", "--format=moat commit %h (%cs)"],
        "moat",
    ) {
        lines.push(v);
    }
    for (name, program) in peers {
        let (args, prefix): (&[&str], &str) = if *name == "stunnel" {
            (&["-version"], "stunnel ")
        } else {
            (&["-v"], "HAProxy version")
        };
        if let Some(v) = first_line(&program.display().to_string(), args, prefix) {
            lines.push(v);
        }
    }
    lines
}

/// The first line starting with `prefix` that a command prints on stdout or stderr.
fn first_line(program: &str, args: &[&str], prefix: &str) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
}
