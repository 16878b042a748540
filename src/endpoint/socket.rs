//! A nonblocking socket and the readiness the poll loop last reported for it.
//!
//! Sockets are registered once, edge-triggered, for both directions. [`Socket`] keeps that
//! readiness as two flags: an event sets them, and a read or write that finds the kernel
//! empty or full (`WouldBlock`, or a short transfer) clears them. Code above this layer asks
//! "is the socket readable?" and never re-arms anything; an edge is never lost because a
//! flag stays set until the kernel itself has shown there is nothing more.

use std::io::{self, Read, Write};

use super::stream::{Conn, Stream};
use crate::trace;

/// What the poll reported for a socket in one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data (or EOF) to read.
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// The peer will send no more (FIN or reset), or the socket has an error.
    pub read_closed: bool,
    /// Nothing more can be sent (reset, or the socket has an error).
    pub write_closed: bool,
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.readable, "readable"),
            (self.writable, "writable"),
            (self.read_closed, "read-closed"),
            (self.write_closed, "write-closed"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&set.join("|"))
    }
}

impl Readiness {
    /// The readiness in a poll event. An error counts as both halves closed: the next read
    /// or write reports it.
    pub fn of(event: &mio::event::Event) -> Self {
        let error = event.is_error();
        Self {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed() || error,
            write_closed: event.is_write_closed() || error,
        }
    }
}

/// A nonblocking stream and the readiness last reported for it.
#[derive(Debug)]
pub struct Socket<S = Conn> {
    stream: S,
    readable: bool,
    writable: bool,
    /// Sticky: once the poll said a half is closed, it stays ready, since the kernel never
    /// reports that edge again and the next call returns at once (EOF or the error).
    read_closed: bool,
    write_closed: bool,
    /// Set when the tunnel is traced: socket calls are logged.
    trace: Option<trace::Tag>,
}

impl<S: Stream> Socket<S> {
    /// Wraps a stream that has just been registered with the poll; readiness arrives as events.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            readable: false,
            writable: false,
            read_closed: false,
            write_closed: false,
            trace: None,
        }
    }

    /// Logs this socket's calls under `tag` (`--trace`).
    pub fn set_trace(&mut self, tag: trace::Tag) {
        self.trace = Some(tag);
    }

    /// The trace tag, when the tunnel is traced.
    pub fn trace(&self) -> Option<trace::Tag> {
        self.trace
    }

    /// Records readiness reported by the poll.
    pub fn mark(&mut self, ready: Readiness) {
        self.read_closed |= ready.read_closed;
        self.write_closed |= ready.write_closed;
        self.readable |= ready.readable || ready.read_closed;
        self.writable |= ready.writable || ready.write_closed;
    }

    /// Whether a read may make progress.
    pub fn is_readable(&self) -> bool {
        self.readable
    }

    /// Records that the kernel has nothing more to read for now, learnt without a read
    /// (a peek that found less than wanted); a closed half stays ready.
    pub fn mark_drained(&mut self) {
        if !self.read_closed {
            self.readable = false;
        }
    }

    /// Whether a write may make progress.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The stream itself.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream itself, for registering it with the poll.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes written to this socket that the peer has not yet received (TCP: not yet
    /// acknowledged; a unix socket: not yet read). Zero if the kernel cannot say.
    ///
    /// A tunnel that has handed everything to the kernel makes no progress of its own while
    /// a slow peer reads: this is how the idle and close timeouts tell such a peer, still
    /// reading, from one that stopped.
    pub fn unsent_bytes(&self) -> usize {
        self.stream.unsent_bytes()
    }

    /// Closes the connection with a reset instead of a FIN: how an abort on one side of a
    /// tunnel reaches a plain peer on the other, so it cannot mistake a cut-off stream for
    /// a complete one.
    pub fn abort(self) {
        if let Some(tag) = self.trace {
            tag.line(format_args!("close with a reset (SO_LINGER 0)"));
        }
        self.stream.set_abortive_close();
    }

    /// Shuts down the sending half of the socket: the peer reads EOF.
    pub fn shutdown_write(&self) -> io::Result<()> {
        if let Some(tag) = self.trace {
            tag.line(format_args!("shutdown(write): the peer reads EOF"));
        }
        self.stream.shutdown_write()
    }
}

/// Runs one socket call of `len` bytes: retries it when a signal interrupted it, and clears
/// `ready` when the kernel has no more to give or take — the one place readiness flags go
/// down.
///
/// That is `WouldBlock`, and also a *short* transfer: a read that returns less than asked
/// has drained the receive queue, and a write that takes less than offered has filled the
/// send buffer. Edge-triggered epoll reports the next arrival or the next free space as a
/// new event, so the flag needs no confirming `WouldBlock`, and the system call that would
/// only have said so is saved. The exception is a half the poll has reported closed
/// (`closed`): a FIN that arrived with the data is not announced again, so that half stays
/// ready and the next call returns the EOF (or error) at once.
fn io_call(
    ready: &mut bool,
    closed: bool,
    len: usize,
    mut call: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *ready = false;
                return Err(e);
            }
            Ok(n) if n < len && !closed => {
                *ready = false;
                return Ok(n);
            }
            other => return other,
        }
    }
}

/// Reads clear `readable` when the kernel has nothing more.
impl<S: Stream> Read for Socket<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = io_call(&mut self.readable, self.read_closed, buf.len(), || {
            self.stream.read(buf)
        });
        if let Some(tag) = self.trace {
            tag.line(format_args!(
                "{}",
                trace::io_outcome("read", buf.len(), &result)
            ));
        }
        result
    }
}

/// Writes clear `writable` when the kernel's send buffer is full.
impl<S: Stream> Write for Socket<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = io_call(&mut self.writable, self.write_closed, buf.len(), || {
            self.stream.write(buf)
        });
        if let Some(tag) = self.trace {
            tag.line(format_args!(
                "{}",
                trace::io_outcome("write", buf.len(), &result)
            ));
        }
        result
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let result = io_call(&mut self.writable, self.write_closed, len, || {
            self.stream.write_vectored(bufs)
        });
        if let Some(tag) = self.trace {
            tag.line(format_args!(
                "{}",
                trace::io_outcome("writev", len, &result)
            ));
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
