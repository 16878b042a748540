//! Addresses as people write them: `HOST:PORT` targets (every address the name resolves
//! to), `:PORT` listeners on every interface (IPv4 and IPv6 on one socket), `[IPv6]:PORT`
//! on either side.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;

use common::tls_client::{client_config, tls_echo};
use common::{args, connect, Backend, Moat, Pki};

/// `args` with the value of `flag` replaced.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).expect("flag") + 1;
    args[at] = value.to_owned();
    args
}

#[test]
fn a_target_named_localhost_reaches_the_backend() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = format!("localhost:{}", backend.addr.port());
    let moat = Moat::start(&args(&pki.server_args(&target)));
    let line = moat.wait_for("listening on ");
    assert!(line.ends_with(&format!("forwarding to {target}")), "{line}");
    let client = client_config(&pki, Some("client"));
    // Several tunnels, so that each address the name stands for has its turn first: one
    // that nothing listens on (::1 here, if localhost has it) fails over to the next.
    for n in 0..4u8 {
        let message = [b'a' + n; 100];
        assert_eq!(
            tls_echo(moat.addr(), client.clone(), &message).unwrap(),
            message
        );
    }
    assert_eq!(backend.accepted(), 4);
}

#[test]
fn a_listener_on_port_alone_takes_ipv4_and_ipv6() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let line = with(pki.server_args(&backend.target()), "--listen", ":0");
    let moat = Moat::start(&args(&line));
    let listening = moat.addr();
    assert_eq!(listening.ip().to_string(), "::", "{listening}");
    let client = client_config(&pki, Some("client"));
    for ip in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), listening.port());
        assert_eq!(
            tls_echo(addr, client.clone(), ip.as_bytes()).unwrap(),
            ip.as_bytes()
        );
    }
    let lines = moat.wait_for_count("tunnel closed", 2);
    // An IPv4 client on the dual-stack socket is shown as the IPv4 address it is.
    assert!(
        lines.iter().any(|l| l.contains(" peer=127.0.0.1:")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" peer=[::1]:")),
        "{lines:?}"
    );
}

/// An echo backend on `[::1]`, for an IPv6 target.
fn ipv6_echo() -> SocketAddr {
    let listener = TcpListener::bind("[::1]:0").expect("bind [::1]");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut reader = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn ipv6_literals_listen_and_target() {
    let pki = Pki::new();
    let backend = ipv6_echo();
    let line = with(pki.server_args(&backend.to_string()), "--listen", "[::1]:0");
    let server = Moat::start(&args(&line));
    let at = server.addr();
    assert_eq!(at.ip().to_string(), "::1");
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(at, client, b"six").unwrap(), b"six");

    // Client mode on [::1] too, towards the server by its IPv6 literal (verified against
    // the certificate's ::1 address).
    let line = with(pki.client_args(&at.to_string()), "--listen", "[::1]:0");
    let front = Moat::start(&args(&line));
    let mut stream = connect(front.addr());
    stream.write_all(b"plain six").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"plain six");
    let closed = front.wait_for("tunnel closed");
    assert!(
        closed.contains(" peer=[::1]:") && closed.contains("end=clean"),
        "{closed}"
    );
}
