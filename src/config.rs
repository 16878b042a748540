//! What moat was asked to do: the mode, its addresses and files, timeouts and limits.
//!
//! [`crate::cli`] fills a [`Config`] from the command line; nothing here touches the network
//! or the file system, so a `Config` can be built and checked in a test without side effects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StartError;

/// Everything moat needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which tunnel(s) to run.
    pub mode: Mode,
    /// Per-tunnel deadlines.
    pub timeouts: Timeouts,
    /// Caps that keep moat within its resources.
    pub limits: Limits,
    /// How much to log.
    pub log_level: log::LevelFilter,
    /// Whether moat restricts itself once it serves (see [`crate::sandbox`]);
    /// `--no-sandbox` turns it off.
    pub sandbox: bool,
}

/// The three ways to run moat.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Accept TLS, forward plaintext.
    Server(ServerMode),
    /// Accept plaintext, forward TLS.
    Client(ClientMode),
    /// Run an echo backend, a server tunnel and a client tunnel in one process.
    Demo(DemoMode),
}

/// Settings of server mode: TLS in, plaintext out.
#[derive(Debug, Clone)]
pub struct ServerMode {
    /// Where to accept TLS connections.
    pub listen: SocketAddr,
    /// The plaintext backends, taken in turn; a failed connect moves on to the next.
    pub targets: Vec<SocketAddr>,
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
}

impl ServerMode {
    /// Checks that the plaintext leg stays on this host, unless `--unsafe-target` says the
    /// network to the backend is trusted.
    pub fn check_targets(&self) -> Result<(), StartError> {
        if self.unsafe_target {
            return Ok(());
        }
        match self.targets.iter().find(|t| !stays_on_host(t)) {
            Some(target) => Err(StartError::invalid(
                "--target",
                &target.to_string(),
                "not a loopback address: server mode sends the backend plaintext, \
                 unencrypted, so the target must be on this host; give --unsafe-target \
                 if the network between moat and the backend is trusted",
            )),
            None => Ok(()),
        }
    }
}

/// Whether bytes sent to `target` stay on this host. A loopback address does; so will a
/// unix socket, when targets can be one.
pub fn stays_on_host(target: &SocketAddr) -> bool {
    match target.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => ip.to_canonical().is_loopback(),
    }
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

/// Settings of client mode: plaintext in, TLS out.
#[derive(Debug, Clone)]
pub struct ClientMode {
    /// Where to accept plaintext connections.
    pub listen: SocketAddr,
    /// The TLS servers, as `HOST:PORT`, taken in turn; each is resolved once at start-up.
    pub targets: Vec<String>,
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
#[derive(Debug, Clone)]
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

impl TlsVersion {
    /// Parses `1.2` or `1.3`.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, StartError> {
        match text {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(StartError::invalid(flag, text, "expected 1.2 or 1.3")),
        }
    }
}

/// Splits a comma-separated list (`h2,http/1.1`); empty items are an error.
pub fn parse_list(flag: &'static str, text: &str) -> Result<Vec<String>, StartError> {
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(StartError::invalid(
            flag,
            text,
            "expected a comma-separated list without empty items",
        ));
    }
    Ok(items)
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
    /// For open tunnels to finish after SIGTERM/SIGINT.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            close: Duration::from_secs(30),
            shutdown: Duration::from_secs(30),
        }
    }
}

/// Caps on what moat holds at once.
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

/// Parses a duration such as `250ms`, `10s`, `5m` or `1h`.
pub fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, StartError> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = |reason: &str| StartError::invalid(flag, text, reason);
    let number: u64 = number
        .parse()
        .map_err(|_| bad("expected a number with a unit, such as 250ms, 10s, 5m or 1h"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(bad("missing unit: write 250ms, 10s, 5m or 1h")),
        _ => return Err(bad("unknown unit: use ms, s, m or h")),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| bad("too long"))?;
    if millis == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses `IP:PORT` (`127.0.0.1:6379`, `[::1]:6379`).
pub fn parse_socket_addr(flag: &'static str, text: &str) -> Result<SocketAddr, StartError> {
    text.parse().map_err(|_| {
        StartError::invalid(
            flag,
            text,
            "expected IP:PORT, such as 127.0.0.1:7000 or [::1]:7000",
        )
    })
}

/// Splits `HOST:PORT` (`db.example:5432`, `[::1]:5432`) into host and port.
pub fn split_host_port(flag: &'static str, text: &str) -> Result<(String, u16), StartError> {
    let bad = || StartError::invalid(flag, text, "expected HOST:PORT, such as db.example:6379");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    // An IPv6 address must be bracketed, or its last group could pass for the port.
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_ok() => inner,
        Some(_) => return Err(bad()),
        None if host.is_empty() || host.contains(':') => return Err(bad()),
        None => host,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(
            parse_duration("--x", "250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("--x", "10s").ok(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_duration("--x", "5m").ok(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("--x", "1h").ok(),
            Some(Duration::from_secs(3600))
        );
        for bad in [
            "",
            "10",
            "s",
            "-1s",
            "1.5s",
            "10 s",
            "0s",
            "3d",
            "99999999999999999h",
        ] {
            assert!(parse_duration("--x", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_port_splits_names_and_ipv6() {
        let ok = |t| split_host_port("--target", t).ok();
        assert_eq!(ok("db.example:5432"), Some(("db.example".into(), 5432)));
        assert_eq!(ok("[::1]:6379"), Some(("::1".into(), 6379)));
        assert_eq!(ok("127.0.0.1:1"), Some(("127.0.0.1".into(), 1)));
        for bad in ["db.example", ":80", "host:99999", "::1:80", "host:"] {
            assert!(
                split_host_port("--target", bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn only_loopback_targets_stay_on_host() {
        for local in [
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(stays_on_host(&local.parse().unwrap()), "{local}");
        }
        for remote in [
            "10.0.0.1:1",
            "0.0.0.0:1",
            "[::]:1",
            "[2001:db8::1]:1",
            "192.0.2.1:1",
        ] {
            assert!(!stays_on_host(&remote.parse().unwrap()), "{remote}");
        }
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            parse_list("--alpn", "h2,http/1.1").ok(),
            Some(vec!["h2".to_owned(), "http/1.1".to_owned()])
        );
        for bad in ["", "h2,", ",h2", "h2,,x"] {
            assert!(parse_list("--alpn", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_cap_leaves_headroom() {
        assert_eq!(Limits::default_max_conns(20_000), 9_968);
        assert_eq!(Limits::default_max_conns(10), 1);
    }
}
