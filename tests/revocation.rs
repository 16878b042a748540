//! Revocation and the verified-chain cache: `--crl` (PEM or DER) refuses a revoked
//! certificate in both modes; a stale CRL is a warning; the cache serves a chain seen before,
//! starts empty for a new configuration, and never serves an expired certificate.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use common::pki::Spec;
use common::tls_client::{client_config, tls_echo};
use common::{args, connect, Backend, Moat, Pki};
use moat::config::TlsParams;
use moat::tls::{Pem, Policy, ServerSettings};

/// Two clients of the test CA with known serial numbers: 101 (kept) and 102 (revoked).
fn two_clients(pki: &Pki) {
    for (name, serial) in [("kept", 101), ("revoked", 102)] {
        pki.issue(
            name,
            &Spec {
                serial: Some(serial),
                ..Spec::client(name)
            },
        );
    }
}

fn server_with_crl(pki: &Pki, backend: &Backend, crl: &str) -> Moat {
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--crl".into(), crl.into()]);
    Moat::start(&args(&argv))
}

fn revoked_is_refused_kept_gets_in(pki: &Pki, crl: &str) {
    let backend = Backend::echo();
    let moat = server_with_crl(pki, &backend, crl);
    let err = tls_echo(moat.addr(), client_config(pki, Some("revoked")), b"x");
    let err = err.expect_err("a revoked certificate got in").to_string();
    assert!(err.contains("CertificateRevoked"), "the client heard {err}");
    let line = moat.wait_for("tunnel closed");
    assert!(
        line.contains("tls error with client: invalid peer certificate: Revoked"),
        "{line}"
    );
    let got = tls_echo(moat.addr(), client_config(pki, Some("kept")), b"still here");
    assert_eq!(got.expect("the other client gets in"), b"still here");
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn a_pem_crl_revokes_one_client_of_two() {
    let pki = Pki::new();
    two_clients(&pki);
    let crl = pki.crl("ca.crl.pem", &[102], 86_400);
    revoked_is_refused_kept_gets_in(&pki, &crl);
}

#[test]
fn a_der_crl_works_the_same() {
    let pki = Pki::new();
    two_clients(&pki);
    let pem = pki.crl("ca.crl.pem", &[102], 86_400);
    let der = CertificateRevocationListDer::from_pem_file(&pem).expect("read CRL");
    std::fs::write(pki.path("ca.crl"), der.as_ref()).unwrap();
    revoked_is_refused_kept_gets_in(&pki, &pki.s("ca.crl"));
}

#[test]
fn a_crl_past_its_next_update_is_a_start_up_warning() {
    let pki = Pki::new();
    two_clients(&pki);
    let crl = pki.crl("stale.crl.pem", &[102], -3600);
    let backend = Backend::echo();
    let moat = server_with_crl(&pki, &backend, &crl);
    let line = moat.wait_for("past its nextUpdate");
    assert!(
        line.contains("WARN") && line.contains("stale.crl.pem"),
        "{line}"
    );
    // Still used: what it revokes stays revoked.
    assert!(tls_echo(moat.addr(), client_config(&pki, Some("revoked")), b"x").is_err());
}

#[test]
fn client_mode_refuses_a_revoked_server_certificate() {
    let pki = Pki::new();
    pki.issue(
        "revoked-server",
        &Spec {
            serial: Some(201),
            ..Spec::server(&["db.example"])
        },
    );
    let crl = pki.crl("ca.crl.pem", &[201], 86_400);
    let backend = Backend::echo();
    let mut argv = pki.server_args(&backend.target());
    for (flag, file) in [
        ("--cert", "revoked-server.pem"),
        ("--key", "revoked-server.key"),
    ] {
        let at = argv.iter().position(|a| a == flag).unwrap();
        argv[at + 1] = pki.s(file);
    }
    let server = Moat::start(&args(&argv));
    let mut argv = pki.client_args(&server.addr().to_string());
    argv.extend(["--crl".into(), crl]);
    let client = Moat::start(&args(&argv));
    let mut stream = connect(client.addr());
    stream.write_all(b"anyone?\n").unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(got.is_empty(), "a revoked server was let through");
    let line = client.wait_for("tunnel closed");
    assert!(
        line.contains("tls error with target: invalid peer certificate: Revoked"),
        "{line}"
    );
    assert_eq!(backend.accepted(), 0);
}

/// With the same certificate twice, the second full handshake takes the chain from the
/// cache (moat logs it at debug level).
#[test]
fn a_chain_seen_before_is_taken_from_the_cache() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--log-level".into(), "debug".into()]);
    let moat = Moat::start(&args(&argv));
    // Separate configurations, so the second handshake is a full one, not a resumption.
    for n in 1..=2 {
        let got = tls_echo(moat.addr(), client_config(&pki, Some("client")), b"again");
        assert_eq!(got.expect("tunnel"), b"again");
        moat.wait_for_count("tunnel closed", n);
    }
    let hits = moat.lines_with("taken from the cache");
    assert_eq!(hits.len(), 1, "{}", moat.dump());
    assert!(moat.lines_with("resumed=yes").is_empty(), "{}", moat.dump());
}

