//! Who may come in, and when: keeping moat within its resources when clients push.
//!
//! - the connection cap (`--max-conns`) and the per-address cap (`--max-conns-per-ip`)
//!   hold for the whole process, across worker threads ([`Shared`]): an atomic count and a
//!   sharded table, touched once per accept and once per close, never per byte;
//! - the handshake budget (`--max-handshakes`) is split between the workers, each of which
//!   keeps its handshakes in two time-ordered lists and evicts the stalest at the budget;
//! - accept errors pause accepting instead of spinning;
//! - every refusal is counted, and logged at most once per interval ([`LogLimiter`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
pub type Handshakes = KeyLists;

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

/// How long to stop accepting after an accept error such as EMFILE: long enough for
/// tunnels to end and free descriptors, short enough that clients barely notice.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// At most one line per this interval for each kind of repeated warning.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// One worker's share of admission: its handshake budget and lists, accept pauses, and the
/// process-wide caps it holds with the other workers.
#[derive(Debug)]
pub struct Admission {
    shared: Arc<Shared>,
    /// This worker's part of `--max-handshakes`.
    max_handshakes: usize,
    /// Handshakes in flight, by stage.
    handshakes: Handshakes,
    paused_until: Option<Instant>,
    at_cap: bool,
    evicted: u64,
    eviction_warnings: LogLimiter,
    accept_warnings: LogLimiter,
}

impl Admission {
    /// A worker's admission under `shared` caps, with `max_handshakes` of the budget.
    pub fn new(shared: Arc<Shared>, max_handshakes: usize) -> Self {
        Self {
            shared,
            max_handshakes: max_handshakes.max(1),
            handshakes: Handshakes::new(2),
            paused_until: None,
            at_cap: false,
            evicted: 0,
            eviction_warnings: LogLimiter::new(WARNING_INTERVAL),
            accept_warnings: LogLimiter::new(WARNING_INTERVAL),
        }
    }

    /// The process-wide part.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A new share of the handshake budget (reload).
    pub fn set_max_handshakes(&mut self, max: usize) {
        self.max_handshakes = max.max(1);
    }

    /// Whether accepting is paused after an accept error; ends the pause once it is over.
    pub fn paused(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(until) if now < until => true,
            _ => {
                self.paused_until = None;
                false
            }
        }
    }

    /// When a pause ends, for the poll timeout.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// An accept failed with `err` (EMFILE, ENFILE, ENOBUFS, ENOMEM): retrying at once
    /// would spin, so accepting pauses for [`ACCEPT_PAUSE`].
    pub fn accept_failed(&mut self, err: &std::io::Error, now: Instant) {
        if let Some(held_back) = self.accept_warnings.allow(now) {
            log::warn!(
                "accept failed: {}; pausing accepts for {ACCEPT_PAUSE:?} \
                 ({held_back} more since the last such line)",
                crate::error::plain_io(err)
            );
        }
        self.paused_until = Some(now + ACCEPT_PAUSE);
    }

    /// Takes a place under `--max-conns` before an accept; logs when the cap is reached or
    /// left.
    pub fn reserve(&mut self) -> bool {
        let reserved = self.shared.reserve();
        if reserved == self.at_cap {
            self.at_cap = !reserved;
            if reserved {
                log::info!("below the connection cap again: accepting");
            } else {
                log::warn!(
                    "connection cap reached ({} tunnels): new connections wait in the listen \
                     backlog",
                    self.shared.open()
                );
            }
        }
        reserved
    }

    /// Whether the process is at `--max-conns` (as this worker last found it).
    pub fn at_cap(&self) -> bool {
        self.at_cap
    }

    /// What the budget says about admitting one more handshake.
    pub fn handshake_room(&self, now: Instant) -> HandshakeRoom {
        handshake_room(self.max_handshakes, &self.handshakes, now)
    }

    /// Keeps the budget's lists in step with tunnel `key`, whose handshake is at `stage`
    /// (`None`: done, or never had one).
    pub fn track(
        &mut self,
        key: usize,
        stage: Option<HandshakeStage>,
        progressed: bool,
        now: Instant,
    ) {
        match stage {
            None => {
                self.handshakes.remove(key);
            }
            // A hello's place is its accept time: stray bytes do not buy time.
            Some(stage)
                if self.handshakes.list_of(key) == Some(stage.list())
                    && !(progressed && stage == HandshakeStage::Answered) => {}
            Some(stage) => self.handshakes.push_back(key, stage.list(), now),
        }
    }

    /// Takes `key` out of the budget.
    pub fn forget(&mut self, key: usize) {
        self.handshakes.remove(key);
    }

    /// Counts and logs (rate-limited) the eviction of the stalest handshake.
    pub fn note_eviction(&mut self, now: Instant) {
        self.evicted += 1;
        if let Some(held_back) = self.eviction_warnings.allow(now) {
            log::warn!(
                "handshake budget full ({} in flight, --max-handshakes): evicting the \
                 stalest; {} evicted so far, {held_back} since the last such line",
                self.max_handshakes,
                self.evicted
            );
        }
    }
}

