//! Every deadline is enforced: handshake, connect, idle, close and graceful shutdown.
//! Each test waits for the event (a closed socket, a log line, an exit), never for a time,
//! and checks the deadline was not cut short.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use common::tls_client::{client_config, tls_connect, tls_echo};
use common::{args, connect, wait_closed, Backend, Moat, Pki};

fn server(pki: &Pki, target: &str, extra: &[&str]) -> Moat {
    let mut argv: Vec<String> = pki.server_args(target);
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

fn assert_closed_after(stream: &mut TcpStream, since: Instant, at_least: Duration) {
    wait_closed(stream).expect("moat closes the connection");
    let waited = since.elapsed();
    assert!(
        waited >= at_least,
        "closed after {waited:?}, before the {at_least:?} deadline"
    );
}

#[test]
fn a_silent_client_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &["--handshake-timeout", "300ms"]);
    let start = Instant::now();
    let mut silent = connect(moat.addr());
    assert_closed_after(&mut silent, start, Duration::from_millis(300));
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=handshake timeout"), "{line}");
    assert_eq!(backend.accepted(), 0);
}

#[test]
fn a_client_stalling_mid_handshake_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &["--handshake-timeout", "300ms"]);
    let mut hello = Vec::new();
    let mut conn = ClientConnection::new(
        client_config(&pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    conn.write_tls(&mut hello).unwrap();
    let start = Instant::now();
    let mut stalled = connect(moat.addr());
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    assert_closed_after(&mut stalled, start, Duration::from_millis(300));
    assert!(moat
        .wait_for("tunnel closed")
        .contains("end=handshake timeout"));
}

/// A listener whose accept queue is full and never drained: connects to it hang in SYN_SENT.
fn unresponsive_target() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue: these complete the handshake; later SYNs are dropped.
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    (socket, fillers, addr)
}

#[test]
fn a_target_that_does_not_answer_is_given_up_at_the_connect_timeout() {
    let pki = Pki::new();
    let (_listener, _fillers, target) = unresponsive_target();
    let moat = server(&pki, &target.to_string(), &["--connect-timeout", "300ms"]);
    let start = Instant::now();
    let result = tls_echo(
        moat.addr(),
        client_config(&pki, Some("client")),
        b"anyone there?",
    );
    assert!(result.is_err(), "an unreachable target answered");
    assert!(start.elapsed() >= Duration::from_millis(300));
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=connect timeout"), "{line}");
}

#[test]
fn a_refused_target_ends_the_tunnel_with_a_clear_reason() {
    let pki = Pki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moat = server(&pki, &format!("127.0.0.1:{port}"), &[]);
    assert!(tls_echo(moat.addr(), client_config(&pki, Some("client")), b"x").is_err());
    let line = moat.wait_for("tunnel closed");
    assert!(
        line.contains("end=cannot connect to target: Connection refused"),
        "{line}"
    );
}

#[test]
fn an_idle_tunnel_is_closed_and_traffic_keeps_it_open() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &["--idle-timeout", "1s"]);
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    // Traffic every 100 ms for 2.5 s: well past the idle timeout, never idle for long.
    let busy_until = Instant::now() + Duration::from_millis(2500);
    let mut quiet_since = Instant::now();
    while quiet_since < busy_until {
        std::thread::sleep(Duration::from_millis(100));
        tls.write_all(b"tick").unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).unwrap();
        quiet_since = Instant::now();
    }
    assert_closed_after(&mut tls.sock, quiet_since, Duration::from_secs(1));
    assert!(moat.wait_for("tunnel closed").contains("end=idle timeout"));
}

#[test]
fn a_half_closed_tunnel_is_closed_at_the_close_timeout() {
    let pki = Pki::new();
    // The backend reads to EOF and then holds the connection open, never answering.
    let backend = Backend::start(|mut stream| {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        std::thread::sleep(Duration::from_secs(30));
    });
    let moat = server(
        &pki,
        &backend.target(),
        &["--close-timeout", "300ms", "--idle-timeout", "1h"],
    );
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(b"last words").unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let start = Instant::now();
    assert_closed_after(&mut tls.sock, start, Duration::from_millis(300));
    let line = moat.wait_for("tunnel closed");
    assert!(
        line.contains("end=close timeout") && line.contains("to_target=10B"),
        "{line}"
    );
}

#[test]
fn sigterm_stops_accepting_and_lets_open_tunnels_finish() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut moat = server(&pki, &backend.target(), &[]);
    let addr = moat.addr();
    let config: Arc<_> = client_config(&pki, Some("client"));
    let mut tls = tls_connect(addr, config.clone());
    tls.write_all(b"before").unwrap();
    let mut back = [0u8; 6];
    tls.read_exact(&mut back).unwrap();
    moat.terminate();
    moat.wait_for("no longer accepting");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
    // The open tunnel still works, and its end lets moat exit.
    tls.write_all(b"during").unwrap();
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"during");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    tls.sock.shutdown(Shutdown::Write).unwrap();
    let status = moat.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(moat.wait_for("tunnel closed").contains("end=clean"));
}

#[test]
fn the_shutdown_timeout_closes_tunnels_that_do_not_finish() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut moat = server(&pki, &backend.target(), &["--shutdown-timeout", "300ms"]);
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    tls.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    tls.read_exact(&mut back).unwrap();
    let start = Instant::now();
    moat.terminate();
    let status = moat.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(moat.wait_for("tunnel closed").contains("end=shutdown"));
    wait_closed(&mut tls.sock).unwrap();
}
