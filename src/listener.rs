//! Listening sockets, built with `socket2` so every option is explicit: TCP (one address,
//! or `:PORT` for every interface, IPv6 and IPv4) and unix-domain sockets.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::address::{Peer, SocketAddress};
use crate::endpoint::Conn;
use crate::error::StartError;

/// Connections the kernel may hold completed but not yet accepted. At the connection cap
/// moat stops accepting and clients wait here. Linux silently caps it at
/// `net.core.somaxconn` (4096 by default), so asking for more lets the operator's sysctl
/// decide: a host that expects reconnect storms of many thousands raises it (docs/SCALING.md).
pub const BACKLOG: i32 = 65_535;

/// How to open a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// File mode for a unix socket (`--unix-mode 0660`); `None` leaves the umask's.
    pub unix_mode: Option<u32>,
    /// `SO_REUSEPORT`, so that each worker thread can have a listener of its own on the
    /// same port and the kernel spreads connections over them.
    pub reuse_port: bool,
    /// The process is in the sandbox, whose seccomp filter kills it at a `chmod`: a unix
    /// socket with a `unix_mode` is refused instead.
    pub sandboxed: bool,
}

/// A nonblocking listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix-domain socket; the file is removed when the last listener on it goes.
    Unix(UnixListener, Arc<SocketFile>),
}

/// The file of a listening unix socket, removed when dropped (at exit, or when a reload
/// stops the service) if it is still the one moat created.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        // Someone may have replaced the file since: only remove our own.
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    /// Opens a listener on `at`.
    pub fn bind(at: &SocketAddress, options: ListenOptions) -> Result<Self, StartError> {
        match at {
            SocketAddress::Tcp(addr) => bind_tcp(*addr, options).map(Self::Tcp),
            SocketAddress::Unix(path) => bind_unix(path, options),
        }
    }

    /// Another listener on the same place, for another worker: on TCP a socket of its own
    /// (`SO_REUSEPORT`), on a unix socket the same one.
    pub fn sibling(&self, options: ListenOptions) -> Result<Self, StartError> {
        match self {
            Self::Tcp(listener) => {
                let addr = listener.local_addr().map_err(StartError::Runtime)?;
                let options = ListenOptions {
                    reuse_port: true,
                    ..options
                };
                bind_tcp(addr, options).map(Self::Tcp)
            }
            Self::Unix(listener, file) => {
                let fd = std::os::fd::AsFd::as_fd(listener)
                    .try_clone_to_owned()
                    .map_err(StartError::Runtime)?;
                let std_listener = std::os::unix::net::UnixListener::from(fd);
                Ok(Self::Unix(
                    UnixListener::from_std(std_listener),
                    file.clone(),
                ))
            }
        }
    }

    /// Accepts one connection (`WouldBlock` when none is waiting).
    pub fn accept(&self) -> io::Result<(Conn, Peer)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, addr) = listener.accept()?;
                Ok((Conn::Tcp(stream), Peer::tcp(addr)))
            }
            Self::Unix(listener, _) => {
                let (stream, _) = listener.accept()?;
                Ok((Conn::Unix(stream), Peer::Unix))
            }
        }
    }

    /// Where it listens, as the log shows it (tests read the port from it).
    pub fn local(&self) -> io::Result<SocketAddress> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(SocketAddress::Tcp),
            Self::Unix(_, file) => Ok(SocketAddress::Unix(file.path.clone())),
        }
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.register(registry, token, interests),
            Self::Unix(l, _) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.reregister(registry, token, interests),
            Self::Unix(l, _) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.deregister(registry),
            Self::Unix(l, _) => l.deregister(registry),
        }
    }
}

/// `SO_REUSEADDR` lets moat restart at once while old connections sit in TIME_WAIT.
/// `TCP_NODELAY` is set on the listener because Linux copies it to every accepted socket,
/// which saves a system call per connection. `[::]:PORT` listens on IPv6 only, so that a
/// second moat can own `0.0.0.0:PORT`; `:PORT` (written without an address) is the one
/// dual-stack socket for both.
fn bind_tcp(addr: SocketAddr, options: ListenOptions) -> Result<TcpListener, StartError> {
    let fail = |source| StartError::Listen {
        addr: addr.to_string(),
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if options.reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(!addr.ip().is_unspecified())
            .map_err(fail)?;
    }
    socket.set_nodelay(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A unix socket at `path`. A socket file left by a moat that died is removed; one that a
/// running process still answers on is an error, as is a file that is not a socket.
fn bind_unix(path: &Path, options: ListenOptions) -> Result<Listener, StartError> {
    let shown = format!("unix:{}", path.display());
    let fail = |source| StartError::Listen {
        addr: shown.clone(),
        source,
    };
    if options.unix_mode.is_some() && options.sandboxed {
        return Err(fail(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "--unix-mode cannot be set on a socket opened after start-up",
        )));
    }
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a running process is listening on it",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("{shown}: removing the socket file a previous process left");
                fs::remove_file(path).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket
        .bind(&SockAddr::unix(path).map_err(fail)?)
        .map_err(fail)?;
    let inode = {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).map_err(fail)?.ino()
    };
    let file = Arc::new(SocketFile {
        path: path.to_owned(),
        inode,
    });
    if let Some(mode) = options.unix_mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    socket.listen(BACKLOG).map_err(fail)?;
    let listener = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket));
    Ok(Listener::Unix(UnixListener::from_std(listener), file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(text: &str) -> Listener {
        Listener::bind(
            &SocketAddress::Tcp(text.parse().unwrap()),
            ListenOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let listener = tcp("127.0.0.1:0");
        let Ok(SocketAddress::Tcp(addr)) = listener.local() else {
            panic!()
        };
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        let Conn::Tcp(stream) = stream else { panic!() };
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn port_in_use_is_a_runtime_error_naming_the_address() {
        let first = tcp("127.0.0.1:0");
        let Ok(SocketAddress::Tcp(addr)) = first.local() else {
            panic!()
        };
        let err = Listener::bind(&SocketAddress::Tcp(addr), ListenOptions::default()).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {addr}: Address already in use")
        );
    }

    #[test]
    fn unix_sockets_replace_stale_files_refuse_live_ones_and_clean_up() {
        let dir = std::env::temp_dir().join(format!("moat-listener-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let at = SocketAddress::Unix(path.clone());
        // A stale socket file: bound once, its process gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let options = ListenOptions {
            unix_mode: Some(0o660),
            ..ListenOptions::default()
        };
        let live = Listener::bind(&at, options).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        let err = Listener::bind(&at, options).unwrap_err().to_string();
        assert!(
            err.contains("a running process is listening on it"),
            "{err}"
        );
        drop(live);
        assert!(!path.exists(), "the socket file outlived its listener");
        fs::write(&path, b"not a socket").unwrap();
        let err = Listener::bind(&at, options).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        fs::remove_file(&path).unwrap();
        let sandboxed = ListenOptions {
            sandboxed: true,
            ..options
        };
        let err = Listener::bind(&at, sandboxed).unwrap_err();
        assert!(
            matches!(&err, StartError::Listen { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied),
            "{err}"
        );
        assert!(!path.exists(), "a refused socket left a file");
        fs::remove_dir_all(&dir).unwrap();
    }
}
