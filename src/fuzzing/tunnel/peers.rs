//! The two programs at the ends of the tunnel: a real rustls peer (buffered
//! `ClientConnection` or `ServerConnection`) facing moat's TLS end, and a plain one facing
//! its plain end. Each sends a deterministic pattern and checks, byte by byte, that what it
//! receives is the start of what the other one sent, in order.

use std::io::{self, BufRead, Read, Write};

use rustls::Connection;

use super::pipe::MemStream;
use crate::endpoint::Stream;

/// Most plaintext bytes one peer sends; more is not asked for.
pub(crate) const MAX_STREAM: u64 = 128 * 1024;

/// The byte at `offset` of the stream a peer with `seed` sends. Every offset gives a
/// different-looking byte, so a lost, doubled or reordered chunk shows.
pub(crate) fn pattern(seed: u8, offset: u64) -> u8 {
    let mixed = (offset ^ u64::from(seed) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 56) as u8
}

/// The stream from `offset` on, `len` bytes of it.
fn pattern_run(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(seed, offset + i)).collect()
}

/// Checks received bytes against the stream the sender with `seed` sends.
fn check_received(who: &str, seed: u8, received: u64, bytes: &[u8], sent: u64) {
    let end = received + bytes.len() as u64;
    assert!(
        end <= sent,
        "{who} received {end} bytes, only {sent} were sent"
    );
    for (i, &b) in bytes.iter().enumerate() {
        let at = received + i as u64;
        assert_eq!(b, pattern(seed, at), "{who}: wrong byte at offset {at}");
    }
}

/// How a peer ended the stream it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// TLS `close_notify` (then, perhaps, TCP FIN), or a plain FIN.
    Clean,
    /// TCP FIN or close on a TLS connection without `close_notify` (or with records
    /// still unsent, which may have held it).
    Truncated,
    /// A reset, or a close with unread bytes (which the kernel turns into one).
    Aborted,
}

/// Where a stream of TLS records stands: how much of the current record has gone out.
#[derive(Debug, Default)]
struct RecordCursor {
    header: [u8; 5],
    /// Header bytes seen of the current record (0: between records).
    seen: usize,
    /// Body bytes of the current record still to come.
    left: usize,
    /// Body bytes of the current record already gone.
    done: usize,
}

impl RecordCursor {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            if self.seen < 5 {
                self.header[self.seen] = b;
                self.seen += 1;
                bytes = rest;
                if self.seen == 5 {
                    self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.done = 0;
                }
            } else {
                let k = self.left.min(bytes.len());
                (self.left, self.done, bytes) = (self.left - k, self.done + k, &bytes[k..]);
            }
            if self.seen == 5 && self.left == 0 {
                self.seen = 0;
            }
        }
    }

    /// Bytes of a record started and not finished.
    fn started(&self) -> usize {
        if self.seen == 0 {
            0
        } else {
            self.seen + self.done
        }
    }
}

/// A stream that gives or takes at most `left` more bytes, then reports `WouldBlock`;
/// what it writes is followed by `cursor`.
struct Limited<'a> {
    stream: &'a mut MemStream,
    left: usize,
    cursor: Option<&'a mut RecordCursor>,
}

impl Read for Limited<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(self.left);
        let n = self.stream.read(buf.get_mut(..take).unwrap_or_default())?;
        self.left -= n;
        Ok(n)
    }
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let give = buf.len().min(self.left);
        let n = self.stream.write(buf.get(..give).unwrap_or_default())?;
        self.left -= n;
        if let Some(cursor) = self.cursor.as_deref_mut() {
            cursor.feed(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `limit` as a byte count: 0 means no limit.
fn budget(limit: u16) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        usize::from(limit)
    }
}

/// Closes `stream`: a FIN, or a reset if `abort` (or if it has unread bytes).
fn close(stream: Option<MemStream>, abort: bool) -> StreamEnd {
    match stream {
        Some(s) if abort || s.unread() > 0 => {
            s.set_abortive_close();
            StreamEnd::Aborted
        }
        _ => StreamEnd::Clean,
    }
}

/// The rustls peer facing moat's TLS end.
#[derive(Debug)]
pub(crate) struct TlsPeer {
    conn: Connection,
    stream: Option<MemStream>,
    /// Seeds of the stream it sends and of the one it expects.
    seeds: (u8, u8),
    /// Plaintext the rustls writer accepted.
    pub(crate) sent: u64,
    /// Plaintext received, all checked.
    pub(crate) received: u64,
    /// `sent` when `close_notify` was queued, if that was after the handshake (so behind
    /// all of it).
    pub(crate) close_notify_at: Option<u64>,
    /// How it ended its sending stream, first thing that did.
    pub(crate) end: Option<StreamEnd>,
    /// It read `close_notify`.
    pub(crate) saw_close_notify: bool,
    /// Its reads can no longer make progress: it closed, reset, or rustls failed.
    pub(crate) deaf: bool,
    /// rustls failed (an alert from moat, or bytes it could not take).
    pub(crate) failed: bool,
    /// Raw bytes were put on the wire behind rustls' back.
    pub(crate) injected: bool,
    /// How far its records on the wire stand.
    cursor: RecordCursor,
    /// Bytes of a record its FIN or close cut short.
    pub(crate) cut_record: usize,
    /// Key updates it asked for since it last sent application data.
    key_updates_in_a_row: u32,
    /// Once more than rustls takes in a row: moat may have ended the tunnel for it.
    stormed_key_updates: bool,
}

