//! What the config-file, address and reload tests share: a private directory, files
//! replaced the way an operator (or certbot) replaces them, moat runs that end by
//! themselves, descriptor counts, and the certificate a listener serves.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

use super::{tls_client, PATIENCE};

/// A directory under the system's temp directory, removed with everything in it on drop.
pub struct TempDir {
    pub path: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "moat-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `join(name)` as a string, for a flag or a config file.
    pub fn s(&self, name: &str) -> String {
        self.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Puts `contents` at `path` the way a deployment does: written beside it, then renamed
/// over it, so a reader sees the old file or the new one, never half of one.
pub fn replace_file(path: &Path, contents: &[u8]) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let next = path.with_file_name(format!(".{name}.next"));
    std::fs::write(&next, contents).expect("write the new file");
    std::fs::rename(&next, path).expect("rename it into place");
}

/// Replaces `to` with a copy of `from` (see [`replace_file`]).
pub fn replace_with_copy(from: &Path, to: &Path) {
    replace_file(to, &std::fs::read(from).expect("read the new file"));
}

/// Exit code, standard output and standard error of `moat ARGS...`, which must end by
/// itself within [`PATIENCE`].
pub fn run_to_exit(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moat");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "moat {args:?} did not exit; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    let code = out.status.code().expect("exit code, not a signal");
    (code, text(out.stdout), text(out.stderr))
}

/// Runs `moat ARGS...`, checks that it failed with `code` and exactly one `moat: ` line on
/// standard error holding every one of `needles`, and returns that line.
pub fn fails_with(args: &[&str], code: i32, needles: &[&str]) -> String {
    let (got, stdout, stderr) = run_to_exit(args);
    let shown = format!("moat {args:?}\nexit {got}\nstdout: {stdout:?}\nstderr: {stderr:?}");
    assert_eq!(got, code, "{shown}");
    assert!(stdout.is_empty(), "{shown}");
    assert!(
        stderr.starts_with("moat: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "not exactly one 'moat: ' line\n{shown}"
    );
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "os error"] {
        assert!(!stderr.contains(bad), "{bad:?} in the message\n{shown}");
    }
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing\n{shown}");
    }
    stderr.trim_end().to_owned()
}

/// How many descriptors process `pid` holds open.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The first certificate of the PEM file at `path`.
pub fn certificate(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .expect("read certificate")
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// Opens TLS to `addr` (as `localhost`), echoes `probe` through the tunnel, and returns the
/// certificate the server presented. The echo makes sure the tunnel was let in, not only
/// that the handshake began.
pub fn served_certificate(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    probe: &[u8],
) -> io::Result<CertificateDer<'static>> {
    use std::io::{Read, Write};
    let mut tls = tls_client::tls_connect(addr, config);
    tls.write_all(probe)?;
    tls.flush()?;
    let mut got = vec![0; probe.len()];
    tls.read_exact(&mut got)?;
    assert_eq!(got, probe, "the echo came back changed");
    tls.conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .cloned()
        .ok_or_else(|| io::Error::other("no server certificate"))
}
