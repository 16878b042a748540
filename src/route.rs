//! Where a listener's connections go: how to accept them and what to connect them to.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

/// What one listener does with the connections it accepts.
#[derive(Debug)]
pub struct Route {
    /// How this route is named in logs: `server`, `client`, `demo tls leg`, ...
    pub name: &'static str,
    /// TLS to terminate on accepted connections (server mode), or `None` for plaintext.
    pub accept_tls: Option<Arc<ServerConfig>>,
    /// Where the other end of the tunnel goes.
    pub target: Target,
}

/// The far end of a route's tunnels.
#[derive(Debug)]
pub enum Target {
    /// A TCP service, reached over plain TCP or TLS.
    Tcp {
        /// Addresses resolved at start-up; connections take them in turn.
        addrs: Vec<SocketAddr>,
        /// TLS to open towards the target (client mode), or `None` for plaintext.
        tls: Option<TargetTls>,
        /// Round-robin position in `addrs`.
        next: Cell<usize>,
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
    /// A TCP target over `addrs`, with optional TLS.
    pub fn tcp(addrs: Vec<SocketAddr>, tls: Option<TargetTls>) -> Self {
        Self::Tcp {
            addrs,
            tls,
            next: Cell::new(0),
        }
    }

    /// How many addresses there are to try.
    pub fn addr_count(&self) -> usize {
        match self {
            Self::Tcp { addrs, .. } => addrs.len(),
            Self::Mirror => 0,
        }
    }

    /// The address the next connection should dial.
    pub fn next_addr(&self) -> Option<SocketAddr> {
        let Self::Tcp { addrs, next, .. } = self else {
            return None;
        };
        let addr = *addrs.get(next.get() % addrs.len().max(1))?;
        next.set(next.get().wrapping_add(1));
        Some(addr)
    }
}
