//! Keeping moat within its resources when clients push: per-address caps, the handshake
//! budget, and log lines that cannot flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::key_list::KeyLists;

/// Lets at most `burst` lines through per `interval`, counting what it held back, so a
/// flood costs a few log lines per interval instead of one per event.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    burst: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self::with_burst(interval, 1)
    }

    /// A limiter allowing `burst` lines per `interval`.
    pub const fn with_burst(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            window: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, also how many occurrences were held back before it.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let window_over = self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if window_over {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How far a handshake in flight has come, for the handshake budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// Accepted, and the client's hello not yet answered. A real client sends its hello
    /// right behind the TCP handshake, so one still here after [`HELLO_GRACE`] is silent or
    /// trickling.
    Hello,
    /// The hello was answered (or, towards a target, sent); now waiting on round trips.
    Answered,
}

/// The lists of the handshake budget, one per [`HandshakeStage`].
pub type Handshakes = KeyLists<2>;

impl HandshakeStage {
    /// This stage's list in [`Handshakes`].
    pub fn list(self) -> usize {
        self as usize
    }
}

/// How long an accepted client may take to deliver its hello before it counts as stalled.
pub const HELLO_GRACE: Duration = Duration::from_millis(10);

/// How long a handshake past the hello may go without progress before it counts as stalled:
/// longer than any real round trip.
pub const HANDSHAKE_STALL: Duration = Duration::from_secs(1);

/// What the handshake budget says about admitting one more connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRoom {
    /// Under budget.
    Free,
    /// At budget, but this tunnel's handshake has stalled and may be evicted for it.
    Evict(usize),
    /// At budget and every handshake is progressing: accept nothing until this instant.
    FullUntil(Instant),
}

/// Decides whether a newcomer fits the budget of `max` handshakes.
///
/// The stalest handshake makes room: first the oldest that has not delivered its hello
/// within [`HELLO_GRACE`] (silent and trickling clients), then the one longest without
/// progress past the hello, once that has lasted [`HANDSHAKE_STALL`]. Only when every
/// handshake in flight is progressing does accepting wait.
pub fn handshake_room(max: usize, handshakes: &Handshakes, now: Instant) -> HandshakeRoom {
    let in_flight = handshakes.len(HandshakeStage::Hello.list())
        + handshakes.len(HandshakeStage::Answered.list());
    if in_flight < max {
        return HandshakeRoom::Free;
    }
    let stalled_at = |stage: HandshakeStage, grace: Duration| {
        handshakes
            .head(stage.list())
            .map(|(key, since)| (key, since + grace))
    };
    let candidates = [
        stalled_at(HandshakeStage::Hello, HELLO_GRACE),
        stalled_at(HandshakeStage::Answered, HANDSHAKE_STALL),
    ];
    if let Some((key, _)) = candidates.iter().flatten().find(|(_, at)| *at <= now) {
        return HandshakeRoom::Evict(*key);
    }
    match candidates.iter().flatten().map(|(_, at)| *at).min() {
        Some(at) => HandshakeRoom::FullUntil(at),
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

    /// Counts a new tunnel from `ip`, or refuses it (logged at most once per interval). A
    /// peer without an address (a unix socket) is not counted.
    pub fn admit(&mut self, ip: Option<IpAddr>, now: Instant) -> bool {
        let (Some(max), Some(ip)) = (self.max, ip) else {
            return true;
        };
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
    pub fn release(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if let Some(open) = self.open.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&ip);
            }
        }
    }
}
