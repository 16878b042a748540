//! Flood resistance, functionally: the per-address cap, the handshake budget that evicts
//! the stalest handshake, and failover across several targets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use common::tls_client::{client_config, tls_echo};
use common::{args, connect, wait_closed, Backend, Moat, Pki, PATIENCE};

fn server(pki: &Pki, targets: &[String], extra: &[&str]) -> Moat {
    let mut argv = pki.server_args(&targets[0]);
    for t in &targets[1..] {
        argv.extend(["--target".to_string(), t.clone()]);
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

/// A loopback address where nothing listens: connects to it are refused.
fn refused_target() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A TCP connection to `addr` from the loopback address `source`.
fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn echo_over(stream: TcpStream, pki: &Pki, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let conn = ClientConnection::new(
        client_config(pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, stream);
    tls.write_all(message)?;
    tls.flush()?;
    let mut back = vec![0; message.len()];
    tls.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn the_per_ip_cap_refuses_only_the_crowded_address() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &[backend.target()], &["--max-conns-per-ip", "2"]);
    let addr = moat.addr();
    let mut held = Vec::new();
    for i in 0..2 {
        let stream = connect_from([127, 0, 0, 1], addr);
        held.push(stream.try_clone().unwrap());
        assert_eq!(
            echo_over(stream, &pki, b"mine").unwrap(),
            b"mine",
            "connection {i}"
        );
    }
    assert!(echo_over(connect_from([127, 0, 0, 1], addr), &pki, b"third").is_err());
    moat.wait_for("refused a connection from 127.0.0.1: 2 already open from it");
    // Another address is not affected.
    assert_eq!(
        echo_over(connect_from([127, 0, 0, 2], addr), &pki, b"other").unwrap(),
        b"other"
    );
    assert_eq!(backend.accepted(), 3);
}

#[test]
fn a_full_handshake_budget_evicts_the_stalest_handshake_for_a_newcomer() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(
        &pki,
        &[backend.target()],
        // The budget is split between worker threads (each keeps its own lists): a budget
        // of 3 that this test fills is one worker's.
        &[
            "--max-handshakes",
            "3",
            "--handshake-timeout",
            "3s",
            "--log-level",
            "debug",
            "--workers",
            "1",
        ],
    );
    let addr = moat.addr();
    // Three silent clients fill the budget.
    let mut silent: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    moat.wait_for_count(": accepted 127.0.0.1:", 3);
    // A real client still gets through at once: the stalest silent hello makes room.
    assert_eq!(
        tls_echo(addr, client_config(&pki, Some("client")), b"real").unwrap(),
        b"real"
    );
    assert!(moat
        .wait_for("evicting the stalest")
        .contains("--max-handshakes"));
    // The evicted client is held, silent, until its handshake deadline, then closed.
    let start = Instant::now();
    wait_closed(&mut silent[0]).unwrap();
    let line = moat.wait_for("end=evicted");
    assert!(line.contains("handshake budget was full"), "{line}");
    assert!(start.elapsed() < PATIENCE);
    assert_eq!(moat.wait_for_count("end=handshake timeout", 2).len(), 2);
    assert_eq!(moat.lines_with("end=evicted").len(), 1);
}

#[test]
fn a_refused_or_silent_target_fails_over_to_the_next() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let refused = refused_target();
    let moat = server(
        &pki,
        &[refused.clone(), backend.target()],
        &["--log-level", "debug"],
    );
    for i in 0..4 {
        let msg = format!("attempt {i}");
        assert_eq!(
            tls_echo(
                moat.addr(),
                client_config(&pki, Some("client")),
                msg.as_bytes()
            )
            .unwrap(),
            msg.as_bytes()
        );
    }
    assert!(moat
        .wait_for("trying the next target")
        .contains("Connection refused"));

    // A target that never answers is left at the connect timeout for the next one.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    drop(silent);
    socket.bind(&silent_addr.into()).unwrap();
    socket.listen(0).unwrap();
    let _fillers: Vec<_> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&silent_addr, Duration::from_millis(200)).ok())
        .collect();
    let moat = server(
        &pki,
        &[silent_addr.to_string(), backend.target()],
        &["--connect-timeout", "300ms"],
    );
    let start = Instant::now();
    assert_eq!(
        tls_echo(moat.addr(), client_config(&pki, Some("client")), b"late").unwrap(),
        b"late"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));

    // With every target down the client is given up on, after trying each once.
    let moat = server(&pki, &[refused.clone(), refused], &[]);
    assert!(tls_echo(moat.addr(), client_config(&pki, Some("client")), b"x").is_err());
    assert!(moat
        .wait_for("tunnel closed")
        .contains("cannot connect to target: Connection refused"));
}

/// Failover walks each tunnel through every target once, however many tunnels dial at the
/// same time: with one dead target of two, every client is served.
#[test]
fn concurrent_tunnels_each_fail_over_to_the_live_target() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let refused = refused_target();
    let moat = server(&pki, &[refused, backend.target()], &[]);
    let addr = moat.addr();
    let config = client_config(&pki, Some("client"));
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || tls_echo(addr, config, format!("client {i}").as_bytes()))
        })
        .collect();
    let served = clients
        .into_iter()
        .map(|c| c.join())
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count();
    assert_eq!(served, 60, "log:\n{}", moat.dump());
}

/// Tunnels that end before they are established (refused, timed out, evicted) are what a
/// flood is made of: only a burst of their lines is logged per interval.
#[test]
fn a_flood_of_refused_clients_logs_a_bounded_number_of_lines() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &[backend.target()], &["--log-level", "debug"]);
    let addr = moat.addr();
    for _ in 0..30 {
        assert!(tls_echo(addr, client_config(&pki, None), b"no certificate").is_err());
    }
    // Every refusal reached moat's loop; the 30th is the last accept in the log.
    moat.wait_for_count(": accepted 127.0.0.1:", 30);
    assert_eq!(
        tls_echo(addr, client_config(&pki, Some("client")), b"ok").unwrap(),
        b"ok"
    );
    moat.wait_for("to_target=2B");
    let refusals = moat.lines_with("peer sent no certificates").len();
    assert_eq!(refusals, 20, "{refusals} refusal lines for 30 refusals");
}
