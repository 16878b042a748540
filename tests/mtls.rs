//! Mutual TLS: only clients with a certificate from the configured CA get through, and a
//! refused client never reaches the backend. Client mode checks the server's chain and name.

mod common;

use std::io::Read;

use common::tls_client::{client_config, tls_echo};
use common::{args, connect, Backend, Moat, Pki};

/// Each refused identity ends with a log line saying why; the backend sees no connection
/// from any of them: a good client afterwards is the backend's first connection.
#[test]
fn server_mode_refuses_missing_foreign_and_expired_certificates() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let addr = moat.addr();
    let cases = [
        (None, "peer sent no certificates"),
        (Some("stranger"), "invalid peer certificate: UnknownIssuer"),
        (
            Some("expired"),
            "invalid peer certificate: certificate expired",
        ),
    ];
    for (n, (identity, why)) in cases.iter().enumerate() {
        let result = tls_echo(addr, client_config(&pki, *identity), b"let me in");
        assert!(result.is_err(), "{identity:?} was let through");
        let lines = moat.wait_for_count("tunnel closed", n + 1);
        let line = &lines[n];
        assert!(
            line.contains(why) && line.contains("tls error with client"),
            "{identity:?}: {line}"
        );
        assert!(line.contains("to_target=0B"), "{line}");
    }
    assert_eq!(
        tls_echo(addr, client_config(&pki, Some("client")), b"hello").unwrap(),
        b"hello"
    );
    backend.wait_accepted(1);
    assert_eq!(
        backend.accepted(),
        1,
        "a refused client reached the backend"
    );
    let lines = moat.wait_for_count("tunnel closed", 4);
    let good = &lines[3];
    assert!(
        good.contains("subject=\"O=moat tests,CN=test-client\""),
        "{good}"
    );
    assert!(
        good.contains("peer=127.0.0.1:") && good.contains("duration=") && good.contains("end="),
        "{good}"
    );
}

#[test]
fn no_client_auth_accepts_clients_without_certificates() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&[
        "server",
        "--listen",
        "[::1]:0",
        "--target",
        &backend.target(),
        "--cert",
        &pki.s("server.pem"),
        "--key",
        &pki.s("server.key"),
        "--no-client-auth",
    ]);
    assert!(moat.addr().is_ipv6());
    assert_eq!(
        tls_echo(moat.addr(), client_config(&pki, None), b"anyone").unwrap(),
        b"anyone"
    );
}

/// Client mode refuses a server whose certificate does not chain to `--ca`, or does not
/// carry the expected name; the plaintext client sees its connection closed.
#[test]
fn client_mode_verifies_the_server_chain_and_name() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let target = server.addr().to_string();
    let (other_ca, ca, cert, key) = (
        pki.s("other-ca.pem"),
        pki.ca(),
        pki.s("client.pem"),
        pki.s("client.key"),
    );
    let cases = [
        (vec!["--ca", &other_ca], "UnknownIssuer"),
        (
            vec!["--ca", &ca, "--server-name", "db.example"],
            "certificate not valid for name \"db.example\"",
        ),
    ];
    for (extra, why) in cases {
        let mut argv = vec![
            "client",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        argv.extend(extra);
        let client = Moat::start(&argv);
        let mut stream = connect(client.addr());
        let mut buf = Vec::new();
        // The tunnel is closed before any byte comes back.
        let _ = stream.read_to_end(&mut buf);
        assert!(buf.is_empty());
        let line = client.wait_for("tunnel closed");
        assert!(
            line.contains("tls error with target") && line.contains(why),
            "{line}"
        );
    }
    assert_eq!(backend.accepted(), 0);
}
