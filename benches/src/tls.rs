//! rustls configuration shared by the tokio baseline (server side) and the load generator
//! (client side), plus the generator's ticket pool for resumed handshakes.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
    WebPkiServerVerifier,
};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::Result;

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// The server configuration of the tokio baseline, left at rustls' defaults as a user would
/// write it: the aws-lc-rs provider with its default suites and groups, rustls' safe default
/// protocol versions, the client's suite order (`ignore_client_order` stays false), rustls'
/// default number of TLS 1.3 tickets per full handshake (`send_tls13_tickets`), an optional
/// client-certificate verifier. The one setting added is a stateless ticket issuer, as moat
/// has: without it rustls keeps sessions in a 256-entry server cache, which the resumption
/// scenarios' 32 parallel clients would overrun.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|e| format!("cannot use {} as client CA: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.ticketer =
        aws_lc_rs::Ticketer::new().map_err(|e| format!("cannot make a session ticketer: {e}"))?;
    Ok(config)
}

/// How the load generator's client resumes sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMode {
    /// Every handshake is a full one.
    Off,
    /// Tickets go into a deep [`TicketPool`], so nearly every handshake resumes.
    Pool,
}

/// Which ClientHello the load generator sends: TLS 1.3 only, and the cipher suites and
/// key-exchange groups of the profile, in its order. rustls sends a key share for the first
/// group only, plus the classical half of a hybrid group when that is offered on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientProfile {
    /// rustls' default suite order (AES-256-GCM, AES-128-GCM, ChaCha20) and X25519 alone, so
    /// every target negotiates the same key exchange.
    #[default]
    Default,
    /// OpenSSL 3's default TLS 1.3 suite order (AES-256-GCM, ChaCha20, AES-128-GCM), as
    /// OpenSSL-based clients such as curl, psql or redis-cli send it; X25519 first (with its
    /// key share), then P-256 and P-384 (the groups of OpenSSL's default list that the
    /// aws-lc-rs provider has).
    OpensslOrder,
    /// rustls' default suite order; the hybrid X25519MLKEM768 first, with its key share (and
    /// the X25519 share rustls adds for free), then X25519.
    Mlkem,
}

impl ClientProfile {
    /// Every profile, in the order `--help` lists them.
    pub const ALL: [ClientProfile; 3] = [
        ClientProfile::Default,
        ClientProfile::OpensslOrder,
        ClientProfile::Mlkem,
    ];

    /// The name `--profile` takes.
    pub fn name(self) -> &'static str {
        match self {
            ClientProfile::Default => "default",
            ClientProfile::OpensslOrder => "openssl-order",
            ClientProfile::Mlkem => "mlkem",
        }
    }

    /// The profile called `text`.
    pub fn parse(text: &str) -> Result<ClientProfile> {
        ClientProfile::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = ClientProfile::ALL.iter().map(|p| p.name()).collect();
                format!("unknown client profile `{text}` ({})", names.join(", "))
            })
    }

    /// The aws-lc-rs provider with this profile's suites and groups, in offer order.
    pub fn provider(self) -> CryptoProvider {
        use aws_lc_rs::{cipher_suite as suite, kx_group as group};
        let mut provider = aws_lc_rs::default_provider();
        match self {
            ClientProfile::Default => provider.kx_groups = vec![group::X25519],
            ClientProfile::OpensslOrder => {
                provider.cipher_suites = vec![
                    suite::TLS13_AES_256_GCM_SHA384,
                    suite::TLS13_CHACHA20_POLY1305_SHA256,
                    suite::TLS13_AES_128_GCM_SHA256,
                ];
                provider.kx_groups = vec![group::X25519, group::SECP256R1, group::SECP384R1];
            }
            ClientProfile::Mlkem => {
                provider.kx_groups = vec![group::X25519MLKEM768, group::X25519];
            }
        }
        provider
    }

    /// What the profile offers, in order, for the README of a results file.
    pub fn offer(self) -> String {
        let provider = self.provider();
        let suites: Vec<String> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .map(|s| short_suite(s.suite()))
            .collect();
        let groups: Vec<String> = provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        format!("suites {}; groups {}", suites.join(", "), groups.join(", "))
    }
}

/// A cipher suite's name without the `TLS13_` prefix, which every suite here shares.
pub fn short_suite(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    name.strip_prefix("TLS13_").unwrap_or(&name).to_string()
}

