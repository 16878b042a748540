//! Deadlines for every tunnel at O(1) per operation, with no scan over tunnels.
//!
//! All tunnels in one list share one duration, so a tunnel's deadline there is
//! `since + duration`, and ordering tunnels by `since` orders them by deadline. Each list
//! is therefore an intrusive doubly linked list kept in `since` order:
//!
//! - entering a list appends at the tail (its `since` is now, the latest there is);
//! - activity in a *sliding* class (idle, close) moves the tunnel to the tail;
//! - the head of each list is its earliest deadline, so the poll timeout is the earliest of
//!   the heads, and expiry pops heads until one lies in the future.
//!
//! There is one list per kind of deadline ([`TimerClass`]) and duration: services of the
//! config file may each have their own timeouts, so a class may have a few lists, one per
//! duration in use. Their number is bounded by the distinct timeouts configured, not by
//! the tunnels. The lists themselves are [`KeyLists`]: links in a `Vec` indexed by slab
//! key, so no operation allocates once the vector has grown to the peak number of tunnels.

use std::time::{Duration, Instant};

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
    /// A PROXY protocol header must arrive within this time of the accept (fixed,
    /// `--proxy-timeout`).
    Proxy,
}

/// How long a failed end lingers (see [`TimerClass::Linger`]): long enough for a peer that
/// was sent a fatal alert to read it and close, short enough that a flood of failing
/// handshakes cannot hold many descriptors.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

impl TimerClass {
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
            Self::Proxy => "proxy header",
        }
    }
}

/// All tunnels' deadlines; see the module documentation.
#[derive(Debug)]
pub struct Timers {
    /// The class and duration of each list of `lists`, by index.
    slots: Vec<(TimerClass, Duration)>,
    lists: KeyLists,
}

impl Default for Timers {
    fn default() -> Self {
        Self::new()
    }
}

impl Timers {
    /// No deadlines yet.
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            lists: KeyLists::new(0),
        }
    }

    /// The class `key` is in, if any.
    pub fn class_of(&self, key: usize) -> Option<TimerClass> {
        let slot = self.lists.list_of(key)?;
        self.slots.get(slot).map(|(class, _)| *class)
    }

    /// Puts `key` in `class` with `duration`, starting its clock at `now` (leaving any
    /// class it was in).
    pub fn set(&mut self, key: usize, class: TimerClass, duration: Duration, now: Instant) {
        let slot = self.slot(class, duration);
        self.lists.push_back(key, slot, now);
    }

    /// Records activity: in a sliding class the deadline moves to `now + duration`.
    pub fn touch(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.lists.list_of(key) else {
            return;
        };
        if self
            .slots
            .get(slot)
            .is_some_and(|(class, _)| class.slides())
        {
            self.lists.push_back(key, slot, now);
        }
    }

    /// Takes `key` out of whatever class it is in.
    pub fn remove(&mut self, key: usize) {
        self.lists.remove(key);
    }

    /// The earliest deadline of all, if any tunnel has one.
    pub fn next_deadline(&self) -> Option<Instant> {
        (0..self.slots.len())
            .filter_map(|slot| self.head_deadline(slot))
            .min()
    }

    /// Removes and returns one tunnel whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(usize, TimerClass)> {
        let slot = (0..self.slots.len())
            .find(|&slot| self.head_deadline(slot).is_some_and(|d| d <= now))?;
        let (key, _) = self.lists.head(slot)?;
        self.lists.remove(key);
        self.slots.get(slot).map(|(class, _)| (key, *class))
    }

    /// The list for `class` at `duration`: an existing one, an empty one reused, or a new
    /// one. Lists are few (classes times distinct durations), so a search is cheap.
    fn slot(&mut self, class: TimerClass, duration: Duration) -> usize {
        if let Some(slot) = self.slots.iter().position(|s| *s == (class, duration)) {
            return slot;
        }
        if let Some(slot) = (0..self.slots.len()).find(|&slot| self.lists.len(slot) == 0) {
            self.slots[slot] = (class, duration);
            return slot;
        }
        self.slots.push((class, duration));
        self.lists.add_list()
    }

    fn head_deadline(&self, slot: usize) -> Option<Instant> {
        let (_, since) = self.lists.head(slot)?;
        let (_, duration) = self.slots.get(slot)?;
        Some(since + *duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn heads_expire_in_deadline_order_across_classes() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        t.set(0, TimerClass::Idle, S(60), t0);
        t.set(1, TimerClass::Handshake, S(10), t0);
        t.set(2, TimerClass::Connect, S(5), t0 + S(1));
        assert_eq!(t.next_deadline(), Some(t0 + S(6)));
        let later = t0 + S(61);
        let order: Vec<_> = std::iter::from_fn(|| t.pop_expired(later)).collect();
        assert_eq!(order.len(), 3);
        assert!(
            order.contains(&(2, TimerClass::Connect)) && order.contains(&(0, TimerClass::Idle))
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn touch_slides_only_sliding_classes() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        t.set(0, TimerClass::Idle, S(60), t0);
        t.set(1, TimerClass::Idle, S(60), t0);
        t.set(2, TimerClass::Handshake, S(10), t0);
        t.touch(0, t0 + S(30));
        t.touch(2, t0 + S(5));
        assert_eq!(t.pop_expired(t0 + S(10)), Some((2, TimerClass::Handshake)));
        assert_eq!(t.pop_expired(t0 + S(60)), Some((1, TimerClass::Idle)));
        assert_eq!(t.pop_expired(t0 + S(60)), None);
        assert_eq!(t.pop_expired(t0 + S(90)), Some((0, TimerClass::Idle)));
    }

    #[test]
    fn set_moves_between_classes_and_remove_unlinks_middle() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        for key in 0..3 {
            t.set(key, TimerClass::Close, S(30), t0);
        }
        t.remove(1);
        t.set(0, TimerClass::Idle, S(60), t0);
        assert_eq!(t.class_of(0), Some(TimerClass::Idle));
        assert_eq!(t.class_of(1), None);
        let end = t0 + S(100);
        let popped: Vec<_> = std::iter::from_fn(|| t.pop_expired(end)).collect();
        assert_eq!(popped.len(), 2);
        assert!(popped.contains(&(2, TimerClass::Close)));
    }

    #[test]
    fn services_with_their_own_durations_expire_by_their_own_deadlines() {
        let mut t = Timers::new();
        let t0 = Instant::now();
        t.set(0, TimerClass::Idle, S(300), t0);
        t.set(1, TimerClass::Idle, S(10), t0 + S(1));
        assert_eq!(t.next_deadline(), Some(t0 + S(11)));
        assert_eq!(t.pop_expired(t0 + S(11)), Some((1, TimerClass::Idle)));
        assert_eq!(t.pop_expired(t0 + S(299)), None);
        assert_eq!(t.pop_expired(t0 + S(300)), Some((0, TimerClass::Idle)));
        // The emptied lists are reused, not added to.
        t.set(2, TimerClass::Close, S(5), t0);
        t.set(3, TimerClass::Handshake, S(7), t0);
        assert_eq!(t.slots.len(), 2);
    }
}
