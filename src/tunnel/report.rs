//! A tunnel's one line at its end: who, what TLS negotiated, how much crossed, how long,
//! and how it ended — as text or JSON (`--log-format`), with the peer's fields made safe.

use std::time::Instant;

use rustls::ProtocolVersion;

use super::{EndReason, Tunnel, Upstream};
use crate::log_format::TunnelRecord;
use crate::logger;
use crate::timer::TimerClass;

impl Tunnel {
    /// The tunnel's one log line at its end.
    pub fn log_end(&self, reason: &EndReason, now: Instant) {
        let level = match reason {
            EndReason::Clean | EndReason::Truncated(_) | EndReason::Timeout(TimerClass::Idle) => {
                log::Level::Info
            }
            _ => log::Level::Warn,
        };
        if level > log::max_level() {
            return;
        }
        // The TLS leg described is the client's in server mode, the target's in client mode.
        let tls = match &self.up {
            Upstream::Open(up) if self.down.negotiated().is_none() => up.negotiated(),
            _ => self.down.negotiated(),
        }
        .filter(|n| n.version.is_some());
        let subject = self.subject();
        let (to_target, to_client) = self.bytes();
        let record = TunnelRecord {
            tunnel: self.id,
            service: &self.route.name,
            peer: Some(&self.peer),
            subject: subject.as_deref(),
            sni: self.sni.as_deref(),
            alpn: tls.as_ref().and_then(|n| n.alpn),
            tls_version: tls.as_ref().map(|n| match n.version {
                Some(ProtocolVersion::TLSv1_3) => "1.3",
                Some(ProtocolVersion::TLSv1_2) => "1.2",
                _ => "other",
            }),
            suite: tls.as_ref().and_then(|n| n.suite),
            group: tls.as_ref().and_then(|n| n.group),
            resumed: tls.as_ref().map(|n| n.resumed),
            to_target,
            to_client,
            duration: now.saturating_duration_since(self.started),
            end: reason,
        };
        logger::tunnel_closed(level, &record);
    }
}