/// The load generator's client configuration: TLS 1.3 only, the suites and groups of
/// `profile`, trusting `ca`, optionally presenting a client certificate.
pub fn client_config(
    ca: &Path,
    client_auth: Option<(&Path, &Path)>,
    resume: ResumeMode,
    profile: ClientProfile,
) -> Result<ClientConfig> {
    let provider = Arc::new(profile.provider());
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
            .build()
            .map_err(|e| format!("cannot use {} as CA: {e}", ca.display()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnce::new(webpki)));
    let mut config = match client_auth {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                format!(
                    "{} and {} do not make a usable pair: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = match resume {
        ResumeMode::Off => Resumption::disabled(),
        ResumeMode::Pool => Resumption::store(Arc::new(TicketPool::new(TICKET_POOL_DEPTH))),
    };
    Ok(config)
}

/// A server-certificate verifier that checks the chain of a certificate once and then
/// accepts that same certificate (for the same name) without walking the chain again. The
/// handshake signature (CertificateVerify) is still checked on every handshake.
///
/// This only lightens the load generator: the chain check is a public-key operation that a
/// client pays on every full handshake, and on this 2-core machine the generator's own
/// public-key work is what keeps the target from saturating. The target's work is unchanged.
#[derive(Debug)]
struct ChainOnce {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Option<(CertificateDer<'static>, ServerName<'static>)>>,
}

impl ChainOnce {
    fn new(inner: Arc<WebPkiServerVerifier>) -> ChainOnce {
        ChainOnce {
            inner,
            verified: Mutex::new(None),
        }
    }
}

impl ServerCertVerifier for ChainOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cert, name)) = verified.as_ref() {
            if cert == end_entity && name == server_name {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        *verified = Some((end_entity.clone().into_owned(), server_name.to_owned()));
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How many TLS 1.3 tickets the pool keeps. Each handshake takes one and the server sends two,
/// so the pool fills quickly and stays full.
pub const TICKET_POOL_DEPTH: usize = 8192;

/// A client session store that keeps many TLS 1.3 tickets.
///
/// rustls' own `ClientSessionMemoryCache` keeps at most eight tickets per server name, which
/// many concurrent connections to one server drain at once; the benchmark wants nearly every
/// handshake to resume, so it keeps its own deep pool. The benchmark talks to one server name,
/// so the pool does not key by name.
pub struct TicketPool {
    inner: Mutex<PoolInner>,
    depth: usize,
}

struct PoolInner {
    tickets: VecDeque<Tls13ClientSessionValue>,
    kx_hint: Option<NamedGroup>,
}

impl TicketPool {
    pub fn new(depth: usize) -> TicketPool {
        TicketPool {
            inner: Mutex::new(PoolInner {
                tickets: VecDeque::with_capacity(depth),
                kx_hint: None,
            }),
            depth,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        // A panic while holding the lock cannot leave the pool inconsistent; carry on.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for TicketPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketPool")
            .field("tickets", &self.lock().tickets.len())
            .finish()
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.lock().kx_hint = Some(group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.lock().kx_hint
    }

    // The generator speaks TLS 1.3 only.
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut inner = self.lock();
        if inner.tickets.len() >= self.depth {
            inner.tickets.pop_front();
        }
        inner.tickets.push_back(value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // Newest first: it is the least likely to have expired.
        self.lock().tickets.pop_back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::{ClientConnection, HandshakeKind, ServerConnection};

    /// Fresh certificates in a directory of this test's own.
    fn certs(test: &str) -> crate::certs::CertFiles {
        let dir = std::env::temp_dir().join(format!("moat-bench-{test}-{}", std::process::id()));
        crate::certs::generate(&dir).unwrap()
    }

    fn client(certs: &crate::certs::CertFiles, profile: ClientProfile) -> ClientConfig {
        client_config(&certs.ca, None, ResumeMode::Off, profile).unwrap()
    }

    /// Runs a handshake between the two in memory and returns what the client negotiated
    /// and whether it took a HelloRetryRequest.
    fn negotiate(client: ClientConfig, server: ServerConfig) -> (String, String, HandshakeKind) {
        let name = ServerName::try_from(crate::certs::SERVER_NAME).unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            let mut flight = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut flight).unwrap();
            }
            let mut rest = &flight[..];
            while !rest.is_empty() {
                s.read_tls(&mut rest).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut flight = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut flight).unwrap();
            }
            let mut rest = &flight[..];
            while !rest.is_empty() {
                c.read_tls(&mut rest).unwrap();
                c.process_new_packets().unwrap();
            }
        }
        assert!(!c.is_handshaking(), "the handshake did not finish");
        (
            short_suite(c.negotiated_cipher_suite().unwrap().suite()),
            format!("{:?}", c.negotiated_key_exchange_group().unwrap().name()),
            c.handshake_kind().unwrap(),
        )
    }

    #[test]
    fn each_profile_negotiates_its_first_offer_with_a_server_at_defaults() {
        let certs = certs("profiles");
        let server = || server_config(&certs.server_cert, &certs.server_key, None).unwrap();
        let cases = [
            (ClientProfile::Default, "AES_256_GCM_SHA384", "X25519"),
            (ClientProfile::OpensslOrder, "AES_256_GCM_SHA384", "X25519"),
            (ClientProfile::Mlkem, "AES_256_GCM_SHA384", "X25519MLKEM768"),
        ];
        for (profile, want_suite, want_group) in cases {
            let (suite, group, kind) = negotiate(client(&certs, profile), server());
            assert_eq!((suite.as_str(), group.as_str()), (want_suite, want_group));
            // The hybrid's key share is in the first ClientHello: no second round trip.
            assert_eq!(kind, HandshakeKind::Full, "{}", profile.name());
        }
        let _ = std::fs::remove_dir_all(&certs.dir);
    }

    #[test]
    fn openssl_order_offers_chacha20_before_aes_128() {
        let certs = certs("openssl-order");
        let mut provider = aws_lc_rs::default_provider();
        provider.cipher_suites = vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let mut server = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                load_certs(&certs.server_cert).unwrap(),
                load_key(&certs.server_key).unwrap(),
            )
            .unwrap();
        let openssl = || client(&certs, ClientProfile::OpensslOrder);
        // In the client's order, ChaCha20 comes before AES-128 ...
        let (suite, _, _) = negotiate(openssl(), server.clone());
        assert_eq!(suite, "CHACHA20_POLY1305_SHA256");
        // ... and a server that keeps its own order still gets AES-128 from it.
        server.ignore_client_order = true;
        let (suite, _, _) = negotiate(openssl(), server);
        assert_eq!(suite, "AES_128_GCM_SHA256");
        let _ = std::fs::remove_dir_all(&certs.dir);
    }