fn settings(pki: &Pki, crls: &[&str]) -> ServerSettings {
    ServerSettings {
        identities: vec![(
            Pem::read("--cert", &pki.path("server.pem")).unwrap(),
            Pem::read("--key", &pki.path("server.key")).unwrap(),
        )],
        client_ca: Some(Pem::read("--client-ca", &pki.path("ca.pem")).unwrap()),
        crls: crls
            .iter()
            .map(|c| Pem::read("--crl", c.as_ref()).unwrap())
            .collect(),
        policy: Policy::default(),
        alpn: Vec::new(),
        params: TlsParams::default(),
    }
}

fn chain(pki: &Pki, name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

#[test]
fn a_new_configuration_starts_with_an_empty_cache() {
    let pki = Pki::new();
    two_clients(&pki);
    let cert = chain(&pki, "revoked");
    let now = UnixTime::now();
    let before = settings(&pki, &[]).build().unwrap().verifier.unwrap();
    for _ in 0..2 {
        before
            .verify_client_cert(&cert[0], &cert[1..], now)
            .unwrap();
    }
    assert_eq!(
        (before.cache_stats().misses, before.cache_stats().hits),
        (1, 1)
    );

    // The CRL arrives with a new configuration: its verifier knows nothing of the old one.
    let crl = pki.crl("ca.crl.pem", &[102], 86_400);
    let after = settings(&pki, &[&crl]).build().unwrap().verifier.unwrap();
    let err = after.verify_client_cert(&cert[0], &cert[1..], now);
    assert!(err.is_err(), "a revoked chain came from a stale cache");
    assert_eq!(
        (after.cache_stats().misses, after.cache_stats().hits),
        (1, 0)
    );
}

#[test]
fn an_expired_certificate_is_never_served_from_the_cache() {
    let pki = Pki::new();
    let cert = chain(&pki, "client");
    let not_after = moat::tls::identity::validity(&cert[0]).unwrap().not_after;
    let at = |secs: u64| UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let verifier = settings(&pki, &[]).build().unwrap().verifier.unwrap();
    // Verified a minute before it expires, and cached ...
    let first = verifier.verify_client_cert(&cert[0], &cert[1..], at(not_after - 60));
    first.expect("still valid");
    let again = verifier.verify_client_cert(&cert[0], &cert[1..], at(not_after - 30));
    again.expect("still valid, from the cache");
    assert_eq!(verifier.cache_stats().hits, 1);
    // ... but a second after it expired the cache does not vouch for it, although the
    // entry is far younger than the cache's lifetime.
    let err = verifier.verify_client_cert(&cert[0], &cert[1..], at(not_after + 1));
    let err = err.expect_err("an expired certificate was accepted");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(verifier.cache_stats().hits, 1);
}
