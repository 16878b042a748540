//! The last moments of an end that failed: a lingering close.
//!
//! When moat ends a TLS session with a fatal alert, the peer may still be sending (the rest
//! of its handshake flight, or data it wrote before it read the alert). Closing a socket
//! with unread data makes the kernel answer with a reset, and a reset destroys what is still
//! in flight towards the peer — the alert that says why. So a failed end lingers, as nginx's
//! `lingering_close` does: it writes out what is still pending (the alert), shuts its write
//! side (the peer reads the alert, then EOF), and reads and discards what the peer sends
//! until the peer closes, [`LINGER_BYTES`] have been discarded, or the linger deadline
//! ([`crate::timer::LINGER_TIME`]) passes.

use std::io::{self, Read, Write};

use super::socket::Socket;
use super::stream::{Conn, Stream};
use crate::buffer::BufferPool;

/// Most bytes a lingering end reads and throws away before it closes anyway.
pub const LINGER_BYTES: usize = 256 * 1024;

/// A failed end draining its peer; see the module documentation.
#[derive(Debug)]
pub struct Lingering<S = Conn> {
    socket: Socket<S>,
    /// Records still to write (the alert), at most one buffer's worth.
    unsent: Vec<u8>,
    shut: bool,
    drained: usize,
}

/// What one [`Lingering::drive`] pass came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LingerStep {
    /// Still waiting for the peer to read, or to close.
    Waiting,
    /// The peer closed, went away, or sent more than [`LINGER_BYTES`]: close now.
    Done,
}

impl<S: Stream> Lingering<S> {
    /// Lingers on `socket`, first writing `unsent`.
    pub fn new(socket: Socket<S>, unsent: Vec<u8>) -> Self {
        Self {
            socket,
            unsent,
            shut: false,
            drained: 0,
        }
    }

    /// The socket, for readiness.
    pub fn socket_mut(&mut self) -> &mut Socket<S> {
        &mut self.socket
    }

    /// Writes what is pending, shuts the write side, and discards what the peer sends.
    pub fn drive(&mut self, pool: &mut BufferPool) -> LingerStep {
        match self.try_drive(pool) {
            Ok(step) => step,
            // A reset or any other error: there is nobody left to linger for.
            Err(_) => LingerStep::Done,
        }
    }

    fn try_drive(&mut self, pool: &mut BufferPool) -> io::Result<LingerStep> {
        while !self.unsent.is_empty() && self.socket.is_writable() {
            match self.socket.write(&self.unsent) {
                Ok(0) => return Ok(LingerStep::Done),
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.unsent.is_empty() && !self.shut {
            self.socket.shutdown_write()?;
            self.shut = true;
        }
        if !self.socket.is_readable() {
            return Ok(LingerStep::Waiting);
        }
        let mut scratch = pool.take();
        let result = self.discard(scratch.as_mut_slice());
        pool.give(scratch);
        result
    }

    fn discard(&mut self, scratch: &mut [u8]) -> io::Result<LingerStep> {
        while self.socket.is_readable() {
            match self.socket.read(scratch) {
                Ok(0) => return Ok(LingerStep::Done),
                Ok(n) => {
                    self.drained += n;
                    if self.drained > LINGER_BYTES {
                        return Ok(LingerStep::Done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(LingerStep::Waiting)
    }
}
