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
use rustls::crypto::aws_lc_rs;
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

/// The server configuration of the tokio baseline, built the way moat builds its own:
/// aws-lc-rs provider with its defaults, safe default protocol versions, an optional
/// client-certificate verifier, and a stateless session-ticket issuer.
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

/// The load generator's client configuration: TLS 1.3 only, X25519 only (so every target
/// negotiates the same key exchange), trusting `ca`, optionally presenting a client certificate.
pub fn client_config(
    ca: &Path,
    client_auth: Option<(&Path, &Path)>,
    resume: ResumeMode,
) -> Result<ClientConfig> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
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
