//! A TLS end: rustls' unbuffered connection over a socket, with buffers lent by the pool.
//!
//! rustls' unbuffered API keeps no buffers of its own: the caller passes in the received
//! ciphertext and an output buffer, and [`TlsEnd::process`] walks rustls' state machine
//! (`process_tls_records`) until it rests. Three windows hold the bytes in flight, each in a
//! buffer lent by the [`BufferPool`] only while it is not empty:
//!
//! ```text
//! socket ─▶ incoming (ciphertext) ─▶ rustls decrypts ─▶ plaintext ─▶ other end
//! other end ─▶ rustls encrypts ─▶ outgoing (ciphertext) ─▶ socket
//! ```
//!
//! Two rules keep rustls from ever handing over more than there is room for, since what
//! it hands over cannot be handed back:
//!
//! - *Input*: the socket is read only as far as `plaintext` could take everything read if
//!   it all turned out to be application data (a record's plaintext is always shorter than
//!   its ciphertext). So a decrypted record always fits, and the sending direction never
//!   waits for the receiving one to drain. During the handshake the rule gives way to
//!   another: rustls joins a handshake message of up to 64 KiB in place, from however many
//!   records carry it, so `incoming` grows into a large buffer when a normal one fills
//!   ([`Held::grow`]), once per end and only until it empties again. Data a client sent
//!   right behind its last flight may then exceed `plaintext`; the record that does not
//!   fit stays with rustls, and nothing is encrypted until the other end has taken some.
//! - *Output*: rustls is asked for its next step only with room in `outgoing` for the
//!   largest record it may emit unasked: a whole record while handshaking, afterwards a
//!   small reserve for tickets, key updates and alerts, which application data never uses.

use std::fmt;
use std::io::{self, Read, Write};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::CommonState;

use super::linger::Lingering;
use super::socket::Socket;
use super::stream::{Conn, Stream};
use super::{Chunk, EndpointError, Eof};
use crate::buffer::{BufferPool, Held, BUFFER_SIZE, LARGE_BUFFER_SIZE};

mod describe;
mod info;
mod states;
use describe::{describe_records, state_name};
pub use info::Negotiated;
use states::{Intent, Output, Step};

/// The largest TLS record on the wire (TLS 1.2 allows 2 KiB of expansion over 16 KiB).
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;

/// While waiting on the peer, at most this many received bytes (the start of a record) are
/// kept in an allocation of their own instead of a pooled buffer: a peer that sends
/// a few bytes and goes quiet must not pin a whole buffer.
const PARK_MAX: usize = 4096;

/// Room kept in `outgoing` after the handshake for records rustls emits by itself in answer
/// to a record it receives: key updates, alerts. Application data never fills it.
const CONTROL_RESERVE: usize = 2048;

/// Plaintext per record rustls produces when encrypting.
const MAX_FRAGMENT: usize = 16 * 1024;

/// A full TLS 1.3 record on the wire: header, 16 KiB, content type, AEAD tag. Two of them
/// fit in a buffer, so a bulk read takes two whole records (see [`BUFFER_SIZE`]).
const TLS13_RECORD: usize = 5 + MAX_FRAGMENT + 1 + 16;
const _: () = assert!(BUFFER_SIZE >= 2 * TLS13_RECORD);

/// An upper bound on what encryption adds to one record (header, nonce, tag, content type),
/// with slack for a key update rustls may slip in first.
const RECORD_OVERHEAD: usize = 64;

/// A rustls session of either side.
pub enum Session {
    /// We accepted the connection.
    Server(UnbufferedServerConnection),
    /// We opened the connection.
    Client(UnbufferedClientConnection),
}

impl Session {
    fn common(&self) -> &CommonState {
        match self {
            Self::Server(conn) => conn,
            Self::Client(conn) => conn,
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self {
            Self::Server(_) => "Server",
            Self::Client(_) => "Client",
        };
        f.debug_struct(side)
            .field("handshaking", &self.common().is_handshaking())
            .finish_non_exhaustive()
    }
}

/// State of the sending half of a TLS end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// `close_notify` is in `outgoing`; TCP shutdown follows once it is written.
    Closing,
    Shut,
}

/// What a [`TlsEnd::process`] pass achieved.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Records were taken in or written out.
    moved: bool,
    /// The intent was carried out.
    done: bool,
    /// Plaintext bytes encrypted.
    encrypted: usize,
}

/// Result of one read from the socket into `incoming`.
enum ReadIn {
    Data,
    Eof,
    /// The kernel has nothing more.
    Blocked,
    /// No room to read into until the other end takes plaintext.
    NoRoom,
}

