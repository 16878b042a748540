//! An in-memory socket pair that behaves as moat expects a nonblocking TCP connection to.
//!
//! Each direction holds at most `capacity` bytes, so writes come up short and then fail
//! with `WouldBlock`, and reads drain it. Shutting down the sending half lets the other end
//! read EOF after what was sent. Dropping an end closes it: with a FIN, or with a reset if
//! it was marked abortive or still had unread bytes (as the kernel does); after a reset the
//! other end's reads and writes fail with `ConnectionReset`.
//!
//! What the poll would report is kept per end as edge-triggered events: an arrival, freed
//! room, a FIN or a reset each raise the matching flag, and [`MemStream::take_events`] hands
//! them over (and clears them), to be given to `Socket::mark`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::rc::Rc;

use crate::endpoint::{Readiness, Stream};

/// One direction of the pair.
#[derive(Debug, Default)]
struct Lane {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// The writer shut down its sending half or closed: EOF after `bytes`.
    shut: bool,
    /// The writer reset the connection: reads fail.
    reset: bool,
    /// The reader closed: writes fail.
    reader_gone: bool,
}

#[derive(Debug)]
struct Shared {
    /// `lanes[0]` carries bytes from end 0 to end 1, `lanes[1]` the other way.
    lanes: [Lane; 2],
    /// Events not yet handed to each end's poll.
    events: [Readiness; 2],
    /// Bytes moved and ends closed so far, by either end.
    activity: u64,
}

/// Watches a pair without being one of its ends: how much has happened on it.
#[derive(Debug, Clone)]
pub(crate) struct Probe(Rc<RefCell<Shared>>);

impl Probe {
    /// Bytes moved and ends closed so far; it grows whenever anything happens.
    pub(crate) fn activity(&self) -> u64 {
        self.0.borrow().activity
    }
}

/// One end of an in-memory connection.
pub(crate) struct MemStream {
    shared: Rc<RefCell<Shared>>,
    /// 0 or 1: which end this is.
    me: usize,
    abortive: Cell<bool>,
}

/// A connected pair, each direction holding at most `capacity` bytes (at least one), and
/// a probe to watch it.
pub(crate) fn pair(capacity: usize) -> (MemStream, MemStream, Probe) {
    let lane = || Lane {
        capacity: capacity.max(1),
        ..Lane::default()
    };
    // A socket just connected and registered is writable: the poll says so at once.
    let writable = Readiness {
        writable: true,
        ..Readiness::default()
    };
    let shared = Rc::new(RefCell::new(Shared {
        lanes: [lane(), lane()],
        events: [writable, writable],
        activity: 0,
    }));
    let end = |me| MemStream {
        shared: shared.clone(),
        me,
        abortive: Cell::new(false),
    };
    (end(0), end(1), Probe(shared.clone()))
}

impl MemStream {
    fn peer(&self) -> usize {
        1 - self.me
    }

    /// The events since the last call, as the poll would report them.
    pub(crate) fn take_events(&self) -> Readiness {
        std::mem::take(&mut self.shared.borrow_mut().events[self.me])
    }

    /// Bytes this end could write now.
    pub(crate) fn room(&self) -> usize {
        let lane = &self.shared.borrow().lanes[self.me];
        lane.capacity.saturating_sub(lane.bytes.len())
    }

    /// Bytes sent towards this end that it has not read.
    pub(crate) fn unread(&self) -> usize {
        self.shared.borrow().lanes[self.peer()].bytes.len()
    }
}

impl fmt::Debug for MemStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStream").field("end", &self.me).finish()
    }
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut shared = self.shared.borrow_mut();
        let peer = self.peer();
        let lane = &mut shared.lanes[peer];
        if lane.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if lane.bytes.is_empty() {
            return if lane.shut {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(lane.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(lane.bytes.drain(..n)) {
            *slot = byte;
        }
        // Room freed: the writer's poll reports it.
        shared.events[peer].writable = true;
        shared.activity += n as u64;
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut shared = self.shared.borrow_mut();
        let (me, peer) = (self.me, self.peer());
        if shared.lanes[peer].reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let lane = &mut shared.lanes[me];
        if lane.shut || lane.reader_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let room = lane.capacity.saturating_sub(lane.bytes.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        lane.bytes.extend(buf.iter().take(n));
        shared.events[peer].readable = true;
        shared.activity += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for MemStream {
    fn shutdown_write(&self) -> io::Result<()> {
        let mut shared = self.shared.borrow_mut();
        let (me, peer) = (self.me, self.peer());
        if !shared.lanes[me].shut {
            shared.lanes[me].shut = true;
            shared.activity += 1;
            let events = &mut shared.events[peer];
            events.readable = true;
            events.read_closed = true;
        }
        Ok(())
    }

    fn set_abortive_close(&self) {
        self.abortive.set(true);
    }

    fn unsent_bytes(&self) -> usize {
        self.shared.borrow().lanes[self.me].bytes.len()
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        // Closing with unread bytes makes the kernel answer with a reset.
        let reset = self.abortive.get() || self.unread() > 0;
        let mut shared = self.shared.borrow_mut();
        let (me, peer) = (self.me, self.peer());
        shared.lanes[peer].reader_gone = true;
        shared.activity += 1;
        let lane = &mut shared.lanes[me];
        lane.shut = true;
        if reset {
            lane.reset = true;
            lane.bytes.clear();
        }
        shared.events[peer] = Readiness {
            readable: true,
            writable: true,
            read_closed: true,
            write_closed: reset,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_flow_up_to_capacity_then_block() {
        let (mut a, mut b, _) = pair(4);
        assert_eq!(a.write(b"hello").unwrap(), 4);
        assert_eq!(a.write(b"o").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(b.take_events().readable);
        let mut buf = [0; 8];
        assert_eq!(b.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"hell");
        assert!(a.take_events().writable);
        assert_eq!(
            b.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn shutdown_is_eof_after_the_data_and_a_reset_fails_both_ways() {
        let (mut a, mut b, _) = pair(16);
        a.write_all(b"end").unwrap();
        a.shutdown_write().unwrap();
        assert!(b.take_events().read_closed);
        let mut buf = [0; 8];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        b.write_all(b"reply").unwrap();
        a.set_abortive_close();
        drop(a);
        assert!(b.take_events().write_closed);
        assert_eq!(
            b.write(b"x").unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            b.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    }

    #[test]
    fn closing_with_unread_bytes_resets() {
        let (mut a, b, _) = pair(16);
        a.write_all(b"unread").unwrap();
        drop(b);
        let mut buf = [0; 8];
        assert_eq!(
            a.write(b"x").unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            a.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        let (mut c, d, _) = pair(16);
        drop(d);
        assert_eq!(c.read(&mut buf).unwrap(), 0, "a plain close is a FIN");
        assert_eq!(c.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
