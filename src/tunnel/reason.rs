//! Which side of a tunnel something happened on, and how a tunnel ended.

use std::fmt;
use std::io;

use mio::Token;

use crate::endpoint::EndpointError;
use crate::timer::TimerClass;
use crate::tls::Refusal;

/// Which end of a tunnel something happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted connection.
    Client,
    /// The connection moat opened.
    Target,
}

impl Side {
    /// The poll token of this side's socket in tunnel `key`.
    pub fn token(self, key: usize) -> Token {
        Token(key * 2 + self as usize)
    }

    /// The tunnel key and side a token belongs to.
    pub fn from_token(token: Token) -> (usize, Self) {
        let side = if token.0.is_multiple_of(2) {
            Self::Client
        } else {
            Self::Target
        };
        (token.0 / 2, side)
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Target => "target",
        })
    }
}

/// How a tunnel ended; shown in its log line.
#[derive(Debug)]
pub enum EndReason {
    /// Both directions finished.
    Clean,
    /// Both directions finished, but a TLS peer closed TCP without `close_notify`.
    Truncated(Side),
    /// A deadline passed.
    Timeout(TimerClass),
    /// moat was shutting down and the shutdown timeout passed.
    Shutdown,
    /// The handshake budget was full and this was the longest-running handshake.
    Evicted,
    /// The TLS session failed (bad or missing certificate, protocol error, alert).
    Tls(Side, rustls::Error),
    /// The peer's certificate chains, but the allow-list turns it away.
    Refused(Side, Refusal),
    /// TCP EOF in the middle of a TLS handshake.
    HandshakeEof(Side),
    /// The target could not be reached.
    Connect(io::Error),
    /// A socket failed (reset, broken pipe).
    Io(Side, io::Error),
    /// The PROXY protocol header from the load balancer was missing, malformed or too long.
    ProxyHeader(String),
    /// The address the PROXY header named already has `--max-conns-per-ip` tunnels.
    TooManyFromPeer,
}

impl EndReason {
    /// The side that moat sent a fatal TLS alert, if any: it lingers so the alert arrives.
    pub(crate) fn alerted(&self) -> Option<Side> {
        match self {
            Self::Tls(_, rustls::Error::AlertReceived(_)) => None,
            Self::Tls(side, _) | Self::Refused(side, _) => Some(*side),
            _ => None,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clean => f.write_str("clean"),
            Self::Truncated(side) => {
                write!(f, "truncated ({side} closed TLS without close_notify)")
            }
            Self::Timeout(class) => write!(f, "{} timeout", class.name()),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Evicted => {
                f.write_str("evicted: its handshake stalled while the handshake budget was full")
            }
            Self::Tls(side, e) => write!(f, "tls error with {side}: {e}"),
            Self::Refused(side, refusal) => write!(f, "tls error with {side}: {refusal}"),
            Self::HandshakeEof(side) => write!(f, "{side} closed during the TLS handshake"),
            Self::Connect(e) => {
                write!(f, "cannot connect to target: {}", crate::error::plain_io(e))
            }
            Self::Io(side, e) => write!(f, "{side} {}", crate::error::plain_io(e)),
            Self::ProxyHeader(why) => f.write_str(why),
            Self::TooManyFromPeer => {
                f.write_str("refused: too many tunnels from this address (--max-conns-per-ip)")
            }
        }
    }
}

/// A failed TLS step, told as a refusal when moat's verifier noted one.
pub(crate) fn tls_failure(side: Side, err: EndpointError, refusal: Option<Refusal>) -> EndReason {
    match (err, refusal) {
        (EndpointError::Tls(_), Some(refusal)) => EndReason::Refused(side, refusal),
        (err, _) => failure(side, err),
    }
}

/// An end's failure as the tunnel's end.
pub(crate) fn failure(side: Side, err: EndpointError) -> EndReason {
    match err {
        EndpointError::Io(e) => EndReason::Io(side, e),
        EndpointError::Tls(e) => EndReason::Tls(side, e),
        EndpointError::EofDuringHandshake => EndReason::HandshakeEof(side),
    }
}
