//! TLS settings: PEM loading with precise errors, and the rustls configurations moat uses.
//!
//! Everything here runs once at start-up; the loop only ever sees the finished
//! `Arc<ServerConfig>` / `Arc<ClientConfig>`.

mod pem;
pub mod subject;

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{Error as TlsError, InconsistentKeys, RootCertStore};

pub use pem::Pem;

use crate::error::StartError;

/// The one provider moat uses: aws-lc-rs, with its default cipher suites and groups.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server-mode TLS: present `cert`/`key`; with `client_ca`, require a client certificate
/// that chains to it.
pub fn server_config(
    cert: &Pem,
    key: &Pem,
    client_ca: Option<&Pem>,
) -> Result<Arc<ServerConfig>, StartError> {
    let provider = provider();
    let identity = certified_key(cert, key, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Runtime(std::io::Error::other(e)))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(root_store(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| ca.bad(format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    // Stateless tickets make resumption cost no server memory per session.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| StartError::Runtime(std::io::Error::other(e)))?;
    // One ticket per full handshake (rustls sends two by default): a client resumes one
    // connection with one ticket, and each ticket costs an encryption and a record — with
    // mutual TLS a large one, since it carries the client's certificate chain.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Client-mode TLS: trust the CAs in `ca`; present `identity` (certificate, key) if given.
pub fn client_config(
    ca: &Pem,
    identity: Option<(&Pem, &Pem)>,
) -> Result<Arc<ClientConfig>, StartError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Runtime(std::io::Error::other(e)))?
        .with_root_certificates(root_store(ca)?);
    let config = match identity {
        Some((cert, key)) => {
            let identity = certified_key(cert, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name to verify in the server's certificate: a DNS name or an IP address.
pub fn server_name(flag: &'static str, name: &str) -> Result<ServerName<'static>, StartError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| StartError::invalid(flag, name, "not a valid DNS name or IP address"))
}

fn certified_key(
    cert: &Pem,
    key: &Pem,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, StartError> {
    let chain = cert.certificates()?;
    let der = key.private_key()?;
    match CertifiedKey::from_der(chain, der, provider) {
        Ok(identity) => Ok(identity),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(StartError::KeyMismatch {
                cert: cert.path().into(),
                key: key.path().into(),
            })
        }
        Err(e) => Err(key.bad(format!("unusable private key: {e}"))),
    }
}

fn root_store(ca: &Pem) -> Result<RootCertStore, StartError> {
    let mut roots = RootCertStore::empty();
    for cert in ca.certificates()? {
        roots
            .add(cert)
            .map_err(|e| ca.bad(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}
