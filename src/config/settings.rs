//! The settings of a service and of the process, built from any [`Source`]: the command
//! line or a table of the config file. One builder per setting, so a key means the same
//! and fails the same way wherever it is written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    parse_count, parse_duration, parse_list, parse_log_level, parse_mode, ClientAuth, ClientMode,
    DemoMode, Global, Identity, Limits, LogFormat, PolicyConfig, ProxyVersion, ServerMode,
    ServiceConfig, ServiceKind, Timeouts, TlsParams, TlsVersion, Trace, DEFAULT_PROXY_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
};
use crate::address::Address;
use crate::error::StartError;

/// Keys of the process as a whole: on the command line, or at the top of the config file.
pub const GLOBAL_KEYS: &[&str] = &[
    "log-level",
    "log-format",
    "max-conns",
    "max-conns-per-ip",
    "max-handshakes",
    "shutdown-timeout",
    "no-sandbox",
    "workers",
    "status",
    "reload-interval",
    "trace",
    "trace-peer",
];

/// Keys of one service: on the command line, or in a `[[server]]` / `[[client]]` table.
/// The four timeouts may also stand at the top of the config file, as every service's
/// default.
pub const SERVICE_KEYS: &[&str] = &[
    "name",
    "listen",
    "target",
    "cert",
    "key",
    "client-ca",
    "no-client-auth",
    "ca",
    "server-name",
    "unsafe-target",
    "allow-cn",
    "allow-ou",
    "allow-dns",
    "allow-uri",
    "allow-spki",
    "crl",
    "alpn",
    "min-tls",
    "ciphers",
    "groups",
    "proxy-protocol",
    "accept-proxy",
    "proxy-timeout",
    "unix-mode",
    "handshake-timeout",
    "connect-timeout",
    "idle-timeout",
    "close-timeout",
];

/// Service keys that belong to only one mode.
const SERVER_ONLY: &[&str] = &[
    "client-ca",
    "no-client-auth",
    "unsafe-target",
    "proxy-protocol",
];
const CLIENT_ONLY: &[&str] = &["ca", "server-name"];

/// The keys that check the peer's certificate.
const CERTIFICATE_CHECKS: &[&str] = &[
    "allow-cn",
    "allow-ou",
    "allow-dns",
    "allow-uri",
    "allow-spki",
    "crl",
];

