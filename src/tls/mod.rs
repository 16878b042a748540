//! TLS settings: PEM loading with precise errors, who gets in, and the rustls
//! configurations moat uses.
//!
//! Everything here is built once at start-up; the loop only ever sees the finished
//! `Arc<ServerConfig>` / `Arc<ClientConfig>`. Two pieces run inside rustls' handshake, on
//! the loop's thread: the certificate resolver ([`sni`]) and the verifiers ([`verifier`]),
//! which apply the allow-list ([`policy`]) to the fields [`identity`] reads, and remember
//! verified chains ([`cache`]). What they learn for the tunnel's log line comes back
//! through [`notes`].

pub mod cache;
mod client;
pub mod identity;
pub mod notes;
pub mod params;
mod pem;
pub mod policy;
mod server;
pub mod sni;
mod trust;
pub mod verifier;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys};

pub use client::{ClientSettings, ClientTls, SESSION_CACHE_NAMES};
pub use pem::{Pem, SUPPORTED_KEYS};
pub use policy::{Policy, Refusal};
pub use server::{ServerSettings, ServerTls, TICKETS_PER_HANDSHAKE};
pub use trust::Trust;

use crate::error::StartError;

/// The name to verify in the server's certificate: a DNS name or an IP address.
pub fn server_name(flag: &'static str, name: &str) -> Result<ServerName<'static>, StartError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| StartError::invalid(flag, name, "not a valid DNS name or IP address"))
}

/// A certificate chain with its signing key, checked to belong together.
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
        // rustls words a key it cannot load as an "unexpected error"; say what it is.
        Err(TlsError::General(why)) => {
            Err(key.bad(format!("unusable private key ({why}); {SUPPORTED_KEYS}")))
        }
        Err(e) => Err(key.bad(format!("unusable private key ({e}); {SUPPORTED_KEYS}"))),
    }
}

fn runtime(e: impl std::error::Error + Send + Sync + 'static) -> StartError {
    StartError::Runtime(std::io::Error::other(e))
}