/// A TLS session over a socket.
#[derive(Debug)]
pub struct TlsEnd<S = Conn> {
    socket: Socket<S>,
    session: Session,
    /// Ciphertext received, not yet taken by rustls (a partial record, or records waiting
    /// for room in `outgoing`).
    incoming: Held,
    /// Decrypted application data the other end has not taken yet.
    plaintext: Held,
    /// Records waiting for the socket.
    outgoing: Held,
    write_side: WriteSide,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// The socket read EOF.
    tcp_eof: bool,
    /// Something has been written to the peer (for a server: its hello was answered).
    sent_any: bool,
    /// The last pass ran until rustls rested (rather than stopping for lack of output room).
    settled: bool,
    /// The last pass stopped at a decrypted record that `plaintext` has no room for: until
    /// the other end takes some, nothing can be encrypted (rustls hands that record over
    /// first).
    plaintext_blocked: bool,
}

impl<S: Stream> TlsEnd<S> {
    pub(super) fn new(socket: Socket<S>, session: Session) -> Self {
        Self {
            socket,
            session,
            incoming: Held::default(),
            plaintext: Held::default(),
            outgoing: Held::default(),
            write_side: WriteSide::Open,
            peer_closed: false,
            tcp_eof: false,
            sent_any: false,
            settled: true,
            plaintext_blocked: false,
        }
    }

    pub(super) fn socket(&self) -> &Socket<S> {
        &self.socket
    }

    pub(super) fn socket_mut(&mut self) -> &mut Socket<S> {
        &mut self.socket
    }

