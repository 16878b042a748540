//! One end of a tunnel: a plain TCP socket, a TLS session over one, or (in the demo) a mirror.
//!
//! Readiness is kept by [`Socket`] (see `socket.rs`).
//!
//! # Where the bytes wait
//!
//! A TLS end holds the bytes in flight itself, in buffers lent by the loop's
//! [`BufferPool`] only while they hold something (see `tls/mod.rs`): it is a *buffered source*
//! (decrypted plaintext waits until the other side takes it) and a *buffered sink*
//! (plaintext handed to it is encrypted at once and waits until the socket takes it).
//! A plain end is neither: it is read only as far as the other side is sure to accept, and
//! written directly from the other side's buffer. An idle tunnel holds no buffer at all.

mod linger;
mod socket;
mod stream;
mod tls;

use std::io::{self, Read, Write};

use rustls::pki_types::CertificateDer;

use crate::buffer::BufferPool;

pub use linger::{LingerStep, Lingering, LINGER_BYTES};
pub use socket::{Readiness, Socket};
pub use stream::{Conn, Stream};
pub use tls::{Negotiated, Session, TlsEnd};

/// What a mirror holds at most.
const MIRROR_LIMIT: usize = 16 * 1024;

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
    /// Plaintext ready to be taken; the caller then consumes what the sink took.
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

/// The demo's echo backend: what is written comes back. Bounded like every buffer here.
#[derive(Debug, Default)]
pub struct Mirror {
    held: Vec<u8>,
    taken: usize,
    eof: bool,
}

/// One end of a tunnel.
#[derive(Debug)]
pub enum Endpoint<S = Conn> {
    /// Plain TCP: the backend in server mode, the local client in client mode.
    Plain {
        /// The socket.
        socket: Socket<S>,
        /// Whether our write side is shut down.
        shut: bool,
        /// Bytes to send before anything else (a PROXY protocol header); empty for none.
        prelude: Vec<u8>,
    },
    /// TLS over TCP.
    Tls(Box<TlsEnd<S>>),
    /// An in-memory echo (demo only).
    Mirror(Mirror),
    /// A connection held silent until its deadline (see [`Endpoint::into_held`]).
    Held(Socket<S>),
    /// Nothing any more: the end was closed while the tunnel lives on (lingering).
    Closed,
}

impl<S: Stream> Endpoint<S> {
    /// A plain TCP end.
    pub fn plain(socket: Socket<S>) -> Self {
        Self::plain_after(socket, Vec::new())
    }

    /// A plain end that first sends `prelude` (a PROXY protocol header): in the same system
    /// call as the first bytes of the tunnel, or alone by [`Endpoint::flush_prelude`].
    pub fn plain_after(socket: Socket<S>, prelude: Vec<u8>) -> Self {
        Self::Plain {
            socket,
            shut: false,
            prelude,
        }
    }

