//! What moat was asked to do: its services (each a listener, targets, TLS settings and
//! deadlines) and the settings of the whole process.
//!
//! Two sources fill a [`Config`]: the command line ([`crate::cli`]), which describes one
//! service, and a TOML file ([`file`]) with several, whose keys are named exactly as the
//! flags. Both go through the same builders ([`settings`]), so a setting means the same
//! thing, and fails the same way, wherever it is written. Nothing here touches the network
//! or reads a certificate: a `Config` can be built and checked in a test without side
//! effects; files are read and names resolved when services are built ([`crate::service`]).

pub mod file;
pub mod settings;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;

pub use values::{parse_count, parse_duration, parse_list, parse_log_level, parse_mode};

/// Everything moat needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings of the whole process.
    pub global: Global,
    /// The services to run (empty for the demo, which builds its own).
    pub services: Vec<ServiceConfig>,
    /// `moat demo`.
    pub demo: Option<DemoMode>,
    /// The config file the services came from, if any: a reload reads it again.
    pub file: Option<PathBuf>,
}

/// Settings of the whole process, not of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Caps that keep moat within its resources.
    pub limits: Limits,
    /// How much to log.
    pub log_level: log::LevelFilter,
    /// How log lines are written (`--log-format`).
    pub log_format: LogFormat,
    /// For open tunnels to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Whether moat restricts itself once it serves (see [`crate::sandbox`]);
    /// `--no-sandbox` turns it off.
    pub sandbox: bool,
    /// How many poll loops (threads) serve the tunnels (`--workers`).
    pub workers: usize,
    /// Where the status endpoint listens (`--status`), if anywhere.
    pub status: Option<Address>,
    /// How often to look for changed files and reload (`--reload-interval`).
    pub reload_interval: Option<Duration>,
    /// Which tunnels `--trace` and `--trace-peer` follow.
    pub trace: Trace,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per record.
    #[default]
    Text,
    /// One JSON object per record.
    Json,
}

/// Which tunnels are traced event by event (see [`crate::trace`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trace {
    /// None.
    #[default]
    Off,
    /// Every tunnel (`--trace`).
    All,
    /// Tunnels from these addresses (`--trace-peer`).
    Peers(Vec<std::net::IpAddr>),
}

/// One service: a listener and where its connections go.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Its name in logs and metrics (`name`; by default `server` or `client`).
    pub name: String,
    /// Where to accept connections.
    pub listen: Address,
    /// File mode of a unix socket listener (`--unix-mode`).
    pub unix_mode: Option<u32>,
    /// Per-tunnel deadlines.
    pub timeouts: Timeouts,
    /// Read a PROXY protocol header from each connection first, within this long
    /// (`--accept-proxy`, `--proxy-timeout`).
    pub accept_proxy: Option<Duration>,
    /// Server mode or client mode, with their settings.
    pub kind: ServiceKind,
}

impl ServiceConfig {
    /// Every file the service reads: certificates, keys, CAs, CRLs.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        match &self.kind {
            ServiceKind::Server(server) => {
                for id in &server.identities {
                    files.extend([id.cert.clone(), id.key.clone()]);
                }
                if let ClientAuth::Required { ca } = &server.client_auth {
                    files.push(ca.clone());
                }
                files.extend(server.crls.iter().cloned());
            }
            ServiceKind::Client(client) => {
                files.extend(client.ca.iter().cloned());
                if let Some(id) = &client.identity {
                    files.extend([id.cert.clone(), id.key.clone()]);
                }
                files.extend(client.crls.iter().cloned());
            }
        }
        files
    }
}

impl Config {
    /// Every file the configuration reads: its services' files and the config file.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .services
            .iter()
            .flat_map(ServiceConfig::files)
            .collect();
        files.extend(self.file.iter().cloned());
        files
    }
}

/// What a service does with a connection.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// Accept TLS, forward plaintext.
    Server(ServerMode),
    /// Accept plaintext, forward TLS.
    Client(ClientMode),
}

impl ServiceKind {
    /// `server` or `client`.
    pub fn mode_name(&self) -> &'static str {
        match self {
            Self::Server(_) => "server",
            Self::Client(_) => "client",
        }
    }
}

/// Settings of server mode: TLS in, plaintext out.
#[derive(Debug, Clone)]
pub struct ServerMode {
    /// The plaintext backends, taken in turn; a failed connect moves on to the next.
    pub targets: Vec<Address>,
    /// Certificate chains presented to clients (`--cert`/`--key` pairs), chosen by the
    /// server name the client asks for (SNI); the first one is the default.
    pub identities: Vec<Identity>,
    /// Whether clients must present a certificate.
    pub client_auth: ClientAuth,
    /// Which client certificates get in, on top of chaining to the CA (`--allow-*`).
    pub policy: PolicyConfig,
    /// Certificate revocation lists for client certificates (`--crl`).
    pub crls: Vec<PathBuf>,
    /// Application protocols offered, most preferred first (`--alpn`); empty: no ALPN.
    pub alpn: Vec<String>,
    /// Protocol versions, cipher suites and key exchange groups.
    pub tls: TlsParams,
    /// Allow targets off this host, where the plaintext leg crosses a network
    /// (`--unsafe-target`).
    pub unsafe_target: bool,
    /// Send the client's address to the backend in a PROXY protocol header
    /// (`--proxy-protocol`).
    pub proxy_protocol: Option<ProxyVersion>,
}

