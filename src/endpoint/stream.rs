//! The byte streams an end can sit on: a TCP or unix-domain socket ([`Conn`]), or anything
//! else that behaves like a nonblocking socket ([`Stream`]) — an in-memory pair in tests and
//! in the fuzzer, which drive the very same endpoint and relay code.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// What the endpoint code needs from a nonblocking byte stream besides reading and
/// writing (which return `WouldBlock` when the kernel is empty or full).
pub trait Stream: Read + Write + fmt::Debug {
    /// Shuts down the sending half: the peer reads EOF after what was sent.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Makes the coming close a reset rather than a FIN, where the transport has one.
    fn set_abortive_close(&self);

    /// Bytes written that the peer has not yet received; zero if unknown.
    fn unsent_bytes(&self) -> usize;

    /// The error a nonblocking connect ended with, if any (`SO_ERROR`).
    fn take_error(&self) -> io::Result<Option<io::Error>>;
}

/// A connected socket of the poll loop: TCP, or a unix-domain stream.
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A unix-domain stream connection.
    Unix(UnixStream),
}

impl Conn {
    /// The socket's own address, for TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write_vectored(bufs),
            Self::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Conn {
    fn shutdown_write(&self) -> io::Result<()> {
        let result = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Write),
            Self::Unix(s) => s.shutdown(Shutdown::Write),
        };
        match result {
            // The peer already went away; there is nobody left to tell.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }

    fn set_abortive_close(&self) {
        // SO_LINGER with a zero timeout makes close() send RST and drop unsent data. A unix
        // socket has no reset: its peer just reads EOF.
        if let Self::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }

    fn unsent_bytes(&self) -> usize {
        let queued = match self {
            Self::Tcp(s) => kernel_queue(s),
            Self::Unix(s) => kernel_queue(s),
        };
        queued.unwrap_or(0)
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Self::Tcp(s) => s.take_error(),
            Self::Unix(s) => s.take_error(),
        }
    }
}

impl Source for Conn {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.register(registry, token, interests),
            Self::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.reregister(registry, token, interests),
            Self::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.deregister(registry),
            Self::Unix(s) => s.deregister(registry),
        }
    }
}

/// `ioctl(SIOCOUTQ)`: the bytes in the socket's send queue the peer has not yet taken
/// (TCP: not yet acknowledged; a unix socket: not yet read).
///
/// No maintained crate wraps it (socket2, rustix and nix lack it), so this is the one
/// unsafe block in moat; the crate denies unsafe code everywhere else.
#[allow(unsafe_code)]
fn kernel_queue(socket: &impl AsRawFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) writes one `c_int` through the pointer, which
    // points to `queued`, alive for the call; the descriptor belongs to `socket`, which is
    // borrowed for the call, so it stays open.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}
