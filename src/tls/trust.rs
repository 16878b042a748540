//! What a peer's chain is checked against: trust anchors (a CA file or the system's store)
//! and certificate revocation lists.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateRevocationListDer;
use rustls::RootCertStore;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::Pem;
use crate::error::StartError;

/// Where client mode finds the CAs the server's chain must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The CAs in this file (`--ca`).
    Ca(Pem),
    /// The operating system's trust store (no `--ca`).
    System,
}

impl Trust {
    /// The trust anchors. An empty or unreadable system store is an error: saying nothing
    /// about trust must never mean "no checks".
    pub fn roots(&self) -> Result<RootCertStore, StartError> {
        match self {
            Self::Ca(pem) => root_store(pem),
            Self::System => system_roots(),
        }
    }
}

/// The CA certificates in `ca`.
pub(super) fn root_store(ca: &Pem) -> Result<RootCertStore, StartError> {
    let mut roots = RootCertStore::empty();
    for cert in ca.certificates()? {
        roots
            .add(cert)
            .map_err(|e| ca.bad(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The system's trust store, as `rustls-native-certs` finds it (it honours `SSL_CERT_FILE`
/// and `SSL_CERT_DIR`).
fn system_roots() -> Result<RootCertStore, StartError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!("the system trust store cannot be read ({e})"),
            None => "the system trust store holds no usable CA certificate".into(),
        };
        return Err(StartError::Usage(format!(
            "{why}: give --ca FILE with the CA the server's certificate must chain to"
        )));
    }
    for e in &found.errors {
        log::warn!("system trust store: {e}");
    }
    log::debug!("trusting {added} CA certificates from the system trust store");
    Ok(roots)
}

/// The CRLs in `files`, each checked to parse. A CRL past its nextUpdate is used all the
/// same (a revocation it lists is still true) but warned about: newer revocations may be
/// missing from it.
pub(super) fn revocation_lists(
    files: &[Pem],
) -> Result<Vec<CertificateRevocationListDer<'static>>, StartError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut all = Vec::new();
    for file in files {
        for crl in file.crls()? {
            let (_, parsed) = CertificateRevocationList::from_der(&crl)
                .map_err(|e| file.bad(format!("not a valid CRL: {e}")))?;
            let next_update = parsed.next_update().map(|t| t.timestamp());
            if let Some(next) = next_update.and_then(|t| u64::try_from(t).ok()) {
                if next < now {
                    log::warn!(
                        "--crl {}: CRL of {} is past its nextUpdate ({}s ago); revocations \
                         since then are not in it",
                        file.path().display(),
                        super::identity::printable(&parsed.issuer().to_string()),
                        now - next
                    );
                }
            }
            all.push(crl);
        }
    }
    Ok(all)
}
