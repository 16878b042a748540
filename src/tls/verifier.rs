//! moat's own certificate verifiers: rustls' WebPKI verifiers (chain, names, CRLs) with the
//! allow-list and the verified-chain cache around them.
//!
//! A refusal is an error returned from inside rustls' handshake, so rustls sends the alert:
//! `access_denied` for a certificate the allow-list turns away (the reason goes to the
//! tunnel's log line through [`super::notes`]), and whatever WebPKI's error maps to
//! otherwise (`certificate_revoked` for a revoked one, `unknown_ca`, ...).
//! The handshake signature, which proves the peer holds the certificate's key, is checked
//! by WebPKI on every handshake, cached chain or not.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::cache::{CacheStats, ChainCache};
use super::identity::{validity, PeerIdentity, Validity};
use super::notes;
use super::policy::Policy;

/// What both verifiers add to WebPKI: the allow-list and the cache.
#[derive(Debug)]
struct Checks {
    policy: Policy,
    cache: ChainCache,
}

impl Checks {
    /// Verifies a chain in `context` (what else the chain was checked against, such as a
    /// server name): from the cache, or by `webpki` and then the allow-list.
    fn verify(
        &self,
        context: &[u8],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        webpki: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let key = ChainCache::key(context, end_entity, intermediates);
        if self.cache.contains(&key, now) {
            log::debug!("certificate chain verified before: taken from the cache");
            return Ok(());
        }
        webpki()?;
        let identity = PeerIdentity::from_der(end_entity);
        if !self.policy.is_empty() {
            let verdict = match &identity {
                Some(identity) => self.policy.check(identity),
                None => Err(self.policy.unreadable()),
            };
            if let Err(refusal) = verdict {
                notes::refused(refusal);
                return Err(CertificateError::ApplicationVerificationFailure.into());
            }
        }
        // Cached only while every certificate sent is valid; one that cannot be read
        // leaves the chain uncached.
        let windows: Option<Vec<Validity>> = std::iter::once(identity.map(|id| id.validity))
            .chain(intermediates.iter().map(|c| validity(c)))
            .collect();
        if let Some(window) = windows.and_then(Validity::intersection) {
            self.cache.insert(key, window, now);
        }
        Ok(())
    }
}

/// Server mode: verifies client certificates.
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    checks: Checks,
}

impl ClientVerifier {
    /// Wraps `webpki` (which holds the CAs and CRLs) with `policy` and an empty cache.
    pub fn new(webpki: Arc<dyn ClientCertVerifier>, policy: Policy) -> Self {
        Self::with_cache(webpki, policy, ChainCache::default())
    }

    /// [`ClientVerifier::new`] with a cache of one's choosing (for tests).
    pub fn with_cache(
        webpki: Arc<dyn ClientCertVerifier>,
        policy: Policy,
        cache: ChainCache,
    ) -> Self {
        Self {
            webpki,
            checks: Checks { policy, cache },
        }
    }

    /// Checks a resumed session's certificate chain again, as a full handshake would, at
    /// `now`. rustls does not call the verifier when a session resumes; the tunnel does,
    /// so a session can never carry in an identity the current rules turn away.
    pub fn recheck(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), Error> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return if self.webpki.client_auth_mandatory() {
                Err(Error::NoCertificatesPresented)
            } else {
                Ok(())
            };
        };
        self.verify_client_cert(end_entity, intermediates, now)
            .map(|_| ())
    }

    /// Hits and misses of the verified-chain cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.checks.cache.stats()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.checks
            .verify(b"client", end_entity, intermediates, now, || {
                self.webpki
                    .verify_client_cert(end_entity, intermediates, now)
                    .map(|_| ())
            })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Client mode: verifies the target's certificate.
#[derive(Debug)]
pub struct ServerVerifier {
    webpki: Arc<dyn ServerCertVerifier>,
    checks: Checks,
}

impl ServerVerifier {
    /// Wraps `webpki` (which holds the CAs and CRLs and checks the name) with `policy` and
    /// an empty cache.
    pub fn new(webpki: Arc<dyn ServerCertVerifier>, policy: Policy) -> Self {
        Self {
            webpki,
            checks: Checks {
                policy,
                cache: ChainCache::default(),
            },
        }
    }

    /// Hits and misses of the verified-chain cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.checks.cache.stats()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = server_name.to_str();
        self.checks
            .verify(name.as_bytes(), end_entity, intermediates, now, || {
                self.webpki
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map(|_| ())
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}