/// What every worker of the process shares to hold the process-wide caps.
#[derive(Debug)]
pub struct Shared {
    /// Tunnels open in the whole process, lingering ones included (each holds a descriptor).
    open: AtomicUsize,
    max_conns: AtomicUsize,
    /// Some worker stopped accepting at the cap and waits to be woken.
    waiting: AtomicBool,
    /// A shutdown has begun: the last tunnel to end wakes every worker, so that the one
    /// hosting the status endpoint, which stays while any tunnel drains, can stop too.
    draining: AtomicBool,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    per_ip: PerIpTable,
    /// Lines for tunnels that never got established, for the whole process.
    unestablished_lines: Mutex<LogLimiter>,
}

/// Lines per [`WARNING_INTERVAL`] for tunnels that ended before they were established.
const UNESTABLISHED_BURST: u32 = 20;

impl Shared {
    /// Caps for the process: `max_conns` tunnels, `max_per_ip` from one address.
    pub fn new(max_conns: usize, max_per_ip: Option<usize>) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max_conns: AtomicUsize::new(max_conns),
            waiting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            per_ip: PerIpTable::new(max_per_ip),
            unestablished_lines: Mutex::new(LogLimiter::with_burst(
                WARNING_INTERVAL,
                UNESTABLISHED_BURST,
            )),
        }
    }

    /// Whether to log the end of a tunnel that was never established (refused, timed out,
    /// evicted): what a flood is made of, so only a burst per interval is logged, for the
    /// whole process. If so, also how many were held back before it.
    pub fn allow_unestablished_line(&self, now: Instant) -> Option<u64> {
        self.unestablished_lines.lock().ok()?.allow(now)
    }

    /// Adds a worker to wake when room frees up at the cap.
    pub fn add_waker(&self, waker: Arc<mio::Waker>) {
        if let Ok(mut wakers) = self.wakers.lock() {
            wakers.push(waker);
        }
    }

    /// New caps, from a reload.
    pub fn set_caps(&self, max_conns: usize, max_per_ip: Option<usize>) {
        self.max_conns.store(max_conns, Ordering::Relaxed);
        self.per_ip
            .max
            .store(max_per_ip.unwrap_or(0), Ordering::Relaxed);
    }

    /// `--max-conns`.
    pub fn max(&self) -> usize {
        self.max_conns.load(Ordering::Relaxed)
    }

    /// Tunnels open in the process.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a place under `--max-conns` for one more tunnel, or says the process is at the
    /// cap (and that this worker waits for room).
    pub fn reserve(&self) -> bool {
        let max = self.max_conns.load(Ordering::Relaxed);
        if self.open.fetch_add(1, Ordering::AcqRel) < max {
            return true;
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.waiting.store(true, Ordering::Release);
        false
    }

    /// Gives a place back (a tunnel ended, or an accept found nobody); wakes the workers
    /// waiting at the cap.
    pub fn release(&self) {
        // SeqCst with `drain`'s: either this sees the drain begun, or `drain`'s caller
        // sees this tunnel gone.
        let last_out =
            self.open.fetch_sub(1, Ordering::SeqCst) == 1 && self.draining.load(Ordering::SeqCst);
        if self.waiting.swap(false, Ordering::AcqRel) || last_out {
            if let Ok(wakers) = self.wakers.lock() {
                for waker in wakers.iter() {
                    let _ = waker.wake();
                }
            }
        }
    }

    /// A shutdown has begun; says whether any tunnel is still open in the process.
    pub fn drain(&self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.open.load(Ordering::SeqCst) > 0
    }

    /// Counts a tunnel from `ip` under `--max-conns-per-ip`, or refuses it.
    pub fn admit_ip(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        self.per_ip.admit(ip, now)
    }

    /// Forgets a tunnel from `ip` that ended.
    pub fn release_ip(&self, ip: Option<IpAddr>) {
        self.per_ip.release(ip);
    }

    /// Connections refused by the per-address cap so far.
    pub fn refused_per_ip(&self) -> u64 {
        self.per_ip.refused.load(Ordering::Relaxed)
    }
}

