//! `--trace` and `--trace-peer`: the poll model, event by event, for the tunnels chosen.
//!
//! For a traced tunnel moat logs one line per readiness event the poll reports, per socket
//! call that did something (bytes, `WouldBlock`, EOF, an error), per state rustls' unbuffered
//! API hands over (records to send, records read, the handshake's end, close_notify, alerts,
//! key updates), per buffer taken from or given back to the pool, and per deadline armed,
//! moved or fired. docs/ARCHITECTURE.md walks through one such trace.
//!
//! It costs nothing when off: a tunnel that is not traced carries no tag, and every trace
//! point is one test of an `Option` before anything is formatted.

use std::fmt;
use std::net::IpAddr;

use crate::config::Trace;

/// Marks what belongs to a traced tunnel: its id, and which of its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The tunnel's id.
    pub tunnel: u64,
    /// `client` or `target`.
    pub side: &'static str,
}

impl Tag {
    /// Logs one trace line about this tunnel.
    pub fn line(self, what: fmt::Arguments<'_>) {
        let (space, side) = if self.side.is_empty() {
            ("", "")
        } else {
            (" ", self.side)
        };
        log::info!(tunnel = self.tunnel; "trace tunnel {}{space}{side}: {what}", self.tunnel);
    }
}

/// Whether a tunnel from `peer` is traced.
pub fn wanted(trace: &Trace, peer: Option<IpAddr>) -> bool {
    match trace {
        Trace::Off => false,
        Trace::All => true,
        Trace::Peers(ips) => peer.is_some_and(|ip| ips.contains(&ip)),
    }
}

/// One socket call's outcome, as a trace line shows it.
pub fn io_outcome(call: &str, asked: usize, result: &std::io::Result<usize>) -> String {
    match result {
        Ok(0) if call == "read" && asked > 0 => "read: EOF".to_owned(),
        Ok(n) => format!("{call} {n} of {asked} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => format!("{call}: WouldBlock"),
        Err(e) => format!("{call}: {}", crate::error::plain_io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_chosen_by_address() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!wanted(&Trace::Off, Some(ip)));
        assert!(wanted(&Trace::All, None));
        assert!(wanted(&Trace::Peers(vec![ip]), Some(ip)));
        assert!(!wanted(&Trace::Peers(vec![ip]), None));
    }

    #[test]
    fn outcomes_read_as_sentences() {
        let would_block = Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        assert_eq!(io_outcome("read", 10, &Ok(0)), "read: EOF");
        assert_eq!(io_outcome("write", 10, &Ok(4)), "write 4 of 10 bytes");
        assert_eq!(io_outcome("read", 10, &would_block), "read: WouldBlock");
    }
}
