//! Client mode's TLS: trust (a CA file or the system's store), the server-certificate
//! verifier, the client certificate, ALPN and resumption, built once into a `ClientConfig`.

use std::sync::Arc;

use rustls::client::{ClientConfig, Resumption, WebPkiServerVerifier};
use rustls::sign::SingleCertAndKey;

use super::params::negotiation;
use super::server::read_all;
use super::trust::{revocation_lists, Trust};
use super::verifier::ServerVerifier;
use super::{certified_key, Pem, Policy};
use crate::config::{ClientMode, TlsParams};
use crate::error::StartError;

/// Server names whose sessions the client keeps for resumption. A route talks to one name;
/// rustls keeps up to 8 TLS 1.3 tickets and one TLS 1.2 session per name, so the cache is
/// bounded at a few kilobytes.
pub const SESSION_CACHE_NAMES: usize = 16;

/// What client mode needs to open TLS, read from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// What the server's chain must lead to.
    pub trust: Trust,
    /// The client certificate and key to present, if any.
    pub identity: Option<(Pem, Pem)>,
    /// CRLs for the server's chain.
    pub crls: Vec<Pem>,
    /// The allow-list for the server's certificate.
    pub policy: Policy,
    /// ALPN protocols sent, most preferred first.
    pub alpn: Vec<String>,
    /// Versions, suites, groups.
    pub params: TlsParams,
}

/// A finished client configuration, and the verifier inside it.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// What each connection to the target is made from; it holds the session cache.
    pub config: Arc<ClientConfig>,
    /// moat's server-certificate verifier, to read its cache's figures.
    pub verifier: Arc<ServerVerifier>,
}

impl ClientSettings {
    /// Reads the files `client` names.
    pub fn read(client: &ClientMode) -> Result<Self, StartError> {
        let identity = match &client.identity {
            Some(id) => Some((Pem::read("--cert", &id.cert)?, Pem::read("--key", &id.key)?)),
            None => None,
        };
        Ok(Self {
            trust: match &client.ca {
                Some(ca) => Trust::Ca(Pem::read("--ca", ca)?),
                None => Trust::System,
            },
            identity,
            crls: read_all("--crl", &client.crls)?,
            policy: Policy::parse(&client.policy)?,
            alpn: client.alpn.clone(),
            params: client.tls.clone(),
        })
    }

    /// Builds the configuration, with a session cache of its own: sessions never resume
    /// across a change of CAs, CRLs or rules.
    pub fn build(&self) -> Result<ClientTls, StartError> {
        let negotiation = negotiation(&self.params)?;
        let provider = negotiation.provider;
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(self.trust.roots()?),
            provider.clone(),
        )
        .with_crls(revocation_lists(&self.crls)?)
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| StartError::Usage(format!("cannot verify servers: {e}")))?;
        let verifier = Arc::new(ServerVerifier::new(webpki, self.policy.clone()));
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&negotiation.versions)
            .map_err(|e| StartError::Usage(format!("cannot use these TLS parameters: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let identity = certified_key(cert, key, &provider)?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.resumption = Resumption::in_memory_sessions(SESSION_CACHE_NAMES);
        Ok(ClientTls {
            config: Arc::new(config),
            verifier,
        })
    }
}
