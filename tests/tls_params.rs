//! How TLS is negotiated and what moat starts with: the server's own suite order, `--ciphers`,
//! `--min-tls`, the post-quantum hybrid group in both modes, certificate key types, key
//! files moat cannot use, the system trust store, and plaintext that must stay local.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{HandshakeKind, ServerConfig, ServerConnection, StreamOwned};

use common::pki::{KeyKind, Spec};
use common::tls_client::{client_config, client_config_with, tls_connect, tls_echo};
use common::{args, connect, Backend, Moat, Pki, Tool};

fn server(pki: &Pki, backend: &Backend, extra: &[&str]) -> Moat {
    let mut argv = pki.server_args(&backend.target());
    argv.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&argv))
}

/// `openssl s_client` with the test client certificate and `extra`, standard input closed
/// so it ends after the handshake. Returns (success, stdout, stderr).
fn s_client(pki: &Pki, moat: &Moat, extra: &[&str]) -> (bool, String, String) {
    let (addr, cert, key) = (
        moat.addr().to_string(),
        pki.s("client.pem"),
        pki.s("client.key"),
    );
    let mut a = vec!["s_client", "-connect", &addr, "-cert", &cert, "-key", &key];
    a.extend_from_slice(extra);
    let mut tool = Tool::spawn("openssl", &a, None);
    drop(tool.take_stdin());
    let stdout = String::from_utf8_lossy(&tool.read_stdout_to_end()).into_owned();
    let ok = tool.wait().success();
    (ok, stdout, tool.stderr())
}

#[test]
fn the_server_keeps_its_own_suite_order_when_the_client_prefers_aes_256() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend, &[]);
    let openssl_order =
        "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
    let (_, stdout, stderr) = s_client(&pki, &moat, &["-ciphersuites", openssl_order]);
    assert!(
        stdout.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "{stdout}\n{stderr}"
    );
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("suite=TLS13_AES_128_GCM_SHA256"), "{line}");

    let tls12_order = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256";
    let (_, stdout, stderr) = s_client(&pki, &moat, &["-tls1_2", "-cipher", tls12_order]);
    assert!(
        stdout.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{stdout}\n{stderr}"
    );
    let line = &moat.wait_for_count("tunnel closed", 2)[1];
    assert!(
        line.contains("tls_version=1.2")
            && line.contains("suite=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{line}"
    );
}

#[test]
fn ciphers_override_the_order_and_min_tls_refuses_tls12() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let ciphers = "TLS_AES_256_GCM_SHA384,TLS13_AES_128_GCM_SHA256";
    let moat = server(&pki, &backend, &["--ciphers", ciphers, "--min-tls", "1.3"]);
    let client_order = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
    let (_, stdout, stderr) = s_client(&pki, &moat, &["-ciphersuites", client_order]);
    assert!(
        stdout.contains("Cipher is TLS_AES_256_GCM_SHA384"),
        "{stdout}\n{stderr}"
    );
    let (ok, _, stderr) = s_client(&pki, &moat, &["-tls1_2"]);
    assert!(!ok && stderr.contains("protocol version"), "{stderr}");
}

/// The group and handshake kind a rustls client offering `groups` (in that order; it sends
/// a key share for the first) gets from a server-mode moat.
fn negotiate(
    pki: &Pki,
    moat: &Moat,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> (String, Option<HandshakeKind>) {
    let provider = CryptoProvider {
        kx_groups: groups,
        ..default_provider()
    };
    let mut tls = tls_connect(
        moat.addr(),
        client_config_with(pki, Some("client"), provider),
    );
    tls.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    tls.read_exact(&mut got).unwrap();
    let group = tls
        .conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    (group.unwrap_or_default(), tls.conn.handshake_kind())
}

#[test]
fn server_mode_takes_the_hybrid_from_a_client_that_offers_it_first_without_a_retry() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend, &[]);
    let hybrid_first = vec![kx_group::X25519MLKEM768, kx_group::X25519];
    let (group, kind) = negotiate(&pki, &moat, hybrid_first);
    assert_eq!(
        (group.as_str(), kind),
        ("X25519MLKEM768", Some(HandshakeKind::Full))
    );
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("group=X25519MLKEM768"), "{line}");

    // A client that lists X25519 first (and so sends only an X25519 share) gets X25519,
    // still without a HelloRetryRequest.
    let classical_first = vec![kx_group::X25519, kx_group::X25519MLKEM768];
    let (group, kind) = negotiate(&pki, &moat, classical_first);
    assert_eq!(
        (group.as_str(), kind),
        ("X25519", Some(HandshakeKind::Full))
    );
}

/// A rustls server that prefers classical groups, serving one connection: it takes groups
/// in the client's order, so what it negotiates is what moat's client offered first.
#[test]
fn client_mode_offers_the_hybrid_first() {
    let pki = Pki::new();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let provider = CryptoProvider {
        kx_groups: vec![
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::X25519MLKEM768,
        ],
        ..default_provider()
    };
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let conn = ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line).unwrap();
        let group = tls
            .conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()));
        tx.send((group, tls.conn.handshake_kind())).unwrap();
        tls.write_all(line.as_bytes()).unwrap();
        tls.flush().unwrap();
    });
    let client = Moat::start(&args(&pki.client_args(&addr.to_string())));
    let mut stream = connect(client.addr());
    stream.write_all(b"hello\n").unwrap();
    let mut got = [0u8; 6];
    stream.read_exact(&mut got).unwrap();
    let (group, kind) = rx.recv().unwrap();
    assert_eq!(group.as_deref(), Some("X25519MLKEM768"));
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "moat's client sent no hybrid key share"
    );
}

