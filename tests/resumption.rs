//! Resumption both ways: server mode issues TLS 1.3 tickets (`openssl s_client -sess_out`,
//! then `-sess_in` is `Reused`), client mode resumes to its target; a resumed session is
//! checked again against the rules, and tickets never outlive the configuration that issued
//! them.

mod common;

use std::io::{Read, Write};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

use common::{args, connect, Backend, Moat, Pki, Tool};
use moat::config::{PolicyConfig, TlsParams};
use moat::tls::{notes, Pem, Policy, ServerSettings};

/// `openssl s_client` with the test client certificate, sending one line and waiting for
/// its echo; returns everything it printed.
fn s_client_line(pki: &Pki, moat: &Moat, version: &str, session: (&str, &str)) -> String {
    let (addr, ca) = (moat.addr().to_string(), pki.ca());
    let (cert, key) = (pki.s("client.pem"), pki.s("client.key"));
    #[rustfmt::skip]
    let a = [
        "s_client", "-connect", &addr, "-CAfile", &ca, "-cert", &cert, "-key", &key,
        session.0, session.1, version,
    ];
    let mut tool = Tool::spawn("openssl", &a, None);
    let mut stdin = tool.take_stdin();
    stdin.write_all(b"ping\n").unwrap();
    // The ticket comes right behind the handshake, ahead of the echo: once the echo is
    // in, the session file is written.
    let out = tool.read_stdout_until(|got| got.ends_with(b"ping\n"));
    drop(stdin);
    tool.kill();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn openssl_resumes_a_tls13_session_from_a_moat_ticket() {
    openssl_resumes("-tls1_3", "TLSv1.3");
}

#[test]
fn openssl_resumes_a_tls12_session_too() {
    openssl_resumes("-tls1_2", "TLSv1.2");
}

fn openssl_resumes(flag: &str, version: &str) {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let session = pki.s("session.pem");
    let first = s_client_line(&pki, &moat, flag, ("-sess_out", &session));
    assert!(first.contains(&format!("New, {version}")), "{first}");
    let second = s_client_line(&pki, &moat, flag, ("-sess_in", &session));
    assert!(second.contains(&format!("Reused, {version}")), "{second}");
    let lines = moat.wait_for_count("tunnel closed", 2);
    assert!(lines[0].contains("resumed=no"), "{}", lines[0]);
    assert!(
        lines[1].contains("resumed=yes")
            && lines[1].contains("subject=\"O=moat tests,CN=test-client\"")
            && lines[1].contains("to_client=5B"),
        "the resumed tunnel is not shown with the identity it carries: {}",
        lines[1]
    );
}

#[test]
fn client_mode_resumes_its_sessions_with_the_target() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    for n in 1..=2 {
        let mut stream = connect(client.addr());
        stream.write_all(b"again\n").unwrap();
        let mut got = [0u8; 6];
        stream.read_exact(&mut got).unwrap();
        drop(stream);
        client.wait_for_count("tunnel closed", n);
        server.wait_for_count("tunnel closed", n);
    }
    for moat in [&client, &server] {
        let lines = moat.wait_for_count("tunnel closed", 2);
        assert!(lines[0].contains("resumed=no"), "{}", lines[0]);
        assert!(lines[1].contains("resumed=yes"), "{}", lines[1]);
    }
}

fn settings(pki: &Pki, policy: &PolicyConfig) -> ServerSettings {
    ServerSettings {
        identities: vec![(
            Pem::read("--cert", &pki.path("server.pem")).unwrap(),
            Pem::read("--key", &pki.path("server.key")).unwrap(),
        )],
        client_ca: Some(Pem::read("--client-ca", &pki.path("ca.pem")).unwrap()),
        crls: Vec::new(),
        policy: Policy::parse(policy).unwrap(),
        alpn: Vec::new(),
        params: TlsParams::default(),
    }
}

#[test]
fn a_new_configuration_has_a_new_ticket_key() {
    let pki = Pki::new();
    let before = settings(&pki, &PolicyConfig::default()).build().unwrap();
    let after = settings(&pki, &PolicyConfig::default()).build().unwrap();
    let ticket = before.config.ticketer.encrypt(b"session state").unwrap();
    assert_eq!(
        before.config.ticketer.decrypt(&ticket).as_deref(),
        Some(&b"session state"[..])
    );
    assert_eq!(
        after.config.ticketer.decrypt(&ticket),
        None,
        "a ticket survived a new config"
    );
    assert_eq!(
        before.config.send_tls13_tickets,
        moat::tls::TICKETS_PER_HANDSHAKE
    );
}

#[test]
fn a_resumed_identity_is_checked_against_the_current_rules() {
    let pki = Pki::new();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("client.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let now = UnixTime::now();
    let open = settings(&pki, &PolicyConfig::default()).build().unwrap();
    open.verifier
        .unwrap()
        .recheck(&chain, now)
        .expect("no rules: the chain passes");

    let strict = PolicyConfig {
        allow_cn: vec!["someone-else".into()],
        ..PolicyConfig::default()
    };
    let verifier = settings(&pki, &strict).build().unwrap().verifier.unwrap();
    let (checked, noted) = notes::during(|| verifier.recheck(&chain, now));
    assert!(
        checked.is_err(),
        "a carried identity the rules refuse was let in"
    );
    let refusal = noted
        .refusal
        .expect("the refusal is noted for the log")
        .to_string();
    assert!(refusal.contains("CN=\"test-client\""), "{refusal}");
    assert!(
        verifier.recheck(&[], now).is_err(),
        "a session without a certificate passed"
    );
}
