//! The three kinds of value a metric holds: [`Counter`], [`Gauge`] and [`Histogram`], and
//! [`Tally`], a counter per value of a [`Label`].
//!
//! Each is written by the loop that owns it and read, at any moment, by whoever renders the
//! status page, possibly on another thread. Relaxed atomics are enough for that: every value
//! stands alone, no reader infers one value from another, and a scrape that sees a counter a
//! few events early or late is still a true picture of a moving system. None of them locks,
//! allocates or formats when bumped.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A count that only goes up (a Prometheus `counter`).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, or is set outright (a Prometheus `gauge`).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    /// Replaces the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// One upper bound of a [`Histogram`]: durations up to and including `micros` fall in it.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// The bound in microseconds, for comparing without floating point.
    pub micros: u64,
    /// The bound in seconds as Prometheus shows it in the `le` label.
    pub le: &'static str,
}

/// Bounds for handshake durations, 1 ms to 10 s: a handshake on loopback takes about a
/// millisecond, one across a continent a few hundred, and the default handshake timeout
/// is 10 s.
pub const HANDSHAKE_BUCKETS: [Bucket; 13] = [
    Bucket {
        micros: 1_000,
        le: "0.001",
    },
    Bucket {
        micros: 2_500,
        le: "0.0025",
    },
    Bucket {
        micros: 5_000,
        le: "0.005",
    },
    Bucket {
        micros: 10_000,
        le: "0.01",
    },
    Bucket {
        micros: 25_000,
        le: "0.025",
    },
    Bucket {
        micros: 50_000,
        le: "0.05",
    },
    Bucket {
        micros: 100_000,
        le: "0.1",
    },
    Bucket {
        micros: 250_000,
        le: "0.25",
    },
    Bucket {
        micros: 500_000,
        le: "0.5",
    },
    Bucket {
        micros: 1_000_000,
        le: "1",
    },
    Bucket {
        micros: 2_500_000,
        le: "2.5",
    },
    Bucket {
        micros: 5_000_000,
        le: "5",
    },
    Bucket {
        micros: 10_000_000,
        le: "10",
    },
];

/// Durations counted into fixed buckets (a Prometheus `histogram`, in seconds).
///
/// Each slot counts the observations that fell in it alone; rendering makes them
/// cumulative. The last slot is `+Inf`, and the total count is the sum of all slots, so
/// `_count` always equals the `+Inf` bucket. The sum is kept in whole microseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [Bucket],
    /// One slot per bound, then one for everything above the last.
    slots: Box<[Counter]>,
    sum_micros: Counter,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must ascend.
    pub fn new(bounds: &'static [Bucket]) -> Self {
        Self {
            bounds,
            slots: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum_micros: Counter::default(),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = self
            .bounds
            .iter()
            .position(|b| micros <= b.micros)
            .unwrap_or(self.bounds.len());
        if let Some(counter) = self.slots.get(slot) {
            counter.inc();
        }
        self.sum_micros.add(micros);
    }

    /// The bounds, in ascending order (without `+Inf`).
    pub fn bounds(&self) -> &'static [Bucket] {
        self.bounds
    }

    /// Observations in each slot alone: one per bound, then the one above the last.
    pub fn slot_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().map(Counter::get)
    }

    /// The sum of all durations observed, in microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.get()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&HANDSHAKE_BUCKETS)
    }
}

/// A closed set of label values, such as the ways a tunnel can end.
///
/// Each value has a slot; values outside a known list share one slot labelled `other`, so
/// the set of label values, and so the number of series, is fixed when moat is built.
pub trait Label: Copy + 'static {
    /// The name of the label in the exposition (`end`, `reason`, `group`, ...).
    const NAME: &'static str;

    /// How many slots there are (including an `other` slot, if the set has one).
    const SLOTS: usize;

    /// The slot this value is counted in, below [`Label::SLOTS`].
    fn slot(self) -> usize;

    /// The label value of each slot, in slot order.
    fn slot_label(slot: usize) -> &'static str;
}

/// A [`Counter`] per value of the label `L`.
#[derive(Debug)]
pub struct Tally<L: Label> {
    slots: Box<[Counter]>,
    label: PhantomData<L>,
}

impl<L: Label> Tally<L> {
    /// Adds one for `value`.
    pub fn inc(&self, value: L) {
        self.add(value, 1);
    }

    /// Adds `n` for `value`.
    pub fn add(&self, value: L, n: u64) {
        // slot() is below SLOTS by contract; were it not, the event goes uncounted.
        if let Some(counter) = self.slots.get(value.slot()) {
            counter.add(n);
        }
    }

    /// The count for `value`.
    pub fn get(&self, value: L) -> u64 {
        self.slots.get(value.slot()).map_or(0, Counter::get)
    }

    /// Each slot's label value and count, in slot order.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(slot, c)| (L::slot_label(slot), c.get()))
    }
}

impl<L: Label> Default for Tally<L> {
    fn default() -> Self {
        Self {
            slots: (0..L::SLOTS.max(1)).map(|_| Counter::default()).collect(),
            label: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_move() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let g = Gauge::default();
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(g.get(), 1);
        g.set(-3);
        assert_eq!(g.get(), -3);
    }

    #[test]
    fn a_duration_falls_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1_000)); // on the bound: in it
        h.observe(Duration::from_micros(1_001));
        h.observe(Duration::from_secs(11)); // above every bound
        let slots: Vec<u64> = h.slot_counts().collect();
        assert_eq!(slots.len(), HANDSHAKE_BUCKETS.len() + 1);
        assert_eq!((slots[0], slots[1], slots[13]), (1, 1, 1));
        assert_eq!(slots.iter().sum::<u64>(), 3);
        assert_eq!(h.sum_micros(), 1_000 + 1_001 + 11_000_000);
    }
}