    /// Writes a prelude that no data came to carry; returns whether it wrote anything.
    pub fn flush_prelude(&mut self) -> Result<bool, EndpointError> {
        let Self::Plain {
            socket, prelude, ..
        } = self
        else {
            return Ok(false);
        };
        if prelude.is_empty() || !socket.is_writable() {
            return Ok(false);
        }
        match socket.write(prelude) {
            Ok(n) => {
                prelude.drain(..n.min(prelude.len()));
                Ok(n > 0)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The socket under this end, if it has one.
    pub fn socket(&self) -> Option<&Socket<S>> {
        match self {
            Self::Plain { socket, .. } => Some(socket),
            Self::Tls(tls) => Some(tls.socket()),
            Self::Held(socket) => Some(socket),
            Self::Mirror(_) | Self::Closed => None,
        }
    }

    /// A TLS end; the handshake starts with the first [`Endpoint::handshake`].
    pub fn tls(socket: Socket<S>, session: Session) -> Self {
        Self::Tls(Box::new(TlsEnd::new(socket, session)))
    }

    /// The socket under this end, if it has one.
    pub fn socket_mut(&mut self) -> Option<&mut Socket<S>> {
        match self {
            Self::Plain { socket, .. } => Some(socket),
            Self::Tls(tls) => Some(tls.socket_mut()),
            Self::Held(socket) => Some(socket),
            Self::Mirror(_) | Self::Closed => None,
        }
    }

    /// Bytes the kernel still holds for this end's peer (see [`Socket::unsent_bytes`]).
    pub fn unsent_bytes(&mut self) -> usize {
        self.socket_mut().map_or(0, |socket| socket.unsent_bytes())
    }

    /// The certificates the TLS peer presented, if this is a TLS end and it presented any.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Self::Tls(tls) => tls.peer_certificates(),
            _ => None,
        }
    }

    /// The rustls session, if this is a TLS end.
    pub fn tls_common(&self) -> Option<&rustls::CommonState> {
        match self {
            Self::Tls(tls) => Some(tls.common()),
            _ => None,
        }
    }

    /// What the TLS handshake negotiated, if this is a TLS end.
    pub fn negotiated(&self) -> Option<Negotiated<'_>> {
        match self {
            Self::Tls(tls) => Some(tls.negotiated()),
            _ => None,
        }
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Self::Tls(tls) if tls.is_handshaking())
    }

    /// Whether this end has written anything to its peer (a TLS server: answered the hello).
    pub fn has_sent(&self) -> bool {
        match self {
            Self::Tls(tls) => tls.has_sent(),
            _ => true,
        }
    }

    /// Advances the TLS handshake as far as readiness allows. Returns whether it moved.
    pub fn handshake(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        match self {
            Self::Tls(tls) => tls.handshake(pool),
            _ => Ok(false),
        }
    }

    /// Writes out whatever TLS records are pending (handshake, tickets, data, alerts).
    /// Returns whether anything was written.
    pub fn flush(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        match self {
            Self::Tls(tls) => tls.flush(pool),
            _ => Ok(false),
        }
    }

    /// Gives back every buffer this end holds; call before dropping it.
    pub fn release(&mut self, pool: &mut BufferPool) {
        if let Self::Tls(tls) = self {
            tls.release(pool);
        }
    }

    /// The same connection, silenced: no TLS state, no buffers, never read or written.
    /// For a client evicted from the handshake budget, held until its handshake deadline.
    pub fn into_held(self, pool: &mut BufferPool) -> Self {
        match self {
            Self::Tls(tls) => Self::Held(tls.into_socket(pool)),
            other => other,
        }
    }

    /// Closes this end after a failure. A TLS end that sent its peer a fatal alert
    /// (`linger`) comes back as a [`Lingering`], so the alert is not destroyed by a reset;
    /// with `abort`, a plain peer is sent a reset, so an abort on the other side of the
    /// tunnel reaches it as an abort (a TLS peer simply gets no `close_notify`). Anything
    /// else is closed with a FIN.
    pub fn close(self, pool: &mut BufferPool, linger: bool, abort: bool) -> Option<Lingering<S>> {
        match self {
            Self::Tls(tls) if linger => Some(tls.into_lingering(pool)),
            Self::Tls(mut tls) => {
                tls.release(pool);
                None
            }
            Self::Plain { socket, .. } if abort => {
                socket.abort();
                None
            }
            _ => None,
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
            Self::Plain { .. } | Self::Held(_) | Self::Closed => 0,
            Self::Tls(tls) => tls.room(),
            Self::Mirror(m) => MIRROR_LIMIT - m.held.len() + m.taken,
        }
    }

    /// Offers buffered plaintext (TLS, mirror), pulling TLS records from the socket as
    /// readiness allows.
    fn peek(&mut self, pool: &mut BufferPool) -> Result<Chunk<'_>, EndpointError> {
        match self {
            Self::Tls(tls) => tls.peek(pool),
            Self::Mirror(m) => Ok(m.peek()),
            Self::Plain { .. } | Self::Held(_) | Self::Closed => Ok(Chunk::Pending),
        }
    }

    /// Marks `n` bytes of the last [`Chunk::Data`] as taken.
    fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        match self {
            Self::Tls(tls) => tls.consume(n, pool),
            Self::Mirror(m) => {
                m.taken += n;
                if m.taken == m.held.len() {
                    // Give the memory back: an idle echo holds nothing.
                    m.held = Vec::new();
                    m.taken = 0;
                }
            }
            Self::Plain { .. } | Self::Held(_) | Self::Closed => {}
        }
    }

    /// Sends plaintext; returns how much was taken (0 when the end cannot take more now).
    fn send(&mut self, data: &[u8], pool: &mut BufferPool) -> Result<usize, EndpointError> {
        match self {
            Self::Plain {
                socket, prelude, ..
            } if !prelude.is_empty() => {
                // The prelude goes out with the first bytes, in one system call.
                let bufs = [io::IoSlice::new(prelude), io::IoSlice::new(data)];
                match socket.write_vectored(&bufs) {
                    Ok(n) if n < prelude.len() => {
                        prelude.drain(..n);
                        Ok(0)
                    }
                    Ok(n) => {
                        let taken = n - prelude.len();
                        *prelude = Vec::new();
                        Ok(taken)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) => Err(e.into()),
                }
            }
            Self::Plain { socket, .. } => match socket.write(data) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e.into()),
            },
            Self::Tls(tls) => tls.send(data, pool),
            Self::Held(_) | Self::Closed => Ok(0),
            Self::Mirror(m) => {
                if m.taken > 0 {
                    m.held.drain(..m.taken);
                    m.taken = 0;
                }
                let n = data.len().min(MIRROR_LIMIT - m.held.len());
                m.held.extend_from_slice(&data[..n]);
                Ok(n)
            }
        }
    }

    /// Starts closing the sending half: TCP shutdown, or `close_notify` then TCP shutdown
    /// once flushed. Returns whether the half is completely shut.
    pub fn shut_write(&mut self, pool: &mut BufferPool) -> Result<bool, EndpointError> {
        match self {
            Self::Plain { prelude, .. } if !prelude.is_empty() => {
                // The end of the stream follows the prelude.
                self.flush_prelude()?;
                Ok(false)
            }
            Self::Plain { socket, shut, .. } => {
                if !*shut {
                    socket.shutdown_write()?;
                    *shut = true;
                }
                Ok(true)
            }
            Self::Tls(tls) => tls.shut_write(pool),
            Self::Held(_) | Self::Closed => Ok(true),
            Self::Mirror(m) => {
                m.eof = true;
                Ok(true)
            }
        }
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
    /// Whether the source has ended (the caller then shuts the sink's write side).
    pub ended: Option<Eof>,
    /// Whether the pass stopped because the byte budget ran out, not for lack of readiness.
    pub budget_spent: bool,
}