#[test]
fn every_supported_certificate_key_type_works() {
    let pki = Pki::new();
    let backend = Backend::echo();
    for kind in [KeyKind::EcdsaP384, KeyKind::Rsa2048, KeyKind::Ed25519] {
        let name = format!("{kind:?}").to_lowercase();
        pki.issue(
            &name,
            &Spec {
                key: kind,
                ..Spec::server(&["keys.test"])
            },
        );
        pki.issue(
            &format!("{name}-client"),
            &Spec {
                key: kind,
                ..Spec::client("keys")
            },
        );
        let mut argv = pki.server_args(&backend.target());
        for (flag, file) in [
            ("--cert", format!("{name}.pem")),
            ("--key", format!("{name}.key")),
        ] {
            let at = argv.iter().position(|a| a == flag).unwrap();
            argv[at + 1] = pki.s(&file);
        }
        let moat = Moat::start(&args(&argv));
        let config = client_config(&pki, Some(&format!("{name}-client")));
        let got = tls_echo(moat.addr(), config, b"key type");
        assert_eq!(got.expect("handshake"), b"key type", "{kind:?}");
    }
}

/// Starts moat with `argv`, which must fail at start-up with exit code 2 and one `moat: `
/// line holding every one of `needles`.
fn start_fails(argv: &[&str], needles: &[&str]) {
    let mut moat = Moat::spawn(argv);
    assert_eq!(moat.wait_exit().code(), Some(2), "{}", moat.dump());
    // Standard error is collected by a thread of its own: wait for the line to arrive.
    let line = moat.wait_for("moat: ");
    assert_eq!(moat.dump().lines().count(), 1, "{}", moat.dump());
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
}

fn openssl(args: &[&str]) {
    let mut tool = Tool::spawn("openssl", args, None);
    let status = tool.wait();
    assert!(status.success(), "openssl {args:?}: {}", tool.stderr());
}

#[test]
fn key_files_moat_cannot_use_are_one_line_errors_naming_the_file() {
    let pki = Pki::new();
    let (server_key, encrypted, small_rsa, x448) = (
        pki.s("server.key"),
        pki.s("encrypted.key"),
        pki.s("rsa1024.key"),
        pki.s("x448.key"),
    );
    #[rustfmt::skip]
    openssl(&["pkey", "-in", &server_key, "-aes256", "-passout", "pass:secret", "-out", &encrypted]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &small_rsa,
    ]);
    openssl(&["genpkey", "-algorithm", "X448", "-out", &x448]);
    let cert = pki.s("server.pem");
    for (key, why) in [
        (&encrypted, "encrypted"),
        (&small_rsa, "unusable private key"),
        (&x448, "unusable private key"),
    ] {
        let argv = [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "127.0.0.1:9",
            "--cert",
            &cert,
            "--key",
            key,
            "--no-client-auth",
        ];
        start_fails(&argv, &["--key", key, why]);
    }
}

#[test]
fn a_target_off_this_host_needs_unsafe_target() {
    let pki = Pki::new();
    let mut argv = pki.server_args("192.0.2.1:6379");
    start_fails(
        &args(&argv),
        &["--target", "192.0.2.1:6379", "plaintext", "--unsafe-target"],
    );
    // Allowed when asked for; no tunnel is opened, so nothing is sent anywhere.
    argv.push("--unsafe-target".into());
    let moat = Moat::start(&args(&argv));
    moat.wait_for("forwarding to 192.0.2.1:6379");
}

/// Client mode without `--ca` trusts the system store (`rustls-native-certs`, which reads
/// `SSL_CERT_FILE` when it is set); an empty or unreadable store stops moat at start-up.
#[test]
fn client_mode_without_ca_uses_the_system_trust_store() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let moat = env!("CARGO_BIN_EXE_moat");
    let (cert, key) = (pki.s("client.pem"), pki.s("client.key"));
    let command = |trust: &str| {
        format!(
            "{trust} exec {moat} client --listen 127.0.0.1:0 --target {} --server-name localhost \
             --cert {cert} --key {key}",
            server.addr()
        )
    };
    let good = format!("SSL_CERT_FILE={} SSL_CERT_DIR=", pki.ca());
    let client = Moat::spawn(&["--sh", &command(&good)]);
    client.wait_for("listening on");
    let mut stream = connect(client.addr());
    stream.write_all(b"trusted\n").unwrap();
    let mut got = [0u8; 8];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"trusted\n");

    let missing = pki.s("no-such-bundle.pem");
    let empty = format!("SSL_CERT_FILE={missing} SSL_CERT_DIR={missing}");
    let mut refused = Moat::spawn(&["--sh", &command(&empty)]);
    assert_eq!(refused.wait_exit().code(), Some(2), "{}", refused.dump());
    let line = refused.wait_for("moat: ");
    assert!(
        line.contains("system trust store") && line.contains("--ca"),
        "{line}"
    );
}