impl TlsPeer {
    pub(crate) fn new(conn: Connection, stream: MemStream, seeds: (u8, u8)) -> Self {
        Self {
            conn,
            stream: Some(stream),
            seeds,
            sent: 0,
            received: 0,
            close_notify_at: None,
            end: None,
            saw_close_notify: false,
            deaf: false,
            failed: false,
            injected: false,
            cursor: RecordCursor::default(),
            cut_record: 0,
            key_updates_in_a_row: 0,
            stormed_key_updates: false,
        }
    }

    /// Whether it closed its socket (it reads nothing more).
    pub(crate) fn deaf_by_closing(&self) -> bool {
        self.stream.is_none()
    }

    /// Whether its handshake is done, as far as it knows.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Hands `n` more bytes of its stream to rustls.
    pub(crate) fn write(&mut self, n: u16) {
        if self.end.is_some() || self.failed {
            return;
        }
        let n = usize::from(n).min((MAX_STREAM - self.sent) as usize);
        let data = pattern_run(self.seeds.0, self.sent, n);
        if let Ok(taken) = self.conn.writer().write(&data) {
            self.sent += taken as u64;
            if taken > 0 {
                self.key_updates_in_a_row = 0;
            }
        }
    }

    /// Writes up to `limit` bytes of TLS records to the wire. Returns whether any went.
    pub(crate) fn flush(&mut self, limit: u16) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let mut wire = Limited {
            stream,
            left: budget(limit),
            cursor: Some(&mut self.cursor),
        };
        let mut wrote = false;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut wire) {
                Ok(n) if n > 0 => wrote = true,
                _ => break,
            }
        }
        wrote
    }

    /// Reads up to `limit` bytes from the wire, lets rustls process them, and checks the
    /// plaintext. Returns whether anything happened.
    pub(crate) fn receive(&mut self, limit: u16, expected_sent: u64) -> bool {
        let mut left = budget(limit);
        let mut progressed = false;
        while !self.deaf {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            let mut wire = Limited {
                stream,
                left,
                cursor: None,
            };
            let read = self.conn.read_tls(&mut wire);
            left = wire.left;
            match read {
                Ok(0) => {
                    progressed = true;
                    self.deaf = true;
                }
                Ok(_) => progressed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    progressed = true;
                    self.deaf = true;
                }
            }
            if self.process(expected_sent) {
                break;
            }
        }
        progressed
    }

    /// Lets rustls process what it read and checks the plaintext; true if rustls failed.
    fn process(&mut self, expected_sent: u64) -> bool {
        if let Err(_e) = self.conn.process_new_packets() {
            // rustls queued an alert for moat: send it, as a real peer would, and stop.
            self.failed = true;
            self.deaf = true;
            self.flush(0);
            return true;
        }
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    self.saw_close_notify = true;
                    break;
                }
                Ok(got) => {
                    let n = got.len();
                    check_received(
                        "the TLS peer",
                        self.seeds.1,
                        self.received,
                        got,
                        expected_sent,
                    );
                    reader.consume(n);
                    self.received += n as u64;
                }
                Err(_) => break,
            }
        }
        false
    }

    /// Queues `close_notify`: its stream ends here, even in the middle of the handshake.
    pub(crate) fn close_notify(&mut self) {
        if self.end.is_some() || self.failed {
            return;
        }
        self.conn.send_close_notify();
        self.end = Some(StreamEnd::Clean);
        if !self.conn.is_handshaking() {
            self.close_notify_at = Some(self.sent);
        }
    }

    /// Starts a TLS 1.3 key update.
    pub(crate) fn key_update(&mut self) {
        if self.end.is_none()
            && !self.failed
            && !self.conn.is_handshaking()
            && self.conn.refresh_traffic_keys().is_ok()
        {
            self.key_updates_in_a_row += 1;
            // rustls takes 32 in a row, as BoringSSL does; data sent after the 33rd comes
            // too late to undo it.
            self.stormed_key_updates |= self.key_updates_in_a_row > 32;
        }
    }

    /// Whether it ever asked for more key updates in a row, with no application data
    /// between them, than rustls takes: moat may have ended the tunnel as a storm.
    pub(crate) fn stormed_key_updates(&self) -> bool {
        self.stormed_key_updates
    }

    /// Puts raw bytes on the wire, behind rustls' back.
    pub(crate) fn inject(&mut self, bytes: &[u8]) {
        if let Some(stream) = self.stream.as_mut() {
            if stream.write(bytes).is_ok_and(|n| n > 0) {
                self.injected = true;
            }
        }
    }

    /// Records how its stream ended, once. A `close_notify` that rustls still holds when
    /// the connection goes does not count: the end is `now` instead.
    fn ended(&mut self, now: StreamEnd) {
        if self.end != Some(StreamEnd::Truncated) && self.end != Some(StreamEnd::Aborted) {
            self.cut_record = self.cursor.started();
        }
        let held = self.conn.wants_write();
        self.end = Some(match self.end {
            Some(StreamEnd::Clean) if !held => StreamEnd::Clean,
            Some(earlier) if earlier != StreamEnd::Clean => earlier,
            _ => now,
        });
    }

    /// TCP FIN: shuts down its sending half.
    pub(crate) fn shut_write(&mut self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown_write();
            self.ended(StreamEnd::Truncated);
        }
    }

    /// Closes the connection (a reset with `abort`, or if bytes are unread).
    pub(crate) fn close(&mut self, abort: bool) {
        if self.stream.is_some() {
            let end = close(self.stream.take(), abort);
            self.ended(match end {
                StreamEnd::Aborted => StreamEnd::Aborted,
                _ => StreamEnd::Truncated,
            });
            self.deaf = true;
        }
    }
}

