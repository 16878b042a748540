//! The frame every case of the fault matrix shares (tests/fault_matrix.rs,
//! tests/fault_flow.rs): moat in either mode with short timeouts, plain backends that report
//! what they received, and the closing checks.

use std::net::TcpStream;
use std::sync::{mpsc, Mutex};

use super::fault::{Received, Watch};
use super::{args, Backend, Moat, Pki, PATIENCE};

/// Server mode (TLS client → moat → plain backend) in front of `target`, with `extra` flags.
pub fn server(pki: &Pki, target: &str, extra: &[&str]) -> Moat {
    let mut argv = pki.server_args(target);
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

/// Client mode (plain client → moat → TLS target) towards `target`, with `extra` flags.
pub fn client(pki: &Pki, target: &str, extra: &[&str]) -> Moat {
    let mut argv = pki.client_args(target);
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

/// A plain backend that runs `serve` on each connection and reports what it returns.
pub struct Reporting {
    /// The backend itself.
    pub backend: Backend,
    reports: Mutex<mpsc::Receiver<Received>>,
}

impl Reporting {
    /// Starts the backend.
    pub fn start(serve: impl Fn(TcpStream) -> Received + Send + Sync + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let backend = Backend::start(move |stream| {
            let received = serve(stream);
            let _ = tx.lock().unwrap().send(received);
        });
        Self {
            backend,
            reports: Mutex::new(rx),
        }
    }

    /// The backend's address, for `--target`.
    pub fn target(&self) -> String {
        self.backend.target()
    }

    /// What the next connection to end received, and how it ended.
    pub fn report(&self) -> Received {
        self.reports
            .lock()
            .unwrap()
            .recv_timeout(PATIENCE * 2)
            .expect("the backend's report")
    }
}

/// The end of a case: the tunnel's closing line must contain `end`, and moat must be back
/// where it started (see [`Watch::assert_settled`]). Returns the line.
#[track_caller]
pub fn assert_ended(moat: &Moat, watch: &Watch, end: &str) -> String {
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains(end), "expected {end:?} in: {line}");
    watch.assert_settled(moat);
    line
}
