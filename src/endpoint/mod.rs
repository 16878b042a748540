//! One end of a tunnel: a plain TCP socket, a TLS session over one, or (in the demo) a mirror.
//!
//! Readiness is kept by [`Socket`] (see `socket.rs`).
//!
//! # Where the bytes wait
//!
//! moat has no relay buffers of its own: rustls already holds plaintext in both directions,
//! bounded by [`crate::tls::BUFFER_LIMIT`]. A TLS end is therefore a *buffered source*
//! (decrypted plaintext waits inside rustls until the other side takes it) and a *buffered
//! sink* (plaintext handed to rustls is encrypted and waits there until the socket takes it).
//! A plain end is neither: it is read only as far as the other side is sure to accept, and
//! written directly from the other side's buffer. Each byte is copied once per direction.

mod socket;

use std::io::{self, BufRead, Read, Write};

use rustls::Connection;

use crate::tls::BUFFER_LIMIT;

pub use socket::Socket;
use socket::shutdown_write;

/// How a stream of plaintext ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eof {
    /// TCP FIN (plain), or TLS `close_notify`.
    Clean,
    /// TCP FIN on a TLS connection without `close_notify`: the peer may have been cut short.
    Truncated,
}

/// What a source has to offer right now.
#[derive(Debug)]
pub enum Chunk<'a> {
    /// Plaintext ready to be taken; call [`Endpoint::consume`] with what was taken.
    Data(&'a [u8]),
    /// Nothing now; readiness will tell when there is more.
    Pending,
    /// No more data will come.
    Eof(Eof),
}

/// Why an end failed.
#[derive(Debug)]
pub enum EndpointError {
    /// The socket failed (reset, broken pipe, ...).
    Io(io::Error),
    /// The TLS session failed: bad certificate, bad record, alert from the peer, ...
    Tls(rustls::Error),
    /// TCP EOF before the TLS handshake finished.
    EofDuringHandshake,
}

impl From<io::Error> for EndpointError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// State of the sending half of an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// `close_notify` is queued; TCP shutdown follows once rustls has flushed.
    Closing,
    Shut,
}

/// A TLS session over a socket.
#[derive(Debug)]
pub struct TlsEnd {
    socket: Socket,
    conn: Connection,
    write_side: WriteSide,
}

/// The demo's echo backend: what is written comes back. Bounded like every buffer here.
#[derive(Debug, Default)]
pub struct Mirror {
    held: Vec<u8>,
    taken: usize,
    eof: bool,
}

/// One end of a tunnel.
#[derive(Debug)]
pub enum Endpoint {
    /// Plain TCP: the backend in server mode, the local client in client mode.
    Plain {
        /// The socket.
        socket: Socket,
        /// Whether our write side is shut down.
        shut: bool,
    },
    /// TLS over TCP.
    Tls(Box<TlsEnd>),
    /// An in-memory echo (demo only).
    Mirror(Mirror),
}

impl Endpoint {
    /// A plain TCP end.
    pub fn plain(socket: Socket) -> Self {
        Self::Plain {
            socket,
            shut: false,
        }
    }

    /// A TLS end; the handshake starts with the first [`Endpoint::handshake`].
    pub fn tls(socket: Socket, mut conn: Connection) -> Self {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Self::Tls(Box::new(TlsEnd {
            socket,
            conn,
            write_side: WriteSide::Open,
        }))
    }

    /// The socket under this end, if it has one.
    pub fn socket_mut(&mut self) -> Option<&mut Socket> {
        match self {
            Self::Plain { socket, .. } => Some(socket),
            Self::Tls(tls) => Some(&mut tls.socket),
            Self::Mirror(_) => None,
        }
    }