/// Shards of the per-address table: enough that workers rarely meet on one lock.
const SHARDS: usize = 16;

/// Concurrent tunnels per source address, for `--max-conns-per-ip`, shared by the workers.
#[derive(Debug)]
struct PerIpTable {
    /// The cap; 0 for none.
    max: AtomicUsize,
    shards: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    refused: AtomicU64,
    warnings: Mutex<LogLimiter>,
}

impl PerIpTable {
    fn new(max: Option<usize>) -> Self {
        Self {
            max: AtomicUsize::new(max.unwrap_or(0)),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: std::collections::hash_map::RandomState::new(),
            refused: AtomicU64::new(0),
            warnings: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let index = (self.hasher.hash_one(ip) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// Counts a new tunnel from `ip`, or refuses it (logged at most once per interval). A
    /// peer without an address (a unix socket) is not counted.
    fn admit(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        let Some(ip) = ip.filter(|_| max > 0) else {
            return true;
        };
        let Ok(mut shard) = self.shard(&ip).lock() else {
            return true;
        };
        let open = shard.entry(ip).or_insert(0);
        if *open < max {
            *open += 1;
            return true;
        }
        drop(shard);
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let allowed = self.warnings.lock().ok().and_then(|mut w| w.allow(now));
        if let Some(held_back) = allowed {
            log::warn!(
                "refused a connection from {ip}: {max} already open from it (--max-conns-per-ip); \
                 {refused} refused so far, {held_back} since the last such line"
            );
        }
        false
    }

    /// Forgets a tunnel from `ip` that has ended.
    fn release(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let Ok(mut shard) = self.shard(&ip).lock() else {
            return;
        };
        if let Some(open) = shard.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_reserved_before_accepting_and_given_back() {
        let shared = Shared::new(2, None);
        assert!(shared.reserve() && shared.reserve());
        assert!(!shared.reserve(), "a third place past the cap");
        assert_eq!(shared.open(), 2);
        shared.release();
        assert!(shared.reserve());
    }

    #[test]
    fn per_address_counts_hold_across_callers_and_forget_closed_tunnels() {
        let shared = Shared::new(10, Some(2));
        let now = Instant::now();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let b: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        assert!(shared.admit_ip(a, now) && shared.admit_ip(a, now));
        assert!(!shared.admit_ip(a, now));
        assert!(shared.admit_ip(b, now));
        assert!(shared.admit_ip(None, now), "unix peers are not counted");
        shared.release_ip(a);
        assert!(shared.admit_ip(a, now));
        assert_eq!(shared.refused_per_ip(), 1);
    }
}