/// Where settings come from. Keys are named as the flags, without the dashes; errors name
/// them as flags (`--cert`), and a config file's errors say `cert` instead.
pub trait Source {
    /// The value of a key that may be given once.
    fn one(&self, key: &'static str) -> Result<Option<String>, StartError>;
    /// Every value of a repeatable key, in order.
    fn all(&self, key: &'static str) -> Result<Vec<String>, StartError>;
    /// Whether a switch (a key without a value) is on.
    fn switch(&self, key: &'static str) -> Result<bool, StartError>;
    /// Whether the key is given at all.
    fn has(&self, key: &'static str) -> bool;
}

/// `--key`, for messages.
fn flag(key: &'static str) -> String {
    format!("--{key}")
}

/// The `&'static` flag spelling errors carry, for a known key (`cert` → `--cert`).
pub fn flag_of(key: &str) -> &'static str {
    flag_static(key)
}

fn flag_static(key: &str) -> &'static str {
    FLAGS
        .iter()
        .find(|f| f.trim_start_matches('-') == key)
        .copied()
        .unwrap_or("--setting")
}

/// Every key as a flag, for errors that carry `&'static str`.
const FLAGS: &[&str] = &[
    "--log-level",
    "--log-format",
    "--max-conns",
    "--max-conns-per-ip",
    "--max-handshakes",
    "--shutdown-timeout",
    "--no-sandbox",
    "--workers",
    "--status",
    "--reload-interval",
    "--trace",
    "--trace-peer",
    "--name",
    "--listen",
    "--target",
    "--cert",
    "--key",
    "--client-ca",
    "--no-client-auth",
    "--ca",
    "--server-name",
    "--unsafe-target",
    "--allow-cn",
    "--allow-ou",
    "--allow-dns",
    "--allow-uri",
    "--allow-spki",
    "--crl",
    "--alpn",
    "--min-tls",
    "--ciphers",
    "--groups",
    "--proxy-protocol",
    "--accept-proxy",
    "--proxy-timeout",
    "--unix-mode",
    "--handshake-timeout",
    "--connect-timeout",
    "--idle-timeout",
    "--close-timeout",
];

/// The settings of the process, from `source`. `descriptor_limit` gives the default
/// `--max-conns`.
pub fn global(source: &dyn Source, descriptor_limit: u64) -> Result<Global, StartError> {
    let count = |key: &'static str| -> Result<Option<usize>, StartError> {
        source
            .one(key)?
            .map(|t| parse_count(flag_static(key), &t))
            .transpose()
    };
    let limits = Limits {
        max_conns: count("max-conns")?
            .unwrap_or_else(|| Limits::default_max_conns(descriptor_limit)),
        max_conns_per_ip: count("max-conns-per-ip")?,
        max_handshakes: count("max-handshakes")?.unwrap_or(Limits::DEFAULT_MAX_HANDSHAKES),
    };
    let log_level = match source.one("log-level")? {
        Some(text) => parse_log_level("--log-level", &text)?,
        None => log::LevelFilter::Info,
    };
    let log_format = match source.one("log-format")?.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(StartError::invalid(
                "--log-format",
                other,
                "expected text or json",
            ))
        }
    };
    let workers = match source.one("workers")?.as_deref() {
        None => 1,
        Some("auto") => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(text) => parse_count("--workers", text)?,
    };
    let status = source
        .one("status")?
        .map(|text| Address::parse("--status", &text, true))
        .transpose()?;
    let reload_interval = source
        .one("reload-interval")?
        .map(|text| parse_duration("--reload-interval", &text))
        .transpose()?;
    let trace_peers = source
        .all("trace-peer")?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| StartError::invalid("--trace-peer", text, "expected an IP address"))
        })
        .collect::<Result<Vec<std::net::IpAddr>, StartError>>()?;
    let trace = match (source.switch("trace")?, trace_peers.is_empty()) {
        (true, _) => Trace::All,
        (false, false) => Trace::Peers(trace_peers),
        (false, true) => Trace::Off,
    };
    Ok(Global {
        limits,
        log_level,
        log_format,
        shutdown_timeout: duration(source, "shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT)?,
        sandbox: !source.switch("no-sandbox")?,
        workers,
        status,
        reload_interval,
        trace,
    })
}

/// One service of `mode` (`server` or `client`), from `source`; `default_name` names it
/// when `name` is not given.
pub fn service(
    source: &dyn Source,
    mode: &str,
    default_name: &str,
) -> Result<ServiceConfig, StartError> {
    let kind = match mode {
        "server" => ServiceKind::Server(server_mode(source)?),
        "client" => ServiceKind::Client(client_mode(source)?),
        other => return Err(StartError::Usage(format!("unknown mode '{other}'"))),
    };
    let name = match source.one("name")? {
        Some(name) if name.is_empty() || name.chars().any(char::is_control) => {
            return Err(StartError::invalid(
                "--name",
                &name,
                "expected a name without control characters",
            ))
        }
        Some(name) => name,
        None => default_name.to_owned(),
    };
    let listen = Address::parse("--listen", &required(source, "listen", mode)?, true)?;
    let unix_mode = source
        .one("unix-mode")?
        .map(|text| parse_mode("--unix-mode", &text))
        .transpose()?;
    if unix_mode.is_some() && !matches!(listen, Address::Unix(_)) {
        return Err(StartError::Usage(
            "--unix-mode applies to a unix socket: --listen unix:/path".into(),
        ));
    }
    if source.switch("accept-proxy")? && matches!(listen, Address::Unix(_)) {
        return Err(StartError::Usage(
            "--accept-proxy reads the header a load balancer sends over TCP: --listen must be \
             a TCP address"
                .into(),
        ));
    }
    let accept_proxy = match (source.switch("accept-proxy")?, source.has("proxy-timeout")) {
        (true, _) => Some(duration(source, "proxy-timeout", DEFAULT_PROXY_TIMEOUT)?),
        (false, true) => {
            return Err(StartError::Usage(
                "--proxy-timeout applies with --accept-proxy".into(),
            ))
        }
        (false, false) => None,
    };
    Ok(ServiceConfig {
        name,
        listen,
        unix_mode,
        timeouts: timeouts(source)?,
        accept_proxy,
        kind,
    })
}