    /// The TLS session, if this is a TLS end.
    pub fn tls_session(&self) -> Option<&Connection> {
        match self {
            Self::Tls(tls) => Some(&tls.conn),
            _ => None,
        }
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Self::Tls(tls) if tls.conn.is_handshaking())
    }

    /// Advances the TLS handshake as far as readiness allows. Returns whether it moved.
    pub fn handshake(&mut self) -> Result<bool, EndpointError> {
        let Self::Tls(tls) = self else {
            return Ok(false);
        };
        let mut moved = tls.flush()?;
        while tls.conn.is_handshaking() && tls.conn.wants_read() && tls.socket.is_readable() {
            match tls.read_records() {
                Ok(0) => return Err(EndpointError::EofDuringHandshake),
                Ok(_) => moved = true,
                Err(EndpointError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            moved |= tls.flush()?;
        }
        Ok(moved)
    }

    /// Writes out whatever TLS records are pending (handshake, tickets, data, alerts).
    /// Returns whether anything was written.
    pub fn flush(&mut self) -> Result<bool, EndpointError> {
        match self {
            Self::Tls(tls) => tls.flush(),
            _ => Ok(false),
        }
    }

    /// Whether this end buffers what it reads, so a partial take by the other side loses
    /// nothing (TLS, mirror). A plain socket does not.
    fn buffers_reads(&self) -> bool {
        !matches!(self, Self::Plain { .. })
    }

    /// Bytes this end is sure to accept in one [`Endpoint::send`] right now.
    fn room(&self) -> usize {
        match self {
            Self::Plain { .. } => 0,
            Self::Tls(tls) if tls.conn.wants_write() || tls.write_side != WriteSide::Open => 0,
            Self::Tls(_) => BUFFER_LIMIT,
            Self::Mirror(m) => BUFFER_LIMIT - m.held.len() + m.taken,
        }
    }

    /// Offers buffered plaintext (TLS, mirror), pulling TLS records from the socket as
    /// readiness allows.
    fn peek(&mut self) -> Result<Chunk<'_>, EndpointError> {
        match self {
            Self::Tls(tls) => tls.peek(),
            Self::Mirror(m) => Ok(m.peek()),
            Self::Plain { .. } => Ok(Chunk::Pending),
        }
    }

    /// Marks `n` bytes of the last [`Chunk::Data`] as taken.
    fn consume(&mut self, n: usize) {
        match self {
            Self::Tls(tls) => tls.conn.reader().consume(n),
            Self::Mirror(m) => {
                m.taken += n;
                if m.taken == m.held.len() {
                    // Give the memory back: an idle echo holds nothing.
                    m.held = Vec::new();
                    m.taken = 0;
                }
            }
            Self::Plain { .. } => {}
        }
    }

    /// Sends plaintext; returns how much was taken (0 when the end cannot take more now).
    fn send(&mut self, data: &[u8]) -> Result<usize, EndpointError> {
        match self {
            Self::Plain { socket, .. } => match socket.write(data) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e.into()),
            },
            Self::Tls(tls) => {
                let n = tls.conn.writer().write(data)?;
                tls.flush()?;
                Ok(n)
            }
            Self::Mirror(m) => {
                if m.taken > 0 {
                    m.held.drain(..m.taken);
                    m.taken = 0;
                }
                let n = data.len().min(BUFFER_LIMIT - m.held.len());
                m.held.extend_from_slice(&data[..n]);
                Ok(n)
            }
        }
    }

    /// Starts closing the sending half: TCP shutdown, or `close_notify` then TCP shutdown
    /// once flushed. Returns whether the half is completely shut.
    pub fn shut_write(&mut self) -> Result<bool, EndpointError> {
        match self {
            Self::Plain { socket, shut } => {
                if !*shut {
                    shutdown_write(socket)?;
                    *shut = true;
                }
                Ok(true)
            }
            Self::Tls(tls) => {
                if tls.write_side == WriteSide::Open {
                    tls.conn.send_close_notify();
                    tls.write_side = WriteSide::Closing;
                }
                tls.flush()?;
                Ok(tls.write_side == WriteSide::Shut)
            }
            Self::Mirror(m) => {
                m.eof = true;
                Ok(true)
            }
        }
    }
}

