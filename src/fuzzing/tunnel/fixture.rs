//! The TLS configurations of the tunnel harness, built once per process.
//!
//! moat's ends get configurations from moat's own builders, with mutual TLS and an
//! allow-list, exactly as `moat server` and `moat client` build them. The peers are plain
//! rustls. All use the development certificates from `certs/` (valid until 2126, as the
//! demo that embeds them needs), so nothing is generated per input. Session resumption is
//! off on the clients: a session cached by one input must not change how the next one runs.

use std::fmt::Display;
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::{PolicyConfig, TlsParams};
use crate::tls::{ClientSettings, Pem, Policy, ServerSettings, Trust};

const CA: &str = include_str!("../../../certs/ca.pem");
const SERVER_CERT: &str = include_str!("../../../certs/server.pem");
const SERVER_KEY: &str = include_str!("../../../certs/server.key");
const CLIENT_CERT: &str = include_str!("../../../certs/client.pem");
const CLIENT_KEY: &str = include_str!("../../../certs/client.key");

/// Which protocol versions a peer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    Both,
    Tls12,
    Tls13,
}

/// Every configuration the harness uses.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// moat in server mode: [allow-list that admits the client, one that refuses it].
    pub(crate) moat_server: [Arc<ServerConfig>; 2],
    /// moat in client mode: [allow-list that admits the server, one that refuses it].
    pub(crate) moat_client: [Arc<ClientConfig>; 2],
    /// The rustls client peer, by [`Versions`].
    pub(crate) peer_client: [Arc<ClientConfig>; 3],
    /// The rustls server peer, by [`Versions`].
    pub(crate) peer_server: [Arc<ServerConfig>; 3],
}

impl Versions {
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn list(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            Self::Both => rustls::DEFAULT_VERSIONS,
            Self::Tls12 => &TLS12,
            Self::Tls13 => &TLS13,
        }
    }
}

/// The configurations, built on first use.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

/// The harness cannot run without its fixture: a failure here is a broken build.
fn fixed<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("tunnel fixture: {what}: {e}"))
}

fn build() -> Fixture {
    let allow = |flag_cn: &str| PolicyConfig {
        allow_cn: vec![flag_cn.to_owned()],
        ..PolicyConfig::default()
    };
    let policy = |config: PolicyConfig| fixed(Policy::parse(&config), "policy");
    let moat_server = |policy: Policy| {
        let settings = ServerSettings {
            identities: vec![(
                Pem::embedded("--cert", "certs/server.pem", SERVER_CERT),
                Pem::embedded("--key", "certs/server.key", SERVER_KEY),
            )],
            client_ca: Some(Pem::embedded("--client-ca", "certs/ca.pem", CA)),
            crls: Vec::new(),
            policy,
            alpn: Vec::new(),
            params: TlsParams::default(),
        };
        fixed(settings.build(), "moat server").config
    };
    let moat_client = |policy: Policy| {
        let settings = ClientSettings {
            trust: Trust::Ca(Pem::embedded("--ca", "certs/ca.pem", CA)),
            identity: Some((
                Pem::embedded("--cert", "certs/client.pem", CLIENT_CERT),
                Pem::embedded("--key", "certs/client.key", CLIENT_KEY),
            )),
            crls: Vec::new(),
            policy,
            alpn: Vec::new(),
            params: TlsParams::default(),
        };
        let mut config = (*fixed(settings.build(), "moat client").config).clone();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    };
    let versions = [Versions::Both, Versions::Tls12, Versions::Tls13];
    Fixture {
        moat_server: [
            moat_server(policy(allow("moat-demo-*"))),
            moat_server(policy(allow("nobody"))),
        ],
        moat_client: [
            moat_client(policy(allow("localhost"))),
            moat_client(policy(allow("nobody"))),
        ],
        peer_client: versions.map(peer_client),
        peer_server: versions.map(peer_server),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(CA.as_bytes()) {
        fixed(roots.add(fixed(cert, "CA")), "CA");
    }
    roots
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    fixed(chain, "certificate")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    fixed(PrivateKeyDer::from_pem_slice(pem.as_bytes()), "key")
}

fn peer_client(versions: Versions) -> Arc<ClientConfig> {
    let builder = fixed(
        ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions.list()),
        "client versions",
    );
    let mut config = fixed(
        builder
            .with_root_certificates(roots())
            .with_client_auth_cert(chain(CLIENT_CERT), key(CLIENT_KEY)),
        "client identity",
    );
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

fn peer_server(versions: Versions) -> Arc<ServerConfig> {
    let verifier = fixed(
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots()), provider()).build(),
        "client verifier",
    );
    let builder = fixed(
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions.list()),
        "server versions",
    );
    let config = fixed(
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(SERVER_CERT), key(SERVER_KEY)),
        "server identity",
    );
    Arc::new(config)
}
