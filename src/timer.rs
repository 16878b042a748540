//! Deadlines for every tunnel at O(1) per operation, with no scan over tunnels.
//!
//! Each kind of deadline ([`TimerClass`]) has one duration, so a tunnel's deadline in a class
//! is `since + duration`, and ordering tunnels by `since` orders them by deadline. Each class
//! is therefore an intrusive doubly linked list kept in `since` order:
//!
//! - entering a class appends at the tail (its `since` is now, the latest there is);
//! - activity in a *sliding* class (idle, close) moves the tunnel to the tail;
//! - the head of each list is its earliest deadline, so the poll timeout is the earliest of
//!   five heads, and expiry pops heads until one lies in the future.
//!
//! The lists themselves are [`KeyLists`]: links in a `Vec` indexed by slab key, so no
//! operation allocates once the vector has grown to the peak number of tunnels.

use std::time::{Duration, Instant};

use crate::config::Timeouts;
use crate::key_list::KeyLists;

/// The deadlines of a tunnel's life; a tunnel is in at most one class at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerClass {
    /// A TLS handshake must finish within this time of starting (fixed).
    Handshake,
    /// The TCP connect to the target must finish within this time (fixed).
    Connect,
    /// Bytes must move in some direction within this time (sliding).
    Idle,
    /// After one direction has finished, bytes must move within this time (sliding).
    Close,
    /// After a failure, how long an end may drain what its peer still sends before it is
    /// closed (fixed: [`LINGER_TIME`]).
    Linger,
}

/// How long a failed end lingers (see [`TimerClass::Linger`]): long enough for a peer that
/// was sent a fatal alert to read it and close, short enough that a flood of failing
/// handshakes cannot hold many descriptors.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

impl TimerClass {
    const ALL: [Self; 5] = [
        Self::Handshake,
        Self::Connect,
        Self::Idle,
        Self::Close,
        Self::Linger,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Whether activity pushes the deadline back.
    fn slides(self) -> bool {
        matches!(self, Self::Idle | Self::Close)
    }

    /// The name used in logs: `handshake timeout`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Connect => "connect",
            Self::Idle => "idle",
            Self::Close => "close",
            Self::Linger => "linger",
        }
    }
}

/// All tunnels' deadlines; see the module documentation.
#[derive(Debug)]
pub struct Timers {
    durations: [Duration; 5],
    lists: KeyLists<5>,
}

impl Timers {
    /// Empty timers with the configured durations.
    pub fn new(timeouts: &Timeouts) -> Self {
        Self {
            durations: [
                timeouts.handshake,
                timeouts.connect,
                timeouts.idle,
                timeouts.close,
                LINGER_TIME,
            ],
            lists: KeyLists::default(),
        }
    }

    /// The class `key` is in, if any.
    pub fn class_of(&self, key: usize) -> Option<TimerClass> {
        self.lists
            .list_of(key)
            .and_then(|i| TimerClass::ALL.get(i).copied())
    }

    /// Puts `key` in `class`, starting its clock at `now` (leaving any class it was in).
    pub fn set(&mut self, key: usize, class: TimerClass, now: Instant) {
        self.lists.push_back(key, class.index(), now);
    }

    /// Records activity: in a sliding class the deadline moves to `now + duration`.
    pub fn touch(&mut self, key: usize, now: Instant) {
        if let Some(class) = self.class_of(key).filter(|c| c.slides()) {
            self.lists.push_back(key, class.index(), now);
        }
    }

    /// Takes `key` out of whatever class it is in.
    pub fn remove(&mut self, key: usize) {
        self.lists.remove(key);
    }

    /// The earliest deadline of all, if any tunnel has one.
    pub fn next_deadline(&self) -> Option<Instant> {
        TimerClass::ALL
            .iter()
            .filter_map(|&c| self.head_deadline(c))
            .min()
    }

    /// Removes and returns one tunnel whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(usize, TimerClass)> {
        let class = TimerClass::ALL
            .into_iter()
            .find(|&c| self.head_deadline(c).is_some_and(|d| d <= now))?;
        let (key, _) = self.lists.head(class.index())?;
        self.lists.remove(key);
        Some((key, class))
    }

    fn head_deadline(&self, class: TimerClass) -> Option<Instant> {
        let (_, since) = self.lists.head(class.index())?;
        Some(since + self.durations[class.index()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers::new(&Timeouts {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            close: Duration::from_secs(30),
            shutdown: Duration::from_secs(1),
        })
    }

    #[test]
    fn heads_expire_in_deadline_order_across_classes() {
        let mut t = timers();
        let t0 = Instant::now();
        t.set(0, TimerClass::Idle, t0);
        t.set(1, TimerClass::Handshake, t0);
        t.set(2, TimerClass::Connect, t0 + Duration::from_secs(1));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(6)));
        let later = t0 + Duration::from_secs(61);
        let order: Vec<_> = std::iter::from_fn(|| t.pop_expired(later)).collect();
        assert_eq!(order.len(), 3);
        assert!(
            order.contains(&(2, TimerClass::Connect)) && order.contains(&(0, TimerClass::Idle))
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn touch_slides_only_sliding_classes() {
        let mut t = timers();
        let t0 = Instant::now();
        t.set(0, TimerClass::Idle, t0);
        t.set(1, TimerClass::Idle, t0);
        t.set(2, TimerClass::Handshake, t0);
        t.touch(0, t0 + Duration::from_secs(30));
        t.touch(2, t0 + Duration::from_secs(5));
        assert_eq!(
            t.pop_expired(t0 + Duration::from_secs(10)),
            Some((2, TimerClass::Handshake))
        );
        assert_eq!(
            t.pop_expired(t0 + Duration::from_secs(60)),
            Some((1, TimerClass::Idle))
        );
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(60)), None);
        assert_eq!(
            t.pop_expired(t0 + Duration::from_secs(90)),
            Some((0, TimerClass::Idle))
        );
    }

    #[test]
    fn set_moves_between_classes_and_remove_unlinks_middle() {
        let mut t = timers();
        let t0 = Instant::now();
        for key in 0..3 {
            t.set(key, TimerClass::Close, t0);
        }
        t.remove(1);
        t.set(0, TimerClass::Idle, t0);
        assert_eq!(t.class_of(0), Some(TimerClass::Idle));
        assert_eq!(t.class_of(1), None);
        let end = t0 + Duration::from_secs(100);
        let popped: Vec<_> = std::iter::from_fn(|| t.pop_expired(end)).collect();
        assert_eq!(popped.len(), 2);
        assert!(popped.contains(&(2, TimerClass::Close)));
    }
}
