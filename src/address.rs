//! Addresses as people write them, for listening and for targets:
//!
//! | written            | listen                                   | target                       |
//! |--------------------|------------------------------------------|------------------------------|
//! | `127.0.0.1:6379`   | that address                             | that address                 |
//! | `[::1]:6379`       | that address                             | that address                 |
//! | `:6380`            | every interface, IPv6 and IPv4           | —                            |
//! | `db.example:6379`  | every address the name resolves to       | every address it resolves to |
//! | `unix:/run/x.sock` | a unix-domain socket at that path        | a unix-domain socket         |
//!
//! Parsing ([`Address::parse`]) touches nothing; names are resolved by [`Address::resolve`]
//! at start-up and at reload, never in the loop.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::error::StartError;

/// An address as written on the command line or in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `IP:PORT` or `[IPv6]:PORT`.
    Ip(SocketAddr),
    /// `:PORT`: every interface (listen only).
    AnyInterface(u16),
    /// `HOST:PORT`, resolved at start-up and reload.
    Host(String, u16),
    /// `unix:/path`.
    Unix(PathBuf),
}

/// One concrete place to listen on or connect to, after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddress {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix-domain socket path.
    Unix(PathBuf),
}

/// Who is on the other side of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP client (IPv4-mapped IPv6 addresses are shown and counted as IPv4).
    Ip(SocketAddr),
    /// A client on a unix-domain socket: it has no address.
    Unix,
}

impl Address {
    /// Parses `text` given for `flag`; `listen` allows `:PORT`.
    pub fn parse(flag: &'static str, text: &str, listen: bool) -> Result<Self, StartError> {
        let expected = if listen {
            "expected IP:PORT, [IPv6]:PORT, HOST:PORT, :PORT or unix:/path"
        } else {
            "expected IP:PORT, [IPv6]:PORT, HOST:PORT or unix:/path"
        };
        let bad = |why: &str| StartError::invalid(flag, text, why);
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                return Err(bad(
                    "expected a path after unix:, such as unix:/run/moat.sock",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad(expected))?;
        // Digits only: `u16::from_str` also takes a leading `+`, which would turn
        // `127.0.0.1:+80` into a host name to resolve (found by the cli fuzz target).
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(expected));
        }
        let port: u16 = port.parse().map_err(|_| bad(expected))?;
        if host.is_empty() {
            return if listen {
                Ok(Self::AnyInterface(port))
            } else {
                Err(bad("a target needs a host: write HOST:PORT"))
            };
        }
        // An IPv6 address must be bracketed, or its last group could pass for the port.
        if host.contains(':') || host.starts_with('[') || !valid_host_name(host) {
            return Err(bad(expected));
        }
        Ok(Self::Host(host.to_owned(), port))
    }

    /// The host part, for a TLS server name: a name or an IP address (no unix path).
    pub fn host(&self) -> Option<String> {
        match self {
            Self::Ip(addr) => Some(addr.ip().to_string()),
            Self::Host(host, _) => Some(host.clone()),
            Self::AnyInterface(_) | Self::Unix(_) => None,
        }
    }

    /// Whether every connection to this target stays on this machine: a loopback address,
    /// a name that resolves only to loopback addresses, or a unix socket.
    pub fn is_local(&self, resolved: &[SocketAddress]) -> bool {
        match self {
            Self::Unix(_) => true,
            _ => {
                !resolved.is_empty()
                    && resolved.iter().all(|e| match e {
                        SocketAddress::Tcp(addr) => addr.ip().to_canonical().is_loopback(),
                        SocketAddress::Unix(_) => true,
                    })
            }
        }
    }

    /// The concrete places this address stands for. Names are resolved here (blocking):
    /// call it at start-up or reload only.
    pub fn resolve(&self, flag: &'static str) -> Result<Vec<SocketAddress>, StartError> {
        match self {
            Self::Ip(addr) => Ok(vec![SocketAddress::Tcp(*addr)]),
            Self::AnyInterface(port) => Ok(vec![SocketAddress::Tcp(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                *port,
            ))]),
            Self::Unix(path) => Ok(vec![SocketAddress::Unix(path.clone())]),
            Self::Host(host, port) => {
                let fail = |source| StartError::Resolve {
                    flag,
                    value: self.to_string(),
                    source,
                };
                let mut addrs: Vec<SocketAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(fail)?
                    .collect();
                addrs.dedup();
                if addrs.is_empty() {
                    let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
                    return Err(fail(none));
                }
                Ok(addrs.into_iter().map(SocketAddress::Tcp).collect())
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::AnyInterface(port) => write!(f, ":{port}"),
            Self::Host(host, port) => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Peer {
    /// A TCP peer, with an IPv4-mapped IPv6 address (from a dual-stack listener) turned back
    /// into the IPv4 address it is.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::Ip(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
    }

    /// The peer's IP address, for per-address caps.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(addr) => Some(addr.ip()),
            Self::Unix => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Unix => f.write_str("unix"),
        }
    }
}

/// Letters, digits, `-`, `.` and `_`: a name a resolver can look up (no spaces, no slashes).
fn valid_host_name(host: &str) -> bool {
    host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(text: &str) -> Option<Address> {
        Address::parse("--listen", text, true).ok()
    }

    fn target(text: &str) -> Option<Address> {
        Address::parse("--target", text, false).ok()
    }

    #[test]
    fn every_written_form_parses() {
        assert_eq!(
            listen("127.0.0.1:7000"),
            Some(Address::Ip("127.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            listen("[::1]:7000"),
            Some(Address::Ip("[::1]:7000".parse().unwrap()))
        );
        assert_eq!(listen(":6380"), Some(Address::AnyInterface(6380)));
        assert_eq!(
            target("localhost:6379"),
            Some(Address::Host("localhost".into(), 6379))
        );
        assert_eq!(
            target("unix:/run/redis.sock"),
            Some(Address::Unix("/run/redis.sock".into()))
        );
        for bad in [
            "",
            "host",
            "host:",
            "host:99999",
            "::1:80",
            "[::1",
            "a b:1",
            "unix:",
            "127.0.0.1:+379",
            "localhost:+80",
            ":+80",
            "host:-1",
        ] {
            assert!(listen(bad).is_none(), "{bad:?} accepted");
        }
        assert!(target(":6380").is_none(), "a target needs a host");
    }

    #[test]
    fn written_forms_display_as_written() {
        for text in [
            "127.0.0.1:1",
            "[::1]:2",
            ":3",
            "db.example:4",
            "unix:/x/y.sock",
        ] {
            assert_eq!(listen(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn locality_of_targets() {
        let lo = |t: &str| {
            let a = target(t).unwrap();
            let r = a.resolve("--target").unwrap();
            a.is_local(&r)
        };
        assert!(lo("127.0.0.1:1"));
        assert!(lo("[::1]:1"));
        assert!(lo("localhost:1"));
        assert!(lo("unix:/tmp/x.sock"));
        assert!(!lo("192.0.2.1:1"));
        assert!(!lo("[2001:db8::1]:1"));
    }

    #[test]
    fn mapped_ipv4_peers_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:5".parse().unwrap();
        assert_eq!(Peer::tcp(mapped).to_string(), "192.0.2.7:5");
        assert_eq!(Peer::Unix.ip(), None);
    }
}
