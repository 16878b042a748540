//! Listening sockets, built with `socket2` so every option is explicit.

use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::StartError;

/// Connections the kernel may hold completed but not yet accepted. At the connection cap
/// moat stops accepting and clients wait here; Linux silently caps it at
/// `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// Opens a nonblocking listener on `addr`.
///
/// `SO_REUSEADDR` lets moat restart at once while old connections sit in TIME_WAIT.
/// `TCP_NODELAY` is set on the listener because Linux copies it to every accepted socket,
/// which saves a system call per connection.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let fail = |source| StartError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        // [::]:port means IPv6 only, so that a second moat can own 0.0.0.0:port.
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.set_nodelay(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn port_in_use_is_a_runtime_error_naming_the_address() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {addr}: Address already in use")
        );
    }
}