/// `moat demo`, from `source` (only `--listen` and the process's settings apply).
pub fn demo(source: &dyn Source) -> Result<DemoMode, StartError> {
    if let Some(key) = SERVICE_KEYS
        .iter()
        .find(|k| **k != "listen" && source.has(k))
    {
        return Err(StartError::Usage(format!(
            "--{key} does not apply to demo mode"
        )));
    }
    let base = match source.one("listen")? {
        Some(text) => text.parse::<SocketAddr>().map_err(|_| {
            StartError::invalid(
                "--listen",
                &text,
                "the demo listens on IP:PORT, such as 127.0.0.1:7000",
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 7000)),
    };
    if base.port() > u16::MAX - 2 {
        return Err(StartError::invalid(
            "--listen",
            &base.to_string(),
            "the demo needs this port and the two after it",
        ));
    }
    Ok(DemoMode { base })
}

fn server_mode(source: &dyn Source) -> Result<ServerMode, StartError> {
    reject(source, "server", CLIENT_ONLY)?;
    let client_auth = match (source.one("client-ca")?, source.switch("no-client-auth")?) {
        (Some(ca), false) => ClientAuth::Required { ca: ca.into() },
        (None, true) => ClientAuth::Disabled,
        (Some(_), true) => {
            return Err(StartError::Usage(
                "--client-ca and --no-client-auth contradict each other: give one".into(),
            ))
        }
        (None, false) => {
            return Err(StartError::Usage(
                "server mode needs --client-ca FILE to require client certificates signed by \
                 that CA (mutual TLS), or --no-client-auth to accept any client"
                    .into(),
            ))
        }
    };
    if matches!(client_auth, ClientAuth::Disabled) {
        if let Some(key) = CERTIFICATE_CHECKS.iter().find(|k| source.has(k)) {
            return Err(StartError::Usage(format!(
                "--{key} checks client certificates, but --no-client-auth asks for none"
            )));
        }
    }
    let identities = identities(source)?;
    if identities.is_empty() {
        return Err(StartError::Usage(
            "server mode needs --cert and --key".into(),
        ));
    }
    let proxy_protocol = match source.one("proxy-protocol")?.as_deref() {
        None => None,
        Some("v1") => Some(ProxyVersion::V1),
        Some("v2") => Some(ProxyVersion::V2),
        Some(other) => {
            return Err(StartError::invalid(
                "--proxy-protocol",
                other,
                "expected v1 or v2",
            ))
        }
    };
    Ok(ServerMode {
        targets: targets(source, "server")?,
        identities,
        client_auth,
        policy: policy(source)?,
        crls: paths(source, "crl")?,
        alpn: alpn(source)?,
        tls: tls_params(source)?,
        unsafe_target: source.switch("unsafe-target")?,
        proxy_protocol,
    })
}

fn client_mode(source: &dyn Source) -> Result<ClientMode, StartError> {
    reject(source, "client", SERVER_ONLY)?;
    let targets = targets(source, "client")?;
    if let Some(unix) = targets.iter().find(|t| matches!(t, Address::Unix(_))) {
        if !source.has("server-name") {
            return Err(StartError::invalid(
                "--target",
                &unix.to_string(),
                "a unix socket has no host name to verify: give --server-name",
            ));
        }
    }
    let mut identities = identities(source)?;
    if identities.len() > 1 {
        return Err(StartError::Usage(
            "client mode presents one certificate: give --cert and --key once".into(),
        ));
    }
    Ok(ClientMode {
        targets,
        ca: source.one("ca")?.map(PathBuf::from),
        server_name: source.one("server-name")?,
        identity: identities.pop(),
        policy: policy(source)?,
        crls: paths(source, "crl")?,
        alpn: alpn(source)?,
        tls: tls_params(source)?,
    })
}

/// The `--cert`/`--key` pairs, the i-th key with the i-th certificate.
fn identities(source: &dyn Source) -> Result<Vec<Identity>, StartError> {
    let (certs, keys) = (source.all("cert")?, source.all("key")?);
    if certs.len() != keys.len() {
        return Err(StartError::Usage(format!(
            "--cert and --key go in pairs, the i-th --key with the i-th --cert: got {} --cert \
             and {} --key",
            certs.len(),
            keys.len()
        )));
    }
    Ok(certs
        .into_iter()
        .zip(keys)
        .map(|(cert, key)| Identity {
            cert: cert.into(),
            key: key.into(),
        })
        .collect())
}

fn policy(source: &dyn Source) -> Result<PolicyConfig, StartError> {
    Ok(PolicyConfig {
        allow_cn: source.all("allow-cn")?,
        allow_ou: source.all("allow-ou")?,
        allow_dns: source.all("allow-dns")?,
        allow_uri: source.all("allow-uri")?,
        allow_spki: source.all("allow-spki")?,
    })
}

fn paths(source: &dyn Source, key: &'static str) -> Result<Vec<PathBuf>, StartError> {
    Ok(source.all(key)?.into_iter().map(PathBuf::from).collect())
}

fn alpn(source: &dyn Source) -> Result<Vec<String>, StartError> {
    let Some(text) = source.one("alpn")? else {
        return Ok(Vec::new());
    };
    let protocols = parse_list("--alpn", &text)?;
    match protocols.iter().find(|p| p.len() > 255) {
        Some(long) => Err(StartError::invalid(
            "--alpn",
            long,
            "a protocol name is at most 255 bytes",
        )),
        None => Ok(protocols),
    }
}

fn tls_params(source: &dyn Source) -> Result<TlsParams, StartError> {
    let list = |key: &'static str| -> Result<Option<Vec<String>>, StartError> {
        source
            .one(key)?
            .map(|t| parse_list(flag_static(key), &t))
            .transpose()
    };
    Ok(TlsParams {
        min_version: match source.one("min-tls")? {
            Some(text) => TlsVersion::parse("--min-tls", &text)?,
            None => TlsVersion::default(),
        },
        ciphers: list("ciphers")?,
        groups: list("groups")?,
    })
}