    pub(super) fn common(&self) -> &CommonState {
        self.session.common()
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.session.common().is_handshaking()
    }

    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.session.common().peer_certificates()
    }

    /// Whether anything has been written to the peer yet.
    pub(super) fn has_sent(&self) -> bool {
        self.sent_any
    }

    /// Advances the handshake as far as readiness allows. Returns whether it moved.
    pub(super) fn handshake(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        let mut moved = self.write_out(pool)?;
        loop {
            moved |= self.process(pool, Intent::Settle)?.moved;
            moved |= self.write_out(pool)?;
            if !self.is_handshaking() {
                return Ok(moved);
            }
            if !self.socket.is_readable() {
                self.incoming.park(PARK_MAX, pool);
                return Ok(moved);
            }
            match self.read_in(pool)? {
                ReadIn::Data => moved = true,
                ReadIn::Eof => return Err(EndpointError::EofDuringHandshake),
                ReadIn::Blocked => {
                    self.incoming.park(PARK_MAX, pool);
                    return Ok(moved);
                }
                ReadIn::NoRoom => return Ok(moved),
            }
        }
    }

    /// Writes out pending records, and lets rustls go on if it stopped for lack of room.
    pub(super) fn flush(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        let mut wrote = self.write_out(pool)?;
        if !self.settled {
            wrote |= self.process(pool, Intent::Settle)?.moved;
            wrote |= self.write_out(pool)?;
        }
        Ok(wrote)
    }

    /// Plaintext received and not yet taken, reading and decrypting records as readiness
    /// allows.
    pub(super) fn peek(&mut self, pool: &mut BufferPool) -> Result<Chunk<'_>, EndpointError> {
        while self.plaintext.is_empty() {
            if self.peer_closed {
                return Ok(Chunk::Eof(Eof::Clean));
            }
            // Records already received come first (they may also ask for an answer).
            self.process(pool, Intent::Settle)?;
            self.write_out(pool)?;
            if !self.plaintext.is_empty() || self.peer_closed {
                continue;
            }
            if self.tcp_eof {
                // Records may still wait for room in `outgoing`; only then is it the end.
                if !self.settled {
                    return Ok(Chunk::Pending);
                }
                // A record the peer cut short will never be whole: like one whose sender
                // went quiet, it must not pin a buffer for the rest of the tunnel's life.
                self.incoming.park(PARK_MAX, pool);
                return Ok(Chunk::Eof(Eof::Truncated));
            }
            if !self.socket.is_readable() {
                self.incoming.park(PARK_MAX, pool);
                return Ok(Chunk::Pending);
            }
            match self.read_in(pool)? {
                ReadIn::Data => {}
                ReadIn::Eof => self.tcp_eof = true,
                ReadIn::Blocked => {
                    self.incoming.park(PARK_MAX, pool);
                    return Ok(Chunk::Pending);
                }
                ReadIn::NoRoom => return Ok(Chunk::Pending),
            }
        }
        Ok(Chunk::Data(self.plaintext.data()))
    }

    /// Marks `n` bytes of the last [`Chunk::Data`] as taken.
    pub(super) fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        self.plaintext.consume(n, pool);
    }

    /// Plaintext bytes [`TlsEnd::send`] is sure to take right now. Beyond one record it is a
    /// whole number of records, so a bulk read from the other end is encrypted into full
    /// records, with no short one at the end.
    pub(super) fn room(&self) -> usize {
        if self.write_side != WriteSide::Open
            || !self.settled
            || self.plaintext_blocked
            || self.is_handshaking()
        {
            return 0;
        }
        plaintext_room(self.outgoing.free())
    }

    /// Encrypts as much of `data` as there is room for; returns how much that was.
    pub(super) fn send(
        &mut self,
        data: &[u8],
        pool: &mut BufferPool,
    ) -> Result<usize, EndpointError> {
        let n = data.len().min(self.room());
        let Some(data) = data.get(..n).filter(|d| !d.is_empty()) else {
            return Ok(0);
        };
        let sent = self.process(pool, Intent::Encrypt(data))?.encrypted;
        self.write_out(pool)?;
        Ok(sent)
    }

    /// Queues `close_notify`, then shuts TCP down once it is written. Returns whether the
    /// sending half is completely shut.
    pub(super) fn shut_write(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        if self.write_side == WriteSide::Open && self.process(pool, Intent::CloseNotify)?.done {
            self.write_side = WriteSide::Closing;
        }
        self.write_out(pool)?;
        Ok(self.write_side == WriteSide::Shut)
    }

    /// Gives every buffer back to the pool (the end is being dropped).
    pub(super) fn release(&mut self, pool: &mut BufferPool) {
        self.incoming.release(pool);
        self.plaintext.release(pool);
        self.outgoing.release(pool);
    }

    /// Drops the TLS session and its buffers, keeping the socket and the records not yet
    /// written (the alert that ends the session) for a lingering close.
    pub(super) fn into_lingering(mut self, pool: &mut BufferPool) -> Lingering<S> {
        let unsent = self.outgoing.data().to_vec();
        self.release(pool);
        Lingering::new(self.socket, unsent)
    }

    /// Drops the TLS session and its buffers, keeping only the socket.
    pub(super) fn into_socket(mut self, pool: &mut BufferPool) -> Socket<S> {
        self.release(pool);
        self.socket
    }

    /// Room `outgoing` must have before rustls is asked for its next step: a whole record
    /// while handshaking or while rustls has records queued (the session tickets that follow
    /// a handshake carry the client's certificate chain and can span several records),
    /// otherwise the small reserve for what an incoming record may make it answer.
    fn output_reserve(&self) -> usize {
        if self.is_handshaking() || self.session.common().wants_write() {
            MAX_RECORD
        } else {
            CONTROL_RESERVE
        }
    }

    /// Runs rustls over the received records until it rests, carrying out `intent` when
    /// it allows application data. After a TLS error, the alert rustls queued is written
    /// out before the error is returned, so the peer learns why.
    fn process(
        &mut self,
        pool: &mut BufferPool,
        intent: Intent<'_>,
    ) -> Result<Progress, EndpointError> {
        let mut progress = Progress::default();
        let mut failure = None;
        self.plaintext_blocked = false;
        loop {
            // After a failure rustls holds the alert it queued, and hands it over on the
            // next call; a call with nothing queued would process the bad input again.
            if failure.is_some() && !self.session.common().wants_write() {
                break;
            }
            if self.outgoing.free() < self.output_reserve() {
                self.write_out(pool)?;
                if self.outgoing.free() < self.output_reserve() {
                    // Go on when the socket has taken more; readiness will tell.
                    self.settled = false;
                    break;
                }
            }
            let step = self.step(pool, intent);
            match step {
                Ok(Step::Next) => progress.moved = true,
                Ok(Step::Rest) => {
                    self.settled = true;
                    break;
                }
                Ok(Step::Done(n)) => {
                    progress = Progress {
                        moved: true,
                        done: true,
                        encrypted: n,
                    };
                    self.settled = true;
                    break;
                }
                // The passes that follow take the alert rustls queued for the peer.
                Err(EndpointError::Tls(e)) if failure.is_none() => failure = Some(e),
                Err(_) if failure.is_some() => break,
                Err(e) => return Err(e),
            }
        }
        match failure {
            Some(e) => {
                let _ = self.write_out(pool);
                Err(EndpointError::Tls(e))
            }
            None => Ok(progress),
        }
    }

    /// Asks rustls for its next state, handles it, and discards the records it took.
    fn step(&mut self, pool: &mut BufferPool, intent: Intent<'_>) -> Result<Step, EndpointError> {
        let Self {
            session,
            incoming,
            plaintext,
            outgoing,
            peer_closed,
            plaintext_blocked,
            ..
        } = self;
        let mut out = Output {
            plaintext,
            outgoing,
            peer_closed,
            plaintext_blocked,
            pool,
        };
        let tag = self.socket.trace();
        let encoded_before = out.outgoing.len();
        let (discard, state, step) = match session {
            Session::Server(conn) => {
                let status = conn.process_tls_records(incoming.data_mut());
                let state = tag.map(|_| state_name(&status.state));
                (status.discard, state, out.handle(status.state, intent))
            }
            Session::Client(conn) => {
                let status = conn.process_tls_records(incoming.data_mut());
                let state = tag.map(|_| state_name(&status.state));
                (status.discard, state, out.handle(status.state, intent))
            }
        };
        if let (Some(tag), Some(state)) = (tag, state) {
            let taken = incoming.data().get(..discard).unwrap_or_default();
            let encoded = out
                .outgoing
                .data()
                .get(encoded_before..)
                .unwrap_or_default();
            tag.line(format_args!(
                "tls: {state}{}{}",
                describe_records(" took", taken),
                describe_records(" wrote", encoded)
            ));
        }
        incoming.consume(discard, pool);
        match step {
            Ok(Step::Rest) if discard > 0 => Ok(Step::Next),
            other => other,
        }
    }

    /// Reads ciphertext from the socket, no more than `plaintext` could take (see the
    /// module notes).
    fn read_in(&mut self, pool: &mut BufferPool) -> Result<ReadIn, EndpointError> {
        let limit = if self.is_handshaking() {
            // No application data is decrypted before the handshake ends, but a handshake
            // message may need more than a buffer: the window grows for it (below).
            LARGE_BUFFER_SIZE.saturating_sub(self.incoming.len())
        } else {
            self.plaintext.free().saturating_sub(self.incoming.len())
        };
        if self.incoming.free() == 0 && limit > 0 && !self.incoming.grow(pool) {
            return Err(EndpointError::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many large TLS handshake messages in flight",
            )));
        }
        let spare = self.incoming.spare_mut(pool);
        let want = limit.min(spare.len());
        let result = match spare.get_mut(..want) {
            Some(space) if !space.is_empty() => self.socket.read(space),
            _ => {
                self.incoming.fill(0, pool);
                // rustls saw all of a full window and still wants more: a handshake
                // message larger than even a grown window (rustls' own limit is lower, so
                // it normally refuses such a message first, with an alert).
                if self.settled && self.plaintext.is_empty() {
                    return Err(EndpointError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS message larger than the receive buffer",
                    )));
                }
                return Ok(ReadIn::NoRoom);
            }
        };
        match result {
            Ok(0) => {
                self.incoming.fill(0, pool);
                Ok(ReadIn::Eof)
            }
            Ok(n) => {
                self.incoming.fill(n, pool);
                Ok(ReadIn::Data)
            }
            Err(e) => {
                self.incoming.fill(0, pool);
                match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(ReadIn::Blocked),
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// Writes `outgoing` to the socket as far as it takes it; shuts TCP down after
    /// `close_notify`. Returns whether anything was written.
    fn write_out(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        let mut wrote = false;
        while !self.outgoing.is_empty() && self.socket.is_writable() {
            match self.socket.write(self.outgoing.data()) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    self.outgoing.consume(n, pool);
                    wrote = true;
                    self.sent_any = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.write_side == WriteSide::Closing && self.outgoing.is_empty() && self.settled {
            self.socket.shutdown_write()?;
            self.write_side = WriteSide::Shut;
        }
        Ok(wrote)
    }
}

/// Plaintext that surely fits, encrypted, into `free` bytes of `outgoing` while the
/// control reserve stays untouched; past one record, a whole number of records.
fn plaintext_room(free: usize) -> usize {
    let space = free.saturating_sub(CONTROL_RESERVE);
    let records = space / MAX_FRAGMENT + 1;
    let room = space.saturating_sub(records * RECORD_OVERHEAD);
    if room >= MAX_FRAGMENT {
        room - room % MAX_FRAGMENT
    } else {
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_outgoing_takes_two_full_records() {
        assert_eq!(plaintext_room(BUFFER_SIZE), 2 * MAX_FRAGMENT);
    }

    #[test]
    fn room_past_one_record_is_whole_records_that_fit() {
        for free in (0..=BUFFER_SIZE).step_by(97) {
            let room = plaintext_room(free);
            if room > MAX_FRAGMENT {
                assert_eq!(room % MAX_FRAGMENT, 0, "free {free}");
            }
            let records = room.div_ceil(MAX_FRAGMENT);
            assert!(
                room + records * RECORD_OVERHEAD + CONTROL_RESERVE <= free || room == 0,
                "free {free}: room {room} does not fit"
            );
        }
    }
}