    #[test]
    fn the_tokio_baseline_is_left_at_rustls_defaults() {
        let certs = certs("baseline");
        let ours = server_config(&certs.server_cert, &certs.server_key, None).unwrap();
        let defaults = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                load_certs(&certs.server_cert).unwrap(),
                load_key(&certs.server_key).unwrap(),
            )
            .unwrap();
        assert!(!ours.ignore_client_order);
        assert_eq!(ours.ignore_client_order, defaults.ignore_client_order);
        assert_eq!(ours.send_tls13_tickets, defaults.send_tls13_tickets);
        let suites = |c: &ServerConfig| -> Vec<_> {
            let provider = c.crypto_provider();
            provider.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        assert_eq!(suites(&ours), suites(&defaults));
        let groups = |c: &ServerConfig| -> Vec<_> {
            let provider = c.crypto_provider();
            provider.kx_groups.iter().map(|g| g.name()).collect()
        };
        assert_eq!(groups(&ours), groups(&defaults));
        assert!(groups(&ours).contains(&NamedGroup::X25519MLKEM768));
        // The one addition: stateless tickets, where rustls' default issues none.
        assert!(ours.ticketer.enabled() && !defaults.ticketer.enabled());
        let _ = std::fs::remove_dir_all(&certs.dir);
    }

    #[test]
    fn profile_names() {
        for profile in ClientProfile::ALL {
            assert_eq!(ClientProfile::parse(profile.name()), Ok(profile));
        }
        assert!(ClientProfile::parse("openssl").is_err());
        assert_eq!(
            ClientProfile::OpensslOrder.offer(),
            "suites AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256, AES_128_GCM_SHA256; \
             groups X25519, secp256r1, secp384r1"
        );
        assert_eq!(
            ClientProfile::Mlkem.offer(),
            "suites AES_256_GCM_SHA384, AES_128_GCM_SHA256, CHACHA20_POLY1305_SHA256; \
             groups X25519MLKEM768, X25519"
        );
    }
}
