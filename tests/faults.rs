//! Faults on either side of a tunnel reach the other side as what they are: a reset as an
//! abort (never as a clean end), and a fatal alert as an alert (never destroyed by a reset).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use common::tls_client::{client_config, tls_connect};
use common::{args, connect, random_bytes, Backend, Moat, Pki, PATIENCE};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};

/// How a reader's stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// A clean end: FIN (plain) or close_notify (TLS).
    Clean,
    /// A reset (plain), or TCP EOF without close_notify (TLS).
    Abort,
}

/// Reads until the stream ends and says how.
fn ending(stream: &mut impl Read) -> (usize, Ending) {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (total, Ending::Clean),
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return (total, Ending::Abort)
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

/// Closes `stream` with a reset instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// A backend that reads until its stream ends and reports how, and how many bytes came.
fn reporting_backend() -> (Backend, mpsc::Receiver<(usize, Ending)>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::start(move |mut stream| {
        let result = ending(&mut stream);
        let _ = tx.lock().unwrap().send(result);
    });
    (backend, rx)
}

#[test]
fn a_tls_client_that_resets_mid_upload_reaches_the_backend_as_a_reset() {
    let pki = Pki::new();
    let (backend, report) = reporting_backend();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(&random_bytes(256 * 1024, 1)).unwrap();
    tls.flush().unwrap();
    backend.wait_accepted(1);
    reset(tls.sock);
    let (bytes, how) = report.recv_timeout(PATIENCE).expect("backend report");
    assert_eq!(
        how,
        Ending::Abort,
        "after {bytes} bytes the backend saw a clean end"
    );
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=client"), "{line}");
}

#[test]
fn a_plain_client_that_resets_mid_upload_reaches_the_tls_server_without_close_notify() {
    let pki = Pki::new();
    let (backend, _report) = reporting_backend();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let mut stream = connect(client.addr());
    stream.write_all(&random_bytes(256 * 1024, 2)).unwrap();
    backend.wait_accepted(1);
    reset(stream);
    // Client mode ends its TLS leg without close_notify: the server-mode moat sees a
    // truncation (or a reset, if its own data was still unread there), never a clean end.
    let line = server.wait_for("tunnel closed");
    assert!(
        line.contains("end=truncated") || line.contains("end=client Connection reset"),
        "{line}"
    );
    let line = client.wait_for("tunnel closed");
    assert!(line.contains("end=client"), "{line}");
}

#[test]
fn a_backend_reset_reaches_the_tls_client_without_close_notify() {
    let pki = Pki::new();
    let backend = Backend::start(|mut stream: TcpStream| {
        let mut buf = [0; 5];
        stream.read_exact(&mut buf).unwrap();
        stream.write_all(&random_bytes(100 * 1024, 3)).unwrap();
        reset(stream);
    });
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(b"hello").unwrap();
    tls.flush().unwrap();
    let (_, how) = ending(&mut tls);
    assert_eq!(
        how,
        Ending::Abort,
        "a backend reset reached the client as close_notify"
    );
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=target"), "{line}");
}

/// Through two moats a backend's reset crosses the TLS leg as a missing close_notify, and
/// the client-mode moat passes that truncation on as a FIN (what it does for any TLS peer
/// that stops short), logging it as truncated.
#[test]
fn a_backend_reset_reaches_a_plain_client_through_two_moats_as_a_truncation() {
    let pki = Pki::new();
    let backend = Backend::start(|mut stream: TcpStream| {
        let mut buf = [0; 5];
        stream.read_exact(&mut buf).unwrap();
        reset(stream);
    });
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let mut stream = connect(client.addr());
    stream.write_all(b"hello").unwrap();
    let (_, how) = ending(&mut stream);
    assert_eq!(how, Ending::Clean);
    drop(stream);
    let line = server.wait_for("tunnel closed");
    assert!(line.contains("end=target Connection reset"), "{line}");
    let line = client.wait_for("tunnel closed");
    assert!(line.contains("end=truncated"), "{line}");
}

/// A TLS 1.3 client without a certificate finishes its side of the handshake and sends
/// 64 KiB at once behind its Finished; moat refuses it (certificate required) with the
/// 64 KiB unread. Without a lingering close the kernel answers that unread data with a
/// reset, which destroys the alert if it is still on its way, and makes a client that is
/// still writing fail before it reads it; here the client must read the alert, then EOF.
#[test]
fn a_refused_client_whose_flight_came_with_more_data_still_gets_the_alert() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    for round in 0..3 {
        let mut sock = connect(moat.addr());
        let mut conn = ClientConnection::new(
            client_config(&pki, None),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .expect("client side of the handshake");
        }
        conn.writer()
            .write_all(&random_bytes(64 * 1024, 4))
            .unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        let outcome = loop {
            match conn.read_tls(&mut sock) {
                Ok(0) => break "EOF without an alert".to_string(),
                Ok(_) => match conn.process_new_packets() {
                    Ok(_) => continue,
                    Err(e) => break e.to_string(),
                },
                Err(e) => break format!("read error: {e}"),
            }
        };
        let expected = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(outcome, expected.to_string(), "round {round}");
        // And behind the alert a FIN: moat drained the 64 KiB instead of resetting.
        let mut rest = Vec::new();
        if let Err(e) = sock.read_to_end(&mut rest) {
            panic!("round {round}: a reset followed the alert: {e}");
        }
    }
    assert_eq!(backend.accepted(), 0);
}

/// Garbage that starts like a TLS handshake record, followed by 40 KB more: moat answers
/// with a fatal alert, and the client reads it, then EOF — not a reset.
#[test]
fn a_malformed_client_hello_followed_by_more_data_gets_the_alert_then_eof() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut sock = connect(moat.addr());
    // A handshake record holding a ClientHello header whose body is nonsense.
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c];
    junk.extend_from_slice(&[0xee; 60]);
    junk.extend_from_slice(&random_bytes(40_000, 5));
    sock.write_all(&junk).unwrap();
    let mut got = Vec::new();
    match sock.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => panic!("moat reset the connection after {} bytes: {e}", got.len()),
    }
    // A TLS alert record: content type 21, two bytes of version, length 2, level fatal (2).
    assert!(
        got.len() >= 7 && got[0] == 0x15 && got[3..5] == [0, 2] && got[5] == 2,
        "not a fatal alert: {got:?}"
    );
    assert_eq!(backend.accepted(), 0);
}
