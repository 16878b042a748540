//! Half-close crosses the tunnel: TCP FIN and TLS close_notify are translated both ways,
//! the other direction keeps flowing, and nothing queued is lost at the end.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use common::tls_client::{client_config, tls_connect, tls_transfer};
use common::{args, connect, random_bytes, Backend, Moat, Pki};

/// A backend that reads the request until EOF, then answers with `reply` and closes:
/// it can only answer if the client's end of stream reached it.
fn answer_after_eof(reply: Vec<u8>) -> Backend {
    Backend::start(move |mut stream: TcpStream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        let mut answer = format!("{} bytes then\n", request.len()).into_bytes();
        answer.extend_from_slice(&reply);
        stream.write_all(&answer).unwrap();
        // Closing right after writing: moat must still deliver every byte.
    })
}

/// Checks that `got` is the whole answer of [`answer_after_eof`] to a `request_len`-byte request.
fn assert_whole_answer(got: &[u8], request_len: usize, reply: &[u8]) {
    let mut expected = format!("{request_len} bytes then\n").into_bytes();
    expected.extend_from_slice(reply);
    assert!(
        got == expected,
        "got {} bytes, expected {}",
        got.len(),
        expected.len()
    );
}

#[test]
fn server_mode_close_notify_becomes_fin_and_the_reply_still_arrives() {
    let pki = Pki::new();
    let reply = random_bytes(2 << 20, 7);
    let backend = answer_after_eof(reply.clone());
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    // tls_transfer sends the request, then close_notify, then reads until close_notify.
    let got = tls_transfer(
        moat.addr(),
        client_config(&pki, Some("client")),
        b"GET everything",
    )
    .unwrap();
    assert_whole_answer(&got, 14, &reply);
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=clean"), "{line}");
}

#[test]
fn client_mode_fin_becomes_close_notify_and_the_reply_still_arrives() {
    let pki = Pki::new();
    let reply = random_bytes(2 << 20, 8);
    let backend = answer_after_eof(reply.clone());
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let mut stream = connect(client.addr());
    stream.write_all(b"request").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_whole_answer(&got, 7, &reply);
    for moat in [&server, &client] {
        let line = moat.wait_for("tunnel closed");
        assert!(line.contains("end=clean"), "{line}");
    }
}

#[test]
fn tls_eof_without_close_notify_is_logged_as_truncated() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    // TCP FIN with no close_notify first.
    tls.sock.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    let line = moat.wait_for("tunnel closed");
    assert!(
        line.contains("end=truncated (client closed TLS without close_notify)"),
        "{line}"
    );
    assert!(
        line.contains("to_target=4B") && line.contains("to_client=4B"),
        "{line}"
    );
}
