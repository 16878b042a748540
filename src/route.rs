//! Where a listener's connections go: how to accept them and what to connect them to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::address::SocketAddress;
use crate::config::{ProxyVersion, Timeouts};
use crate::timer::{TimerClass, LINGER_TIME};
use crate::tls::ServerTls;

/// What one service does with the connections it accepts. Built at start-up and at
/// reload, then shared: each tunnel keeps the route it started with, so a reload changes
/// nothing for the tunnels already open.
#[derive(Debug)]
pub struct Route {
    /// The service's name in logs and metrics: `server`, `redis`, `demo tls leg`, ...
    pub name: Arc<str>,
    /// TLS to terminate on accepted connections (server mode), or `None` for plaintext.
    pub accept_tls: Option<ServerTls>,
    /// Where the other end of the tunnel goes.
    pub target: Target,
    /// The deadlines of its tunnels.
    pub timeouts: Timeouts,
    /// Read a PROXY header first, within this long (`--accept-proxy`).
    pub accept_proxy: Option<Duration>,
    /// Send a PROXY header to the target (`--proxy-protocol`).
    pub proxy_protocol: Option<ProxyVersion>,
}

impl Route {
    /// A route with the default deadlines and no PROXY protocol.
    pub fn new(name: &str, accept_tls: Option<ServerTls>, target: Target) -> Self {
        Self {
            name: name.into(),
            accept_tls,
            target,
            timeouts: Timeouts::default(),
            accept_proxy: None,
            proxy_protocol: None,
        }
    }

    /// The application protocols this service's TLS side offers (server mode) or asks
    /// for (client mode), most preferred first.
    pub fn alpn_protocols(&self) -> &[Vec<u8>] {
        if let Some(tls) = &self.accept_tls {
            return &tls.config.alpn_protocols;
        }
        match &self.target {
            Target::Remote { tls: Some(tls), .. } => &tls.config.alpn_protocols,
            _ => &[],
        }
    }

    /// How long its tunnels may stay in `class`.
    pub fn deadline(&self, class: TimerClass) -> Duration {
        match class {
            TimerClass::Handshake => self.timeouts.handshake,
            TimerClass::Connect => self.timeouts.connect,
            TimerClass::Idle => self.timeouts.idle,
            TimerClass::Close => self.timeouts.close,
            TimerClass::Linger => LINGER_TIME,
            TimerClass::Proxy => self.accept_proxy.unwrap_or(LINGER_TIME),
        }
    }
}

/// The far end of a route's tunnels.
#[derive(Debug)]
pub enum Target {
    /// A service reached over TCP or a unix socket, in plaintext or TLS.
    Remote {
        /// Addresses resolved at start-up (or reload); connections take them in turn.
        addrs: Vec<SocketAddress>,
        /// TLS to open towards the target (client mode), or `None` for plaintext.
        tls: Option<TargetTls>,
        /// Round-robin position in `addrs` (shared by every worker thread).
        next: AtomicUsize,
    },
    /// An echo inside moat (the demo's backend).
    Mirror,
}

/// TLS towards a target: the client configuration and the name to verify.
#[derive(Debug)]
pub struct TargetTls {
    /// Trust anchors, client certificate, resumption cache.
    pub config: Arc<ClientConfig>,
    /// Name checked against the target's certificate (and sent as SNI when a DNS name).
    pub server_name: ServerName<'static>,
}

impl Target {
    /// A target over `addrs`, with optional TLS.
    pub fn remote(addrs: Vec<SocketAddress>, tls: Option<TargetTls>) -> Self {
        Self::Remote {
            addrs,
            tls,
            next: AtomicUsize::new(0),
        }
    }

    /// How many addresses there are to try.
    pub fn addr_count(&self) -> usize {
        match self {
            Self::Remote { addrs, .. } => addrs.len(),
            Self::Mirror => 0,
        }
    }

    /// Where a new tunnel starts in the list of addresses: the round-robin turn.
    pub fn first_turn(&self) -> usize {
        let Self::Remote { next, .. } = self else {
            return 0;
        };
        next.fetch_add(1, Ordering::Relaxed)
    }

    /// The address for attempt `attempt` of a tunnel whose turn is `first`: each tunnel
    /// walks the list from its own starting point, so its failover tries every address
    /// once however other tunnels interleave.
    pub fn addr(&self, first: usize, attempt: usize) -> Option<&SocketAddress> {
        let Self::Remote { addrs, .. } = self else {
            return None;
        };
        addrs.get(first.wrapping_add(attempt) % addrs.len().max(1))
    }
}