fn timeouts(source: &dyn Source) -> Result<Timeouts, StartError> {
    let d = Timeouts::default();
    Ok(Timeouts {
        handshake: duration(source, "handshake-timeout", d.handshake)?,
        connect: duration(source, "connect-timeout", d.connect)?,
        idle: duration(source, "idle-timeout", d.idle)?,
        close: duration(source, "close-timeout", d.close)?,
    })
}

fn duration(
    source: &dyn Source,
    key: &'static str,
    default: Duration,
) -> Result<Duration, StartError> {
    match source.one(key)? {
        Some(text) => parse_duration(flag_static(key), &text),
        None => Ok(default),
    }
}

fn targets(source: &dyn Source, mode: &str) -> Result<Vec<Address>, StartError> {
    let targets = source.all("target")?;
    if targets.is_empty() {
        return Err(StartError::Usage(format!("{mode} mode needs --target")));
    }
    targets
        .iter()
        .map(|t| Address::parse("--target", t, false))
        .collect()
}

fn required(source: &dyn Source, key: &'static str, mode: &str) -> Result<String, StartError> {
    source
        .one(key)?
        .ok_or_else(|| StartError::Usage(format!("{mode} mode needs {}", flag(key))))
}

/// Keys that belong to another mode are a mistake worth naming, not something to ignore.
fn reject(source: &dyn Source, mode: &str, keys: &[&'static str]) -> Result<(), StartError> {
    match keys.iter().find(|key| source.has(key)) {
        Some(key) => Err(StartError::Usage(format!(
            "--{key} does not apply to {mode} mode"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_flag_spelling() {
        for key in GLOBAL_KEYS.iter().chain(SERVICE_KEYS) {
            assert_eq!(flag_static(key), flag(key), "{key}");
        }
    }
}