/// The plain peer facing moat's plain end (the backend in server mode, the local client
/// in client mode).
#[derive(Debug)]
pub(crate) struct PlainPeer {
    stream: Option<MemStream>,
    seeds: (u8, u8),
    /// Bytes it wants to send that have not gone out yet.
    pending: u64,
    /// Bytes written to the wire.
    pub(crate) sent: u64,
    /// Bytes received, all checked.
    pub(crate) received: u64,
    /// How it ended its sending stream.
    pub(crate) end: Option<StreamEnd>,
    /// It read EOF.
    pub(crate) saw_eof: bool,
    /// Its reads failed with a reset.
    pub(crate) saw_reset: bool,
    /// It closed: nothing more will be read.
    pub(crate) closed: bool,
}

impl PlainPeer {
    pub(crate) fn new(seeds: (u8, u8)) -> Self {
        Self {
            stream: None,
            seeds,
            pending: 0,
            sent: 0,
            received: 0,
            end: None,
            saw_eof: false,
            saw_reset: false,
            closed: false,
        }
    }

    /// Gives it its end of the connection (server mode: once moat has dialled).
    pub(crate) fn connect(&mut self, stream: MemStream) {
        self.stream = Some(stream);
    }

    /// Whether it has a connection (moat dialled it).
    pub(crate) fn is_connected(&self) -> bool {
        self.stream.is_some() || self.closed
    }

    /// Wants to send `n` more bytes of its stream.
    pub(crate) fn write(&mut self, n: u16) {
        let room = MAX_STREAM - self.sent - self.pending;
        self.pending += u64::from(n).min(room);
    }

    /// Writes up to `limit` of the bytes it wants to send. Returns whether any went.
    pub(crate) fn flush(&mut self, limit: u16) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        if self.end.is_some() {
            return false;
        }
        let len = (self.pending as usize)
            .min(budget(limit))
            .min(stream.room());
        let data = pattern_run(self.seeds.0, self.sent, len);
        match stream.write(&data) {
            Ok(n) if n > 0 => {
                self.sent += n as u64;
                self.pending -= n as u64;
                true
            }
            _ => false,
        }
    }

    /// Reads up to `limit` bytes and checks them. Returns whether anything happened.
    pub(crate) fn receive(&mut self, limit: u16, expected_sent: u64) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        if self.saw_eof || self.saw_reset {
            return false;
        }
        let mut left = budget(limit);
        let mut progressed = false;
        while left > 0 {
            // Room for what is there (one byte more, to see an EOF or a reset behind it).
            let mut buf = vec![0u8; left.min(stream.unread() + 1)];
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.saw_eof = true;
                    return true;
                }
                Ok(n) => {
                    let got = buf.get(..n).unwrap_or_default();
                    check_received(
                        "the plain peer",
                        self.seeds.1,
                        self.received,
                        got,
                        expected_sent,
                    );
                    self.received += n as u64;
                    left -= n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.saw_reset = true;
                    return true;
                }
            }
        }
        progressed
    }

    /// Shuts down its sending half (FIN); what it still wanted to send is dropped.
    pub(crate) fn shut_write(&mut self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown_write();
            self.end.get_or_insert(StreamEnd::Clean);
            self.pending = 0;
        }
    }

    /// Closes the connection (a reset with `abort`, or if bytes are unread).
    pub(crate) fn close(&mut self, abort: bool) {
        if self.stream.is_some() {
            let end = close(self.stream.take(), abort);
            self.end.get_or_insert(end);
            self.closed = true;
            self.pending = 0;
        }
    }
}
