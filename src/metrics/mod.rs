//! Metrics: plain counters that each poll loop owns and bumps where the event happens,
//! read by the status endpoint ([`crate::status`]) and summed over every loop when
//! rendered ([`render`]).
//!
//! Three owners, each shared by `Arc` between the thread that writes it and the status
//! endpoint that reads it:
//!
//! - [`ProcessMetrics`]: one per process, for what happens once however many loops run:
//!   configuration reloads and log lines dropped.
//! - [`LoopMetrics`]: one per poll loop (one per worker thread): refusals by cap, accept
//!   pauses, the loop's buffer pool, and the loop's services.
//! - [`ServiceMetrics`]: one per service per loop: tunnels, handshakes, bytes, timeouts.
//!
//! Values are relaxed atomics ([`instrument`]), so bumping one costs an uncontended atomic
//! add: no lock, no allocation, no formatting. The one lock is each loop's table of
//! services, taken when the loop looks a service up (at start-up and reload, never per
//! event: the loop keeps the `Arc<ServiceMetrics>` beside the service's route) and when a
//! scrape lists them. Every label value comes from a set fixed when moat is built
//! ([`labels`]) or from the configuration (service names, ALPN protocols), never from a
//! peer, so a peer cannot add series.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

use crate::timer::TimerClass;

pub mod instrument;
pub mod labels;
mod negotiated;
mod render;

pub use instrument::{Counter, Gauge, Histogram, Label, Tally};
pub use labels::{Direction, HandshakeFailure, Refusal, ReloadResult, TunnelEnd};
pub use negotiated::{AlpnTally, Negotiated, ALPN_SLOTS};
pub use render::{render, CONTENT_TYPE};

/// What one service's tunnels did on one loop.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Tunnels open now: [`ServiceMetrics::tunnel_opened`] adds one, `tunnel_closed` takes
    /// it away.
    pub tunnels_open: Gauge,
    /// Tunnels opened (accepted and set up).
    pub tunnels_opened: Counter,
    /// Tunnels closed, by how they ended.
    pub tunnels_closed: Tally<TunnelEnd>,
    /// TLS handshakes completed, on either side of a tunnel.
    pub handshakes: Counter,
    /// TLS handshakes failed, by why.
    pub handshake_failures: Tally<HandshakeFailure>,
    /// Completed handshakes that resumed an earlier session.
    pub handshakes_resumed: Counter,
    /// How long completed handshakes took, from accept (or connect) to finished.
    pub handshake_duration: Histogram,
    /// Completed handshakes by TLS version.
    pub versions: Tally<ProtocolVersion>,
    /// Completed handshakes by cipher suite.
    pub suites: Tally<CipherSuite>,
    /// Completed handshakes by key-exchange group.
    pub groups: Tally<NamedGroup>,
    /// Completed handshakes by ALPN protocol (those that agreed on one).
    pub alpn: AlpnTally,
    /// Plaintext bytes relayed, each way.
    pub plaintext_bytes: Tally<Direction>,
    /// Deadlines that fired, by kind. A connect timeout that fails over to the next target
    /// counts here without closing the tunnel.
    pub timeouts: Tally<TimerClass>,
}

impl ServiceMetrics {
    /// A tunnel was opened.
    pub fn tunnel_opened(&self) {
        self.tunnels_opened.inc();
        self.tunnels_open.inc();
    }

    /// A tunnel opened with [`ServiceMetrics::tunnel_opened`] was closed.
    pub fn tunnel_closed(&self, end: TunnelEnd) {
        self.tunnels_closed.inc(end);
        self.tunnels_open.dec();
    }

    /// A TLS handshake finished after `took`, settling on `negotiated`.
    pub fn handshake_completed(&self, negotiated: &Negotiated<'_>, took: Duration) {
        self.handshakes.inc();
        if negotiated.resumed {
            self.handshakes_resumed.inc();
        }
        self.handshake_duration.observe(took);
        if let Some(version) = negotiated.version {
            self.versions.inc(version);
        }
        if let Some(suite) = negotiated.suite {
            self.suites.inc(suite);
        }
        if let Some(group) = negotiated.group {
            self.groups.inc(group);
        }
        if let Some(protocol) = negotiated.alpn {
            self.alpn.inc(protocol);
        }
    }

