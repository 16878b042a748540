//! Server mode's TLS: the certificates by name, the client-certificate verifier, ALPN,
//! suite order and session tickets, built once into a `ServerConfig`.

use std::sync::Arc;

use rustls::server::{ServerConfig, WebPkiClientVerifier};

use super::params::negotiation;
use super::sni::SniResolver;
use super::trust::{revocation_lists, root_store};
use super::verifier::ClientVerifier;
use super::{certified_key, runtime, Pem, Policy};
use crate::config::{ClientAuth, ServerMode, TlsParams};
use crate::error::StartError;

/// TLS 1.3 session tickets sent after each full handshake. rustls sends two by default;
/// moat's clients (and most others) use one ticket per connection, and each ticket costs an
/// encryption and a record, so one is enough for a client that reconnects one connection at
/// a time (a resumed handshake brings the next ticket).
pub const TICKETS_PER_HANDSHAKE: usize = 1;

/// What server mode needs to accept TLS, read from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// (certificate chain, key) pairs; the first is the default for SNI.
    pub identities: Vec<(Pem, Pem)>,
    /// CA bundle client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<Pem>,
    /// CRLs for client certificates.
    pub crls: Vec<Pem>,
    /// The allow-list for client certificates.
    pub policy: Policy,
    /// ALPN protocols offered, most preferred first.
    pub alpn: Vec<String>,
    /// Versions, suites, groups.
    pub params: TlsParams,
}

/// A finished server configuration, and the verifier inside it (kept to check resumed
/// sessions again and to read its cache's figures).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What each accepted connection's rustls session is made from.
    pub config: Arc<ServerConfig>,
    /// moat's client-certificate verifier, when client certificates are required.
    pub verifier: Option<Arc<ClientVerifier>>,
}

impl ServerSettings {
    /// Reads the files `server` names.
    pub fn read(server: &ServerMode) -> Result<Self, StartError> {
        let identities = server
            .identities
            .iter()
            .map(|id| Ok((Pem::read("--cert", &id.cert)?, Pem::read("--key", &id.key)?)))
            .collect::<Result<_, StartError>>()?;
        let client_ca = match &server.client_auth {
            ClientAuth::Required { ca } => Some(Pem::read("--client-ca", ca)?),
            ClientAuth::Disabled => None,
        };
        Ok(Self {
            identities,
            client_ca,
            crls: read_all("--crl", &server.crls)?,
            policy: Policy::parse(&server.policy)?,
            alpn: server.alpn.clone(),
            params: server.tls.clone(),
        })
    }

    /// Builds the configuration. Each call makes a new ticket key, so tickets never outlive
    /// the configuration they were issued under: a new configuration (new CAs, CRLs or
    /// rules) means a new ticket key, and no session resumes across the change.
    pub fn build(&self) -> Result<ServerTls, StartError> {
        let negotiation = negotiation(&self.params)?;
        let provider = negotiation.provider;
        let identities = self
            .identities
            .iter()
            .map(|(cert, key)| certified_key(cert, key, &provider).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let resolver = SniResolver::new(identities)
            .ok_or_else(|| StartError::Usage("server mode needs --cert and --key".into()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&negotiation.versions)
            .map_err(|e| StartError::Usage(format!("cannot use these TLS parameters: {e}")))?;
        let (builder, verifier) = match &self.client_ca {
            Some(ca) => {
                let roots = Arc::new(root_store(ca)?);
                let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .with_crls(revocation_lists(&self.crls)?)
                    // A certificate that no CRL given speaks for is not refused for that.
                    .allow_unknown_revocation_status()
                    .build()
                    .map_err(|e| ca.bad(format!("cannot verify clients with it: {e}")))?;
                let verifier = Arc::new(ClientVerifier::new(webpki, self.policy.clone()));
                (
                    builder.with_client_cert_verifier(verifier.clone()),
                    Some(verifier),
                )
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.ignore_client_order = true;
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
        // Stateless tickets make resumption cost no server memory per session; the
        // rotating key is this configuration's own.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(runtime)?;
        Ok(ServerTls {
            config: Arc::new(config),
            verifier,
        })
    }
}

/// Reads every file in `paths` for `flag`.
pub(super) fn read_all(
    flag: &'static str,
    paths: &[std::path::PathBuf],
) -> Result<Vec<Pem>, StartError> {
    paths.iter().map(|path| Pem::read(flag, path)).collect()
}
