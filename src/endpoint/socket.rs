//! A nonblocking socket and the readiness the poll loop last reported for it.
//!
//! Sockets are registered once, edge-triggered, for both directions. [`Socket`] keeps that
//! readiness as two flags: an event sets them, and a read or write that returns
//! `WouldBlock` clears them. Code above this layer asks "is the socket readable?" and never
//! re-arms anything; an edge is never lost because a flag stays set until the kernel itself
//! says there is nothing more.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// A nonblocking TCP stream and the readiness last reported for it.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    readable: bool,
    writable: bool,
}

impl Socket {
    /// Wraps a stream that has just been registered with the poll; readiness arrives as events.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            readable: false,
            writable: false,
        }
    }

    /// Records readiness reported by the poll.
    pub fn mark(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// Whether a read may make progress.
    pub fn is_readable(&self) -> bool {
        self.readable
    }

    /// Whether a write may make progress.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The stream itself, for connect checks and addresses.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Runs one socket call: retries it when a signal interrupted it, and clears `ready` when
/// the kernel says `WouldBlock` — the one place readiness flags go down.
fn io_call<T>(ready: &mut bool, mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *ready = false;
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Reads clear `readable` when the kernel has nothing more.
impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io_call(&mut self.readable, || self.stream.read(buf))
    }
}

/// Writes clear `writable` when the kernel's send buffer is full.
impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io_call(&mut self.writable, || self.stream.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        io_call(&mut self.writable, || self.stream.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Shuts down the sending half of the socket: the peer reads EOF.
pub(super) fn shutdown_write(socket: &Socket) -> io::Result<()> {
    match socket.stream.shutdown(Shutdown::Write) {
        // The peer already went away; there is nobody left to tell.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}
