//! Chains already verified, so a peer that reconnects with the same certificate does not pay
//! for path building and one signature check per certificate on every full handshake.
//!
//! An entry is keyed by SHA-256 over the exact DER chain the peer sent (end entity, then
//! intermediates, each length-prefixed, after a context such as the server name checked),
//! and holds the window in which every certificate of the chain is valid. A hit is honoured
//! only while `now` lies in that window and the entry is younger than [`LIFETIME`]; the
//! handshake signature (proof that the peer holds the key) is never cached.
//!
//! The cache belongs to one verifier, which belongs to one set of CAs, CRLs and rules: a new
//! configuration builds a new verifier, which starts empty. It is bounded in entries
//! ([`CAPACITY`], oldest evicted first) and in time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::digest;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::identity::Validity;

/// Most chains remembered at once: about 100 bytes each, so at most about 400 KiB.
pub const CAPACITY: usize = 4096;

/// How long a verified chain is trusted without verifying it again.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// SHA-256 of a chain and the context it was verified in.
pub type ChainKey = [u8; 32];

/// Verified chains, bounded in number and age.
#[derive(Debug)]
pub struct ChainCache {
    entries: Mutex<Entries>,
    capacity: usize,
    lifetime: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hits and misses since the cache was made, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to verify the chain.
    pub misses: u64,
    /// Chains held now.
    pub entries: usize,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<ChainKey, Entry>,
    /// Insertion order, for eviction. An item whose `seq` no longer matches its entry's was
    /// replaced or dropped and is skipped.
    order: VecDeque<(ChainKey, u64)>,
    next_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    verified_at: u64,
    validity: Validity,
}

impl ChainCache {
    /// An empty cache holding at most `capacity` chains, each for at most `lifetime`.
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
            lifetime: lifetime.as_secs(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key of a chain verified in `context` (for a server certificate, the name it was
    /// checked against; a chain valid for one name is not valid for another).
    pub fn key(
        context: &[u8],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> ChainKey {
        let mut hash = digest::Context::new(&digest::SHA256);
        let mut part = |bytes: &[u8]| {
            // Length prefixes keep two different chains from hashing the same bytes.
            hash.update(&(bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(context);
        part(end_entity);
        for cert in intermediates {
            part(cert);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(hash.finish().as_ref());
        key
    }

    /// Whether the chain with `key` was verified, is still within its validity window at
    /// `now`, and was verified less than the lifetime ago. Counts a hit or a miss.
    pub fn contains(&self, key: &ChainKey, now: UnixTime) -> bool {
        let now = now.as_secs();
        let mut entries = self.lock();
        let fresh = match entries.map.get(key) {
            Some(entry) => {
                entry.validity.contains(now)
                    && now.saturating_sub(entry.verified_at) < self.lifetime
            }
            None => false,
        };
        if !fresh {
            // Stale or absent: a successful verification will put it back.
            entries.map.remove(key);
        }
        drop(entries);
        let counter = if fresh { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        fresh
    }

    /// Remembers that the chain with `key`, valid within `validity`, verified at `now`.
    pub fn insert(&self, key: ChainKey, validity: Validity, now: UnixTime) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        let seq = entries.next_seq;
        entries.next_seq += 1;
        let entry = Entry {
            seq,
            verified_at: now.as_secs(),
            validity,
        };
        entries.map.insert(key, entry);
        entries.order.push_back((key, seq));
        while entries.order.len() > self.capacity {
            if let Some((old, old_seq)) = entries.order.pop_front() {
                if entries.map.get(&old).is_some_and(|e| e.seq == old_seq) {
                    entries.map.remove(&old);
                }
            }
        }
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().map.len(),
        }
    }

    /// The entries, even if another thread panicked while holding them: they are plain
    /// data, never left half-changed.
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for ChainCache {
    fn default() -> Self {
        Self::new(CAPACITY, LIFETIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn key(n: u8) -> ChainKey {
        ChainCache::key(b"", &CertificateDer::from(vec![n]), &[])
    }

    const WINDOW: Validity = Validity {
        not_before: 1_000,
        not_after: 100_000,
    };

    #[test]
    fn a_verified_chain_is_a_hit_within_its_window_and_lifetime() {
        let cache = ChainCache::new(8, Duration::from_secs(600));
        assert!(!cache.contains(&key(1), at(2_000)));
        cache.insert(key(1), WINDOW, at(2_000));
        assert!(cache.contains(&key(1), at(2_000)));
        assert!(cache.contains(&key(1), at(2_599)));
        assert!(!cache.contains(&key(2), at(2_000)));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                entries: 1
            }
        );
    }

    #[test]
    fn an_expired_chain_is_never_served() {
        let cache = ChainCache::new(8, Duration::from_secs(1_000_000));
        cache.insert(key(1), WINDOW, at(2_000));
        assert!(cache.contains(&key(1), at(100_000)));
        assert!(!cache.contains(&key(1), at(100_001)));
        // The stale entry is gone: even a clock set back does not revive it.
        assert!(!cache.contains(&key(1), at(50_000)));
    }

    #[test]
    fn an_old_entry_is_verified_again() {
        let cache = ChainCache::new(8, Duration::from_secs(600));
        cache.insert(key(1), WINDOW, at(2_000));
        assert!(!cache.contains(&key(1), at(2_600)));
    }

    #[test]
    fn the_oldest_entries_make_room() {
        let cache = ChainCache::new(2, Duration::from_secs(600));
        for n in 1..=3 {
            cache.insert(key(n), WINDOW, at(2_000));
        }
        assert!(!cache.contains(&key(1), at(2_000)));
        assert!(cache.contains(&key(2), at(2_000)) && cache.contains(&key(3), at(2_000)));
        // Re-inserting a key does not let its old queue slot evict the new entry.
        cache.insert(key(2), WINDOW, at(2_001));
        cache.insert(key(4), WINDOW, at(2_001));
        assert!(cache.contains(&key(2), at(2_001)));
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn keys_tell_chains_and_contexts_apart() {
        let a = CertificateDer::from(vec![1, 2]);
        let b = CertificateDer::from(vec![3]);
        let ab = CertificateDer::from(vec![1, 2, 3]);
        assert_ne!(
            ChainCache::key(b"", &a, std::slice::from_ref(&b)),
            ChainCache::key(b"", &ab, &[])
        );
        assert_ne!(
            ChainCache::key(b"x", &a, &[]),
            ChainCache::key(b"y", &a, &[])
        );
    }
}
