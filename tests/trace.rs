//! `--trace` shows the poll model at work for the tunnels chosen, and only for them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::tls_client::{client_config, tls_transfer};
use common::{args, Backend, Moat, Pki};

fn server(pki: &Pki, target: &str, extra: &[&str]) -> Moat {
    let mut argv = pki.server_args(target);
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

#[test]
fn a_traced_tunnel_shows_events_calls_tls_states_buffers_and_deadlines() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &["--trace"]);
    let got = tls_transfer(moat.addr(), client_config(&pki, Some("client")), b"ping").unwrap();
    assert_eq!(got, b"ping");
    moat.wait_for("tunnel closed");
    // Which worker took the tunnel decides its id: read it off the accept line.
    let accepted = moat.wait_for("accepted from 127.0.0.1:");
    let id = accepted
        .split("trace tunnel ")
        .nth(1)
        .and_then(|rest| rest.split([':', ' ']).next())
        .expect("a tunnel id on the accept line")
        .to_owned();
    let trace = moat.lines_with(&format!("trace tunnel {id}"));
    for wanted in [
        "accepted from 127.0.0.1:",
        "edge-triggered",
        "deadline handshake armed",
        "event on client: readable",
        "client: read ",
        "tls: EncodeTlsData",
        "handshake ClientHello",
        "wrote [handshake ServerHello]",
        "tls: WriteTraffic",
        "buffer taken from the pool",
        "buffer given back",
        "target: connecting to",
        "event on target: ",
        "target: connected to",
        "deadline close armed",
        "PeerClosed (close_notify received)",
        "shutdown(write)",
    ] {
        assert!(
            trace.iter().any(|l| l.contains(wanted)),
            "no trace line with {wanted:?}:\n{}",
            trace.join("\n")
        );
    }
}

#[test]
fn trace_peer_follows_only_that_address_and_no_trace_costs_no_line() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &["--trace-peer", "127.0.0.2"]);
    let from = |ip: [u8; 4]| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        socket.connect(&moat.addr().into()).unwrap();
        TcpStream::from(socket)
    };
    for ip in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut stream = from(ip);
        stream.write_all(b"not TLS at all").unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    moat.wait_for_count("tunnel closed", 2);
    let traced = moat.lines_with("trace tunnel");
    assert!(!traced.is_empty());
    assert!(
        traced.iter().all(|l| !l.contains("127.0.0.1:")),
        "{traced:#?}"
    );
    assert!(traced
        .iter()
        .any(|l| l.contains("accepted from 127.0.0.2:")));

    let quiet = server(&pki, &backend.target(), &[]);
    let _ = tls_transfer(quiet.addr(), client_config(&pki, Some("client")), b"x");
    quiet.wait_for("tunnel closed");
    assert!(quiet.lines_with("trace tunnel").is_empty());
}