impl TlsEnd {
    /// One `read_tls` + `process_new_packets`. `Ok(0)` is TCP EOF.
    fn read_records(&mut self) -> Result<usize, EndpointError> {
        let n = self.conn.read_tls(&mut self.socket)?;
        if let Err(e) = self.conn.process_new_packets() {
            // Let the peer learn why: the alert is queued, send it before giving up.
            let _ = self.flush();
            return Err(EndpointError::Tls(e));
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<bool, EndpointError> {
        let mut wrote = false;
        while self.conn.wants_write() && self.socket.is_writable() {
            match self.conn.write_tls(&mut self.socket) {
                Ok(_) => wrote = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.write_side == WriteSide::Closing && !self.conn.wants_write() {
            shutdown_write(&self.socket)?;
            self.write_side = WriteSide::Shut;
        }
        Ok(wrote)
    }

    fn peek(&mut self) -> Result<Chunk<'_>, EndpointError> {
        loop {
            // The borrow checker cannot see that the early return ends the borrow of
            // `self.conn`, so ask first whether plaintext is waiting, then borrow it.
            match self.conn.reader().fill_buf() {
                Ok([]) => return Ok(Chunk::Eof(Eof::Clean)),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Chunk::Eof(Eof::Truncated))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if !(self.socket.is_readable() && self.conn.wants_read()) {
                return Ok(Chunk::Pending);
            }
            match self.read_records() {
                Err(EndpointError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Chunk::Pending)
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    // Records may ask for an answer (key update, alert).
                    self.flush()?;
                }
            }
        }
        Ok(Chunk::Data(self.conn.reader().into_first_chunk()?))
    }
}

impl Mirror {
    fn peek(&self) -> Chunk<'_> {
        match self.held.get(self.taken..) {
            Some(data) if !data.is_empty() => Chunk::Data(data),
            _ if self.eof => Chunk::Eof(Eof::Clean),
            _ => Chunk::Pending,
        }
    }
}

/// Which end of a relay failed.
#[derive(Debug)]
pub enum RelayError {
    /// Reading from the source failed.
    Source(EndpointError),
    /// Writing to (or shutting down) the sink failed.
    Sink(EndpointError),
}

/// What one relay pass in one direction achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Plaintext bytes moved.
    pub bytes: usize,
    /// Whether the source has ended and the sink's write side is shut.
    pub finished: Option<Eof>,
    /// Whether the pass stopped because the byte budget ran out, not for lack of readiness.
    pub budget_spent: bool,
}

/// Moves plaintext from `src` to `dst` until one of them would block, the source ends, or
/// `budget` bytes have moved. `scratch` holds bytes read from a plain source on their way
/// into a buffered sink; it never holds anything between calls.
///
/// When the source has ended, the sink's write side is shut (FIN or `close_notify`): this
/// is how half-close crosses the tunnel.
pub fn relay(
    src: &mut Endpoint,
    dst: &mut Endpoint,
    scratch: &mut [u8],
    budget: usize,
) -> Result<Relayed, RelayError> {
    use RelayError::{Sink, Source};
    let mut moved = 0;
    let eof = loop {
        if moved >= budget {
            return Ok(Relayed {
                bytes: moved,
                finished: None,
                budget_spent: true,
            });
        }
        let n = if src.buffers_reads() {
            match src.peek().map_err(Source)? {
                Chunk::Data(data) => {
                    let n = dst.send(data).map_err(Sink)?;
                    src.consume(n);
                    n
                }
                Chunk::Pending => 0,
                Chunk::Eof(kind) => break kind,
            }
        } else {
            match read_plain(src, dst.room(), scratch).map_err(Source)? {
                PlainRead::Data(n) => {
                    // The bytes are already out of the kernel: a sink that takes less than
                    // the room it offered would lose data, so that is a hard error.
                    if dst.send(&scratch[..n]).map_err(Sink)? != n {
                        let lost = io::Error::other("sink refused bytes it had room for");
                        return Err(Sink(EndpointError::Io(lost)));
                    }
                    n
                }
                PlainRead::Pending => 0,
                PlainRead::Eof => break Eof::Clean,
            }
        };
        if n == 0 {
            return Ok(Relayed {
                bytes: moved,
                finished: None,
                budget_spent: false,
            });
        }
        moved += n;
    };
    let shut = dst.shut_write().map_err(Sink)?;
    Ok(Relayed {
        bytes: moved,
        finished: shut.then_some(eof),
        budget_spent: false,
    })
}

enum PlainRead {
    Data(usize),
    Pending,
    Eof,
}

/// Reads from a plain source, at most `room` bytes (what the sink is sure to take).
fn read_plain(
    src: &mut Endpoint,
    room: usize,
    scratch: &mut [u8],
) -> Result<PlainRead, EndpointError> {
    let Endpoint::Plain { socket, .. } = src else {
        return Ok(PlainRead::Pending);
    };
    let want = room.min(scratch.len());
    if want == 0 || !socket.is_readable() {
        return Ok(PlainRead::Pending);
    }
    match socket.read(&mut scratch[..want]) {
        Ok(0) => Ok(PlainRead::Eof),
        Ok(n) => Ok(PlainRead::Data(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(PlainRead::Pending),
        Err(e) => Err(e.into()),
    }
}
