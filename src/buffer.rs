//! Fixed-capacity byte buffers, lent by a pool while there are bytes to hold.
//!
//! A TLS end needs room for ciphertext on its way in, plaintext on its way to the other
//! end, and ciphertext on its way out; but an idle tunnel has nothing in flight. So a
//! [`Held`] takes a [`Buffer`] from the [`BufferPool`] when the first byte arrives and gives
//! it back as soon as the last byte leaves: an idle tunnel holds no buffer at all, and
//! the pool's count of buffers in use shows it ([`BufferPool::in_use`]).
//!
//! Every buffer has the same capacity, [`BUFFER_SIZE`], and never grows: a full buffer
//! means "stop reading that side" (backpressure). The pool keeps a bounded number of spare
//! buffers for reuse, so a burst does not leave its memory parked in the pool forever.

/// Capacity of every buffer: two full TLS records, so a bulk transfer moves two records per
/// `recv` and per `send`. On the way in that is 2 × 16,406 bytes of TLS 1.3 ciphertext; on
/// the way out, 2 × 16 KiB of plaintext plus the room a TLS end keeps for its own records.
/// A 32 KiB buffer holds one full record and most of a second, which halves every read.
/// (Measured with `benches/run.sh`: 36 KiB moves 8–13% more bulk per CPU-second than 32;
/// 52 KiB, three records, 5% more again, but a full-speed download then stretched the
/// other tunnels' p99 in the fairness benchmark from about 1.4× to 2.4×.)
pub const BUFFER_SIZE: usize = 36 * 1024;

/// Spare buffers the pool keeps for reuse by default (576 KiB at [`BUFFER_SIZE`]).
pub const DEFAULT_SPARES: usize = 16;

/// Capacity of a receive window grown for one large handshake message ([`Held::grow`]):
/// rustls accepts handshake messages of up to 64 KiB, which it joins in place from however
/// many records carry them, so the window must hold the whole message and the headers of
/// its records (here up to 32 KiB of them: records of a few bytes each for a 64 KiB
/// message, far beyond what real TLS stacks send).
pub const LARGE_BUFFER_SIZE: usize = 96 * 1024;

/// Most grown windows lent at once: a flood of oversized handshakes cannot make moat hold
/// more than this many ([`LARGE_BUFFER_SIZE`] each, 24 MiB in all).
pub const MAX_LARGE_BUFFERS: usize = 256;

/// A fixed-capacity byte buffer.
#[derive(Debug)]
pub struct Buffer {
    bytes: Box<[u8]>,
}

impl Buffer {
    /// All of the buffer's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

/// Lends [`Buffer`]s and counts those lent out.
#[derive(Debug)]
pub struct BufferPool {
    spare: Vec<Buffer>,
    max_spare: usize,
    in_use: usize,
    large_in_use: usize,
    /// While a traced tunnel is driven (`--trace`): lending and taking back are logged.
    trace: Option<crate::trace::Tag>,
}

impl BufferPool {
    /// A pool that keeps at most `max_spare` returned buffers for reuse.
    pub fn new(max_spare: usize) -> Self {
        Self {
            spare: Vec::new(),
            max_spare,
            in_use: 0,
            large_in_use: 0,
            trace: None,
        }
    }

    /// Logs what is lent and given back under `tag`, until called with `None`.
    pub fn trace_for(&mut self, tag: Option<crate::trace::Tag>) {
        self.trace = tag;
    }

    /// Lends a buffer of [`BUFFER_SIZE`] bytes (a spare one if there is one).
    pub fn take(&mut self) -> Buffer {
        self.in_use += 1;
        if let Some(tag) = self.trace {
            tag.line(format_args!(
                "buffer taken from the pool ({} in use)",
                self.in_use
            ));
        }
        self.spare.pop().unwrap_or_else(|| Buffer {
            bytes: vec![0; BUFFER_SIZE].into_boxed_slice(),
        })
    }

    /// Lends a buffer of [`LARGE_BUFFER_SIZE`] bytes for one large handshake message, or
    /// `None` when [`MAX_LARGE_BUFFERS`] are lent already. Large buffers are never kept as
    /// spares: they are rare, and an idle moat should not hold them.
    pub fn take_large(&mut self) -> Option<Buffer> {
        if self.large_in_use >= MAX_LARGE_BUFFERS {
            return None;
        }
        self.in_use += 1;
        self.large_in_use += 1;
        Some(Buffer {
            bytes: vec![0; LARGE_BUFFER_SIZE].into_boxed_slice(),
        })
    }

    /// Takes a buffer back. Its contents are not cleared: whoever takes it next writes
    /// before reading.
    pub fn give(&mut self, buffer: Buffer) {
        self.in_use = self.in_use.saturating_sub(1);
        if let Some(tag) = self.trace {
            tag.line(format_args!("buffer given back ({} in use)", self.in_use));
        }
        if buffer.bytes.len() != BUFFER_SIZE {
            self.large_in_use = self.large_in_use.saturating_sub(1);
        } else if self.spare.len() < self.max_spare {
            self.spare.push(buffer);
        }
    }

