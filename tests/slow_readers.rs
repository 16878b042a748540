//! A peer that is still reading is not idle. moat hands the kernel everything it can at
//! once, so while a slow backend works through what the kernel holds for it, moat itself
//! sees no traffic: the idle and close timeouts must ask the kernel before they cut.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::tls_client::{client_config, tls_connect, tls_transfer};
use common::{args, random_bytes, Backend, Moat, Pki};

const UPLOAD: usize = 2 << 20;

/// A backend with a small receive buffer that reads 32 KiB every 40 ms (about 800 KB/s,
/// so 2 MiB take over two seconds), then answers with how much it got and closes.
fn slow_backend(answer_at: usize) -> Backend {
    Backend::start(move |mut stream: TcpStream| {
        socket2::SockRef::from(&stream)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let mut buf = vec![0; 32 * 1024];
        let mut total = 0;
        while total < answer_at {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            thread::sleep(Duration::from_millis(40));
        }
        let _ = stream.write_all(format!("got {total}").as_bytes());
    })
}

fn server_with(pki: &Pki, backend: &Backend, flag: &str) -> Moat {
    let mut argv = pki.server_args(&backend.target());
    argv.extend([flag.to_string(), "1s".into()]);
    Moat::start(&args(&argv))
}

/// The case: 2 MiB, then close_notify, with `--close-timeout 1s`. The backend reads
/// for over two seconds after moat has handed everything over, and only then answers.
#[test]
fn close_timeout_waits_for_a_backend_that_is_still_reading() {
    let pki = Pki::new();
    let backend = slow_backend(usize::MAX);
    let moat = server_with(&pki, &backend, "--close-timeout");
    let data = random_bytes(UPLOAD, 21);
    let got = tls_transfer(moat.addr(), client_config(&pki, Some("client")), &data)
        .expect("the answer and a clean close");
    assert_eq!(String::from_utf8_lossy(&got), format!("got {UPLOAD}"));
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=clean"), "{line}");
}

#[test]
fn idle_timeout_waits_for_a_backend_that_is_still_reading() {
    let pki = Pki::new();
    let backend = slow_backend(UPLOAD);
    let moat = server_with(&pki, &backend, "--idle-timeout");
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(&random_bytes(UPLOAD, 22)).unwrap();
    tls.flush().unwrap();
    let mut answer = [0; 32];
    let n = tls.read(&mut answer).expect("the answer");
    assert_eq!(
        String::from_utf8_lossy(&answer[..n]),
        format!("got {UPLOAD}")
    );
}

/// A backend that stops reading with bytes still queued is cut all the same, within two
/// timeout periods of its last progress.
#[test]
fn a_backend_that_stops_reading_is_still_cut() {
    let pki = Pki::new();
    let backend = Backend::start(|stream: TcpStream| {
        thread::sleep(Duration::from_secs(30));
        drop(stream);
    });
    let moat = server_with(&pki, &backend, "--idle-timeout");
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(&random_bytes(UPLOAD, 23)).unwrap();
    tls.flush().unwrap();
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=idle timeout"), "{line}");
    let seconds: f64 = line
        .split("duration=")
        .nth(1)
        .and_then(|d| d.split('s').next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    assert!((1.0..3.5).contains(&seconds), "{line}");
}