/// Moves plaintext from `src` to `dst` until one of them would block, the source ends, or
/// `budget` bytes have moved. Bytes read from a plain source pass through a buffer from
/// `pool` on their way into a buffered sink; it goes back before this returns.
///
/// A source's end is reported once; the caller remembers it and shuts the sink's write
/// side (FIN or `close_notify`) with [`Endpoint::shut_write`]: this is how half-close
/// crosses the tunnel.
pub fn relay<S: Stream>(
    src: &mut Endpoint<S>,
    dst: &mut Endpoint<S>,
    pool: &mut BufferPool,
    budget: usize,
) -> Result<Relayed, RelayError> {
    use RelayError::{Sink, Source};
    let mut moved = 0;
    let eof = loop {
        if moved >= budget {
            return Ok(Relayed {
                bytes: moved,
                ended: None,
                budget_spent: true,
            });
        }
        let n = if src.buffers_reads() {
            match src.peek(pool).map_err(Source)? {
                Chunk::Data(data) => {
                    let n = dst.send(data, pool).map_err(Sink)?;
                    src.consume(n, pool);
                    n
                }
                Chunk::Pending => 0,
                Chunk::Eof(kind) => break kind,
            }
        } else {
            match pass_plain(src, dst, pool)? {
                PlainRead::Data(n) => n,
                PlainRead::Pending => 0,
                PlainRead::Eof => break Eof::Clean,
            }
        };
        if n == 0 {
            return Ok(Relayed {
                bytes: moved,
                ended: None,
                budget_spent: false,
            });
        }
        moved += n;
    };
    Ok(Relayed {
        bytes: moved,
        ended: Some(eof),
        budget_spent: false,
    })
}

enum PlainRead {
    Data(usize),
    Pending,
    Eof,
}

/// Reads from a plain source at most what the sink is sure to take, and hands it over.
fn pass_plain<S: Stream>(
    src: &mut Endpoint<S>,
    dst: &mut Endpoint<S>,
    pool: &mut BufferPool,
) -> Result<PlainRead, RelayError> {
    let Endpoint::Plain { socket, .. } = src else {
        return Ok(PlainRead::Pending);
    };
    let room = dst.room();
    if room == 0 || !socket.is_readable() {
        return Ok(PlainRead::Pending);
    }
    let mut transit = pool.take();
    let result = pass_through(socket, dst, room, transit.as_mut_slice(), pool);
    pool.give(transit);
    result
}

fn pass_through<S: Stream>(
    socket: &mut Socket<S>,
    dst: &mut Endpoint<S>,
    room: usize,
    transit: &mut [u8],
    pool: &mut BufferPool,
) -> Result<PlainRead, RelayError> {
    let want = room.min(transit.len());
    let space = transit.get_mut(..want).unwrap_or_default();
    let n = match socket.read(space) {
        Ok(0) => return Ok(PlainRead::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(PlainRead::Pending),
        Err(e) => return Err(RelayError::Source(e.into())),
    };
    // The bytes are already out of the kernel: a sink that takes less than the room it
    // offered would lose data, so that is a hard error.
    let data = space.get(..n).unwrap_or_default();
    if dst.send(data, pool).map_err(RelayError::Sink)? != n {
        let lost = io::Error::other("sink refused bytes it had room for");
        return Err(RelayError::Sink(EndpointError::Io(lost)));
    }
    Ok(PlainRead::Data(n))
}
