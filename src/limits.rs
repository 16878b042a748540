//! Keeping moat within its resources when clients push: per-address caps, the handshake
//! budget, and log lines that cannot flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Lets a warning through at most once per `interval`, counting what it held back, so a
/// flood of refusals costs one log line per interval instead of one per event.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, also how many occurrences were held back since the last line.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_refuse_only_the_crowded_address() {
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let now = Instant::now();
        let mut count = PerIpCount::new(Some(2));
        assert!(count.admit(a, now) && count.admit(a, now));
        assert!(!count.admit(a, now));
        assert!(count.admit(b, now));
        count.release(a);
        assert!(count.admit(a, now));
        assert!(PerIpCount::new(None).admit(a, now));
    }

    #[test]
    fn the_handshake_budget_evicts_only_stale_handshakes() {
        let t0 = Instant::now();
        let later = t0 + STALE_HANDSHAKE;
        assert_eq!(handshake_room(2, 1, Some((7, t0)), t0), HandshakeRoom::Free);
        assert_eq!(
            handshake_room(2, 2, Some((7, t0)), t0),
            HandshakeRoom::FullUntil(later)
        );
        assert_eq!(
            handshake_room(2, 2, Some((7, t0)), later),
            HandshakeRoom::Evict(7)
        );
    }

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}

/// A handshake that has lasted this long is not one a real client needs: when the handshake
/// budget is full, the oldest such handshake makes room for a newcomer.
pub const STALE_HANDSHAKE: Duration = Duration::from_secs(1);

/// What the handshake budget says about admitting one more connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRoom {
    /// Under budget.
    Free,
    /// At budget, but this tunnel (the oldest handshake, stale) may be evicted for it.
    Evict(usize),
    /// At budget and every handshake is young: accept nothing until this instant.
    FullUntil(Instant),
}

/// Decides, from the handshakes in flight, whether a newcomer fits.
pub fn handshake_room(
    max: usize,
    in_flight: usize,
    oldest: Option<(usize, Instant)>,
    now: Instant,
) -> HandshakeRoom {
    match oldest {
        _ if in_flight < max => HandshakeRoom::Free,
        Some((key, since)) if now.saturating_duration_since(since) >= STALE_HANDSHAKE => {
            HandshakeRoom::Evict(key)
        }
        Some((_, since)) => HandshakeRoom::FullUntil(since + STALE_HANDSHAKE),
        None => HandshakeRoom::Free,
    }
}

/// Concurrent tunnels per source address, for `--max-conns-per-ip`.
#[derive(Debug)]
pub struct PerIpCount {
    max: Option<usize>,
    open: HashMap<IpAddr, usize>,
    refused: u64,
    warnings: LogLimiter,
}

impl PerIpCount {
    /// Counts against `max` tunnels per address (`None`: count nothing, refuse nothing).
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            open: HashMap::new(),
            refused: 0,
            warnings: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Counts a new tunnel from `ip`, or refuses it (logged at most once per interval).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(max) = self.max else { return true };
        let open = self.open.entry(ip).or_insert(0);
        if *open < max {
            *open += 1;
            return true;
        }
        self.refused += 1;
        if let Some(held_back) = self.warnings.allow(now) {
            log::warn!(
                "refused a connection from {ip}: {max} already open from it (--max-conns-per-ip); \
                 {} refused so far, {held_back} since the last such line",
                self.refused
            );
        }
        false
    }

    /// Forgets a tunnel from `ip` that has ended.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(open) = self.open.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&ip);
            }
        }
    }
}