/// Client-certificate policy of server mode.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Mutual TLS: a client certificate signed by one of the CAs in this file is required.
    Required {
        /// The CA bundle (`--client-ca`).
        ca: PathBuf,
    },
    /// Any client may connect (`--no-client-auth`).
    Disabled,
}

/// A version of the PROXY protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header, with TLVs.
    V2,
}

/// Settings of client mode: plaintext in, TLS out.
#[derive(Debug, Clone)]
pub struct ClientMode {
    /// The TLS servers, taken in turn; names are resolved at start-up and reload.
    pub targets: Vec<Address>,
    /// CA bundle that the server's certificate must chain to (`--ca`); without it, the
    /// system's trust store.
    pub ca: Option<PathBuf>,
    /// Name checked in the server's certificate; default: the host part of the first target.
    pub server_name: Option<String>,
    /// Client certificate and key to present, if any.
    pub identity: Option<Identity>,
    /// Which server certificates are accepted, on top of the chain and name (`--allow-*`).
    pub policy: PolicyConfig,
    /// Certificate revocation lists for the server's chain (`--crl`).
    pub crls: Vec<PathBuf>,
    /// Application protocols sent, most preferred first (`--alpn`); empty: no ALPN.
    pub alpn: Vec<String>,
    /// Protocol versions, cipher suites and key exchange groups.
    pub tls: TlsParams,
}

/// A certificate chain and its private key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// PEM certificate chain (`--cert`).
    pub cert: PathBuf,
    /// PEM private key (`--key`).
    pub key: PathBuf,
}

/// The allow-list for peer certificates, as written (`--allow-cn` and friends). Empty:
/// any certificate that chains to the CA. Parsed into a `tls::Policy` at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Patterns for the subject's common name (`--allow-cn`).
    pub allow_cn: Vec<String>,
    /// Patterns for the subject's organizational unit (`--allow-ou`).
    pub allow_ou: Vec<String>,
    /// Patterns for DNS names in the subject alternative names (`--allow-dns`).
    pub allow_dns: Vec<String>,
    /// Patterns for URIs in the subject alternative names, such as SPIFFE IDs (`--allow-uri`).
    pub allow_uri: Vec<String>,
    /// SHA-256 pins of the subject public key info, `sha256//BASE64` (`--allow-spki`).
    pub allow_spki: Vec<String>,
}

impl PolicyConfig {
    /// Whether no rule is given.
    pub fn is_empty(&self) -> bool {
        self.allow_cn.is_empty()
            && self.allow_ou.is_empty()
            && self.allow_dns.is_empty()
            && self.allow_uri.is_empty()
            && self.allow_spki.is_empty()
    }
}

/// How TLS is negotiated: versions, cipher suites, key exchange groups. Names are checked
/// against what moat supports at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// The oldest protocol version accepted (`--min-tls`).
    pub min_version: TlsVersion,
    /// Cipher suites in order of preference, replacing moat's own order (`--ciphers`).
    pub ciphers: Option<Vec<String>>,
    /// Key exchange groups in order of preference, replacing moat's own (`--groups`).
    pub groups: Option<Vec<String>>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[default]
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Settings of `moat demo`.
#[derive(Debug, Clone)]
pub struct DemoMode {
    /// The loopback address and first port of the three demo listeners; port 0 picks free
    /// ports.
    pub base: SocketAddr,
}

/// The separate deadlines of a tunnel's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept (server mode) or connect (client mode) to a finished TLS handshake.
    pub handshake: Duration,
    /// For the TCP connect to the target.
    pub connect: Duration,
    /// With no bytes moving in either direction.
    pub idle: Duration,
    /// With no bytes moving after one direction has finished (half-closed).
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            close: Duration::from_secs(30),
        }
    }
}

/// The default `--shutdown-timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `--proxy-timeout`: a load balancer sends its header at once.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(3);

/// Caps on what moat holds at once, for the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tunnels open at once; at the cap moat stops accepting.
    pub max_conns: usize,
    /// Most tunnels open at once from one source address; more are closed at accept.
    pub max_conns_per_ip: Option<usize>,
    /// Most TLS handshakes in flight; at the budget the stalest one makes room.
    pub max_handshakes: usize,
}

impl Limits {
    /// The default `--max-handshakes`: enough for bursts of real clients, small enough that
    /// half-open handshakes cannot hold much memory.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

    /// The default cap: what the descriptor limit allows at two descriptors per tunnel,
    /// minus headroom for listeners, the poll instance and logging.
    pub fn default_max_conns(descriptor_limit: u64) -> usize {
        let tunnels = descriptor_limit.saturating_sub(DESCRIPTOR_HEADROOM) / 2;
        usize::try_from(tunnels).unwrap_or(usize::MAX).max(1)
    }
}

/// Descriptors kept free for listeners, epoll, signals and stdio.
pub const DESCRIPTOR_HEADROOM: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_headroom() {
        assert_eq!(Limits::default_max_conns(20_000), 9_968);
        assert_eq!(Limits::default_max_conns(10), 1);
    }
}