    /// A TLS handshake failed.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures.inc(why);
    }

    /// Plaintext crossed the tunnel: `to_target` bytes one way, `to_client` the other.
    pub fn relayed(&self, to_target: u64, to_client: u64) {
        if to_target > 0 {
            self.plaintext_bytes.add(Direction::ToTarget, to_target);
        }
        if to_client > 0 {
            self.plaintext_bytes.add(Direction::ToClient, to_client);
        }
    }
}

/// What one poll loop did, and its services.
#[derive(Debug, Default)]
pub struct LoopMetrics {
    /// By name; a `BTreeMap` so that rendering lists them in a stable order.
    services: Mutex<BTreeMap<String, Arc<ServiceMetrics>>>,
    /// Connections turned away (or not accepted) by a cap.
    pub refusals: Tally<Refusal>,
    /// Times accepting paused after an accept error (EMFILE and the like).
    pub accept_pauses: Counter,
    /// Relay buffers lent to tunnels; the loop sets it from its pool once a turn.
    pub buffers_in_use: Gauge,
    /// Relay buffers kept for reuse; set with `buffers_in_use`.
    pub buffers_spare: Gauge,
}

impl LoopMetrics {
    /// The metrics of the service called `name`, created empty on first use. A service that
    /// stays across a reload gets the same metrics back, so its counters go on counting.
    /// Call at start-up and reload, and keep the `Arc` beside the service's route: this
    /// takes a lock.
    pub fn service(&self, name: &str) -> Arc<ServiceMetrics> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(service) = services.get(name) {
            return Arc::clone(service);
        }
        let service = Arc::new(ServiceMetrics::default());
        services.insert(name.to_owned(), Arc::clone(&service));
        service
    }

    /// Forgets the services for which `keep` says no (those a reload removed): they leave
    /// the status page. Tunnels still open on one keep counting into its `Arc`, unseen; if
    /// the name comes back, it starts from zero, which Prometheus reads as a counter reset.
    pub fn retain_services(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.retain(|name, _| keep(name));
    }

    /// The services now, by name.
    pub fn services(&self) -> Vec<(String, Arc<ServiceMetrics>)> {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect()
    }

    /// Records the state of the loop's buffer pool.
    pub fn set_buffers(&self, in_use: usize, spare: usize) {
        self.buffers_in_use
            .set(i64::try_from(in_use).unwrap_or(i64::MAX));
        self.buffers_spare
            .set(i64::try_from(spare).unwrap_or(i64::MAX));
    }
}

/// What happens once per process, however many loops run.
#[derive(Debug)]
pub struct ProcessMetrics {
    /// Configuration reloads, by result.
    pub reloads: Tally<ReloadResult>,
    /// Unix time, in seconds, of the last configuration that went into force: start-up,
    /// then each good reload.
    pub last_reload_success: Gauge,
    /// Log lines dropped because standard error could not keep up.
    pub log_lines_dropped: Counter,
}

impl ProcessMetrics {
    /// Metrics for a process whose configuration went into force at `loaded`.
    pub fn new(loaded: SystemTime) -> Self {
        let metrics = Self {
            reloads: Tally::default(),
            last_reload_success: Gauge::default(),
            log_lines_dropped: Counter::default(),
        };
        metrics.last_reload_success.set(unix_seconds(loaded));
        metrics
    }

    /// A reload put a new configuration in force at `at`.
    pub fn reload_succeeded(&self, at: SystemTime) {
        self.reloads.inc(ReloadResult::Ok);
        self.last_reload_success.set(unix_seconds(at));
    }

    /// A reload was refused; the configuration in force stays.
    pub fn reload_failed(&self) {
        self.reloads.inc(ReloadResult::Failed);
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