    /// Large buffers lent out (see [`BufferPool::take_large`]).
    pub fn large_in_use(&self) -> usize {
        self.large_in_use
    }

    /// Buffers lent out and not yet given back.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Buffers kept for reuse.
    pub fn spare(&self) -> usize {
        self.spare.len()
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::new(DEFAULT_SPARES)
    }
}

/// Bytes waiting in a lent buffer, as the window `start..end` of it; no buffer when empty.
///
/// Bytes are appended at the end ([`Held::spare_mut`], then [`Held::fill`]) and taken from
/// the front ([`Held::consume`]). The buffer goes back to the pool the moment the window
/// becomes empty.
#[derive(Debug, Default)]
pub struct Held {
    buffer: Option<Buffer>,
    start: usize,
    end: usize,
    /// A few bytes kept in an allocation of their own size while the window waits for the
    /// peer ([`Held::park`]); when set, no buffer is held.
    parked: Vec<u8>,
}

impl Held {
    /// The bytes waiting.
    pub fn data(&self) -> &[u8] {
        match &self.buffer {
            Some(b) => b.bytes.get(self.start..self.end).unwrap_or_default(),
            None => &self.parked,
        }
    }

    /// The bytes waiting, writable (TLS records are decrypted in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.buffer {
            Some(b) => b.bytes.get_mut(self.start..self.end).unwrap_or_default(),
            None => &mut self.parked,
        }
    }

    /// Number of bytes waiting.
    pub fn len(&self) -> usize {
        self.end - self.start + self.parked.len()
    }

    /// Whether nothing is waiting (and so no buffer is held).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives the buffer back if at most `max` bytes wait in it, keeping them in an
    /// allocation of their own size. For a window that waits on the peer: a peer that sends
    /// the first bytes of a TLS record and goes quiet then holds what it sent, not a whole
    /// buffer. The bytes move back into a buffer when more arrive ([`Held::spare_mut`]).
    pub fn park(&mut self, max: usize, pool: &mut BufferPool) {
        let len = self.len();
        if self.buffer.is_none() || len == 0 || len > max {
            return;
        }
        let parked = self.data().to_vec();
        self.release(pool);
        self.parked = parked;
    }

    /// Bytes that could still be added, counting the space freed at the front.
    pub fn free(&self) -> usize {
        self.capacity().saturating_sub(self.len())
    }

    /// The size of the buffer held, or of the one that would be taken.
    pub fn capacity(&self) -> usize {
        self.buffer.as_ref().map_or(BUFFER_SIZE, |b| b.bytes.len())
    }

    /// Moves the waiting bytes into a [`LARGE_BUFFER_SIZE`] buffer, for a handshake message
    /// that does not fit a normal one. Returns false if the window is large already or the
    /// pool has no large buffer to lend. The large buffer goes back, like any other, once
    /// the window is empty.
    pub fn grow(&mut self, pool: &mut BufferPool) -> bool {
        if self.capacity() >= LARGE_BUFFER_SIZE {
            return false;
        }
        let Some(mut large) = pool.take_large() else {
            return false;
        };
        let len = self.len();
        if let Some(front) = large.bytes.get_mut(..len) {
            front.copy_from_slice(self.data());
        }
        self.release(pool);
        self.buffer = Some(large);
        self.end = len;
        true
    }

    /// All the free space, contiguous, after the waiting bytes: takes a buffer from the pool
    /// if none is held, and moves the waiting bytes to the front if they are not there.
    /// Call [`Held::fill`] with the number of bytes written into it.
    pub fn spare_mut(&mut self, pool: &mut BufferPool) -> &mut [u8] {
        let parked = std::mem::take(&mut self.parked);
        let buffer = self.buffer.get_or_insert_with(|| pool.take());
        if !parked.is_empty() {
            // Parked bytes are only ever a few, and only kept while no buffer is held.
            if let Some(front) = buffer.bytes.get_mut(..parked.len()) {
                front.copy_from_slice(&parked);
                self.start = 0;
                self.end = parked.len();
            }
        }
        if self.start > 0 {
            buffer.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        buffer.bytes.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `n` bytes were written into the slice from [`Held::spare_mut`]; gives
    /// the buffer back if it is still empty.
    pub fn fill(&mut self, n: usize, pool: &mut BufferPool) {
        self.end = (self.end + n).min(self.capacity());
        self.give_back_if_empty(pool);
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub fn extend(&mut self, bytes: &[u8], pool: &mut BufferPool) -> usize {
        let n = bytes.len().min(self.free());
        if n > 0 {
            if let Some(spare) = self.spare_mut(pool).get_mut(..n) {
                spare.copy_from_slice(&bytes[..n]);
                self.fill(n, pool);
                return n;
            }
        }
        0
    }

    /// Drops `n` bytes from the front; the buffer goes back to the pool once empty.
    pub fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        if self.buffer.is_none() {
            self.parked.drain(..n.min(self.parked.len()));
            return;
        }
        self.start = (self.start + n).min(self.end);
        self.give_back_if_empty(pool);
    }

    /// Gives the buffer back whatever it holds (the end is closing).
    pub fn release(&mut self, pool: &mut BufferPool) {
        if let Some(buffer) = self.buffer.take() {
            pool.give(buffer);
        }
        self.start = 0;
        self.end = 0;
        self.parked = Vec::new();
    }

    fn give_back_if_empty(&mut self, pool: &mut BufferPool) {
        if self.is_empty() {
            self.release(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_holds_no_buffer() {
        let mut pool = BufferPool::new(4);
        let mut held = Held::default();
        assert!(held.is_empty());
        assert_eq!(held.data(), b"");
        assert_eq!(held.free(), BUFFER_SIZE);
        // Asking for space and writing nothing gives the buffer straight back.
        let _ = held.spare_mut(&mut pool);
        assert_eq!(pool.in_use(), 1);
        held.fill(0, &mut pool);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.spare(), 1);
    }

    #[test]
    fn bytes_in_take_a_buffer_and_bytes_out_return_it() {
        let mut pool = BufferPool::new(4);
        let mut held = Held::default();
        assert_eq!(held.extend(b"hello world", &mut pool), 11);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(held.data(), b"hello world");
        held.consume(6, &mut pool);
        assert_eq!(held.data(), b"world");
        assert_eq!(pool.in_use(), 1);
        held.consume(5, &mut pool);
        assert!(held.is_empty());
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_full_buffer_takes_no_more_and_free_space_is_made_contiguous() {
        let mut pool = BufferPool::new(4);
        let mut held = Held::default();
        let big = vec![7u8; BUFFER_SIZE + 100];
        assert_eq!(held.extend(&big, &mut pool), BUFFER_SIZE);
        assert_eq!(held.free(), 0);
        assert_eq!(held.extend(b"x", &mut pool), 0);
        held.consume(BUFFER_SIZE - 3, &mut pool);
        assert_eq!(held.extend(b"abc", &mut pool), 3);
        assert_eq!(held.data(), &[7, 7, 7, b'a', b'b', b'c']);
        assert_eq!(held.spare_mut(&mut pool).len(), BUFFER_SIZE - 6);
        held.consume(100, &mut pool);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn the_pool_counts_lent_buffers_and_keeps_a_bounded_number_of_spares() {
        let mut pool = BufferPool::new(2);
        let buffers: Vec<Buffer> = (0..5).map(|_| pool.take()).collect();
        assert_eq!(pool.in_use(), 5);
        for buffer in buffers {
            pool.give(buffer);
        }
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.spare(), 2);
        let again = pool.take();
        assert_eq!(pool.spare(), 1);
        assert_eq!(again.bytes.len(), BUFFER_SIZE);
        pool.give(again);
    }

    #[test]
    fn parked_bytes_hold_no_buffer_and_come_back_in_order() {
        let mut pool = BufferPool::new(2);
        let mut held = Held::default();
        held.extend(b"abcdef", &mut pool);
        held.consume(2, &mut pool);
        held.park(4, &mut pool);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(
            (held.data(), held.len(), held.free()),
            (&b"cdef"[..], 4, BUFFER_SIZE - 4)
        );
        held.extend(b"gh", &mut pool);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(held.data(), b"cdefgh");
        held.park(3, &mut pool); // too many bytes to park: the buffer stays
        assert_eq!(pool.in_use(), 1);
        held.park(6, &mut pool);
        held.consume(6, &mut pool);
        assert!(held.is_empty());
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_grown_window_keeps_its_bytes_and_is_never_kept_as_a_spare() {
        let mut pool = BufferPool::new(2);
        let mut held = Held::default();
        held.extend(&vec![9u8; BUFFER_SIZE], &mut pool);
        assert_eq!(held.free(), 0);
        assert!(held.grow(&mut pool));
        assert!(!held.grow(&mut pool), "grown twice");
        assert_eq!((pool.in_use(), pool.large_in_use()), (1, 1));
        assert_eq!(held.free(), LARGE_BUFFER_SIZE - BUFFER_SIZE);
        assert_eq!(held.extend(b"more", &mut pool), 4);
        assert_eq!(held.len(), BUFFER_SIZE + 4);
        assert!(held.data().ends_with(b"\x09more"));
        held.consume(held.len(), &mut pool);
        assert_eq!((pool.in_use(), pool.large_in_use()), (0, 0));
        assert_eq!(pool.spare(), 1, "only the normal buffer is kept for reuse");
        assert_eq!(held.capacity(), BUFFER_SIZE);
    }

    #[test]
    fn large_buffers_are_capped() {
        let mut pool = BufferPool::new(0);
        let lent: Vec<Buffer> = std::iter::from_fn(|| pool.take_large()).collect();
        assert_eq!(lent.len(), MAX_LARGE_BUFFERS);
        for buffer in lent {
            pool.give(buffer);
        }
        assert!(pool.take_large().is_some());
    }

    #[test]
    fn release_returns_a_buffer_that_still_holds_bytes() {
        let mut pool = BufferPool::new(2);
        let mut held = Held::default();
        held.extend(b"unsent", &mut pool);
        held.release(&mut pool);
        assert!(held.is_empty());
        assert_eq!(pool.in_use(), 0);
    }
}
