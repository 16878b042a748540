//! moat says it is ready only when it is: once the `listening on` line exists, the signal
//! handlers are in place, so a supervisor that signals moat the moment it reports ready
//! gets a graceful shutdown, never a process killed by the signal's default action.

mod common;

use std::io::{BufRead, BufReader, PipeReader, PipeWriter, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Moat, Pki, PATIENCE};

/// A pipe whose buffer the test fills up before moat starts, so that moat's first write to
/// standard error blocks until the test reads. While moat is
/// stuck in that write, the test sends SIGTERM: "signalled the moment it reported ready",
/// made deterministic.
fn full_pipe() -> (PipeReader, PipeWriter) {
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    // Linux's default pipe capacity; moat's first write then has to wait.
    writer.write_all(&[b'.'; PIPE_CAPACITY]).expect("fill pipe");
    (reader, writer)
}

const PIPE_CAPACITY: usize = 64 * 1024;

/// Whether some thread of `pid` is inside write(2) on its standard error.
fn blocked_writing_stderr(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("syscall"))
            .map(|s| s.starts_with("1 0x2 "))
            .unwrap_or(false)
    })
}

#[test]
fn sigterm_right_after_the_ready_line_is_a_graceful_shutdown() {
    let pki = Pki::new();
    let backend = Backend::echo();
    for round in 0..3 {
        let (reader, writer) = full_pipe();
        let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(common::args(&pki.server_args(&backend.target())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer)
            .spawn()
            .expect("start moat");
        let deadline = Instant::now() + PATIENCE;
        while !blocked_writing_stderr(child.id()) {
            assert!(
                Instant::now() < deadline,
                "moat never blocked writing to a full stderr pipe (is the pipe capacity \
                 {PIPE_CAPACITY} bytes here?)"
            );
            assert!(child.try_wait().unwrap().is_none(), "moat exited early");
            thread::sleep(Duration::from_millis(2));
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Now let it write: first the filler, then moat's own lines.
        let lines: Vec<String> = BufReader::new(reader)
            .split(b'\n')
            .map_while(Result::ok)
            .map(|l| {
                String::from_utf8_lossy(&l)
                    .trim_start_matches('.')
                    .to_owned()
            })
            .filter(|l| !l.is_empty())
            .collect();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round}: moat did not exit cleanly ({status}); its lines: {lines:?}"
        );
        // moat's first line (the sandbox's, then `listening on`) comes only once it can
        // take signals.
        assert!(
            lines.iter().any(|l| l.contains("listening on")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("SIGTERM")), "{lines:?}");
    }
}

#[test]
fn sighup_does_not_kill_moat() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut moat = Moat::start(&common::args(&pki.server_args(&backend.target())));
    moat.signal("HUP");
    moat.wait_for("SIGHUP");
    moat.terminate();
    assert!(moat.wait_exit().success());
}
