//! Where a listener's connections go: how to accept them and what to connect them to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls::ServerTls;

use crate::address::SocketAddress;

/// What one listener does with the connections it accepts.
#[derive(Debug)]
pub struct Route {
    /// How this route is named in logs: `server`, `client`, `demo tls leg`, ...
    pub name: &'static str,
    /// TLS to terminate on accepted connections (server mode), or `None` for plaintext.
    pub accept_tls: Option<ServerTls>,
    /// Where the other end of the tunnel goes.
    pub target: Target,
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
