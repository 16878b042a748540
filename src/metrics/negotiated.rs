//! What a finished handshake settled on ([`Negotiated`]), and the one label set that is not
//! fixed when moat is built: the ALPN protocols, named from each service's own list.

use std::sync::OnceLock;

use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

use super::instrument::Counter;
use super::labels::OTHER;

/// ALPN protocols a service may count by name; more than this share `other`.
pub const ALPN_SLOTS: usize = 8;

/// Handshakes by negotiated ALPN protocol, as the `protocol` label.
///
/// Names come from the service's configured list: given slots ahead of use by
/// [`AlpnTally::configure`], so they show with zero counts, or on the first handshake that
/// negotiates them — which is safe because rustls only ever negotiates a protocol of moat's
/// own list (server mode picks from `--alpn`; client mode refuses a server's pick it did
/// not offer). A name, once given a slot, keeps it for the life of the process, so the
/// counts survive a reload that drops and re-adds it; past [`ALPN_SLOTS`] names, the rest
/// count as `other`.
#[derive(Debug, Default)]
pub struct AlpnTally {
    names: [OnceLock<Box<[u8]>>; ALPN_SLOTS],
    counts: [Counter; ALPN_SLOTS],
    other: Counter,
}

impl AlpnTally {
    /// Gives each protocol of a service's configured list a slot, if it has none yet.
    pub fn configure(&self, protocols: &[Vec<u8>]) {
        for protocol in protocols {
            self.name(protocol);
        }
    }

    /// Counts one handshake that negotiated `protocol` (one of the configured list, as
    /// rustls guarantees), naming it first if it has no slot yet.
    pub fn inc(&self, protocol: &[u8]) {
        match self.name(protocol).and_then(|slot| self.counts.get(slot)) {
            Some(counter) => counter.inc(),
            None => self.other.inc(),
        }
    }

    /// Each named protocol with its count, in slot order, then `other`.
    pub fn counts(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.names
            .iter()
            .zip(&self.counts)
            .filter_map(|(name, count)| Some((name.get()?.as_ref(), count.get())))
            .chain([(OTHER.as_bytes(), self.other.get())])
    }

    /// The slot of `protocol`, given it in the first empty one if it has none; `None` when
    /// all are taken, or for a protocol named "other", which would be mistaken for the
    /// catch-all and counts there.
    fn name(&self, protocol: &[u8]) -> Option<usize> {
        if protocol == OTHER.as_bytes() {
            return None;
        }
        if let Some(slot) = self.slot_of(protocol) {
            return Some(slot);
        }
        let slot = self.names.iter().position(|n| n.get().is_none())?;
        // Only the loop that owns the tally names; `set` cannot find the slot taken.
        let _ = self
            .names
            .get(slot)?
            .set(protocol.to_vec().into_boxed_slice());
        self.slot_of(protocol)
    }

    fn slot_of(&self, protocol: &[u8]) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n.get().is_some_and(|name| **name == *protocol))
    }
}

/// What a finished TLS handshake settled on, read from rustls' connection state
/// ([`Negotiated::of`]) and counted by `ServiceMetrics::handshake_completed`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated<'a> {
    /// The TLS version.
    pub version: Option<ProtocolVersion>,
    /// The cipher suite.
    pub suite: Option<CipherSuite>,
    /// The key-exchange group (none for a TLS 1.2 resumption).
    pub group: Option<NamedGroup>,
    /// The ALPN protocol, if one was agreed.
    pub alpn: Option<&'a [u8]>,
    /// Whether the session was resumed rather than established afresh.
    pub resumed: bool,
}

impl<'a> Negotiated<'a> {
    /// Reads the outcome of a finished handshake from its connection.
    pub fn of(conn: &'a rustls::CommonState) -> Self {
        Self {
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            group: conn.negotiated_key_exchange_group().map(|g| g.name()),
            alpn: conn.alpn_protocol(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_names_protocols_as_configured_or_negotiated_and_keeps_their_slots() {
        let alpn = AlpnTally::default();
        alpn.configure(&[b"h2".to_vec(), b"http/1.1".to_vec()]);
        alpn.inc(b"h2");
        // Negotiated before any `configure` told of it (the list comes from --alpn).
        alpn.inc(b"smtp");
        alpn.inc(b"other");
        // A reload that drops http/1.1 and adds redis keeps h2's count and slot.
        alpn.configure(&[b"h2".to_vec(), b"redis".to_vec()]);
        alpn.inc(b"h2");
        alpn.inc(b"redis");
        let counts: Vec<(&[u8], u64)> = alpn.counts().collect();
        assert_eq!(
            counts,
            [
                (&b"h2"[..], 2),
                (b"http/1.1", 0),
                (b"smtp", 1),
                (b"redis", 1),
                (b"other", 1)
            ]
        );
        let many: Vec<Vec<u8>> = (0..20).map(|i| format!("p{i}").into_bytes()).collect();
        alpn.configure(&many);
        assert_eq!(alpn.counts().count(), ALPN_SLOTS + 1);
        alpn.inc(b"p19");
        assert_eq!(
            alpn.counts().last(),
            Some((&b"other"[..], 2)),
            "no slot left"
        );
    }
}
