//! The TLS session itself: TLS 1.2 as well as 1.3, key updates in the middle of a tunnel,
//! records of every size in both directions.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::tls_client::{client_config, tls_connect, tls_transfer};
use common::{args, random_bytes, Backend, Moat, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A client that offers only TLS 1.2, with the client certificate.
fn tls12_config(pki: &Pki) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let id = pki.identity("client");
    let chain = CertificateDer::pem_file_iter(&id.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&id.key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

#[test]
fn tls12_clients_relay_megabytes_both_ways() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let data = random_bytes(2 << 20, 12);
    let got = tls_transfer(moat.addr(), tls12_config(&pki), &data).expect("transfer");
    assert!(got == data, "{} bytes back of {}", got.len(), data.len());
    moat.wait_for("end=clean");
}

#[test]
fn key_updates_from_the_client_are_answered_and_the_tunnel_goes_on() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut tls = tls_connect(moat.addr(), client_config(&pki, Some("client")));
    for round in 0..5u8 {
        // Sizes around record boundaries, so moat's buffers wrap in every way.
        for len in [1, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 40_000] {
            let message = random_bytes(len, u64::from(round) * 100 + len as u64);
            tls.write_all(&message).unwrap();
            let mut got = vec![0; len];
            tls.read_exact(&mut got).unwrap();
            assert!(got == message, "round {round}, {len} bytes");
        }
        // The client asks for new keys both ways; moat must answer with its own key update.
        tls.conn.refresh_traffic_keys().unwrap();
    }
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty());
    moat.wait_for("end=clean");
}
