//! Reaching the target: a nonblocking connect, its completion, and failover to the next
//! target when a connect is refused or times out.

use std::io;

use mio::net::{TcpStream, UnixStream};
use mio::Interest;
use rustls::client::UnbufferedClientConnection;

use super::{Ctx, EndReason, Side, Tunnel, Upstream};
use crate::address::SocketAddress;
use crate::endpoint::{Conn, Endpoint, Session, Socket, Stream};
use crate::route::{Route, Target};
use crate::timer::TimerClass;

impl Tunnel {
    /// The connect deadline passed: try the next target, if one is left untried.
    pub fn connect_timed_out(&mut self, ctx: &Ctx<'_>) -> Result<(), EndReason> {
        self.dial(ctx, Some(EndReason::Timeout(TimerClass::Connect)))
    }

    /// Starts a connect to the route's next target. After a failed attempt (`failed`), moves
    /// on until every target address has been tried once, then gives up with the failure.
    pub(super) fn dial(
        &mut self,
        ctx: &Ctx<'_>,
        mut failed: Option<EndReason>,
    ) -> Result<(), EndReason> {
        let first = *self
            .first_target
            .get_or_insert_with(|| ctx.route.target.first_turn());
        loop {
            if let Some(reason) = failed.take() {
                if self.dials >= ctx.route.target.addr_count() {
                    return Err(reason);
                }
                log::debug!(tunnel = self.id; "tunnel {}: {reason}; trying the next target", self.id);
            }
            let addr = ctx.route.target.addr(first, self.dials).cloned();
            self.dials += 1;
            match dial(ctx, addr) {
                Ok(mut upstream) => {
                    if let (true, Upstream::Connecting { socket, addr }) =
                        (self.traced, &mut upstream)
                    {
                        let tag = crate::trace::Tag {
                            tunnel: self.id,
                            side: "target",
                        };
                        tag.line(format_args!("connecting to {addr} (nonblocking)"));
                        socket.set_trace(tag);
                    }
                    self.up = upstream;
                    return Ok(());
                }
                Err(reason) => failed = Some(reason),
            }
        }
    }

    /// Turns a finished connect into the upstream end. Returns whether it did.
    pub(super) fn finish_connect(&mut self, route: &Route) -> Result<bool, EndReason> {
        let Upstream::Connecting { socket, addr } = &self.up else {
            return Ok(false);
        };
        if !connected(socket).map_err(EndReason::Connect)? {
            return Ok(false);
        }
        log::debug!(tunnel = self.id; "tunnel {}: connected to target {addr}", self.id);
        self.trace_line(format_args!(
            "target: connected to {addr} (writable, and SO_ERROR says no error)"
        ));
        if let Upstream::Connecting { socket, .. } =
            std::mem::replace(&mut self.up, Upstream::NotDialled)
        {
            let prelude = self.proxy_header().unwrap_or_default();
            self.up = Upstream::Open(target_endpoint(route, socket, prelude)?);
        }
        Ok(true)
    }
}

/// Starts a nonblocking connect to `addr`.
fn dial(ctx: &Ctx<'_>, addr: Option<SocketAddress>) -> Result<Upstream, EndReason> {
    let addr = addr.ok_or_else(|| EndReason::Connect(io::Error::other("no target address")))?;
    let mut stream = match &addr {
        SocketAddress::Tcp(ip) => {
            let stream = TcpStream::connect(*ip).map_err(EndReason::Connect)?;
            // Interactive protocols (redis, SQL) live on small writes; never delay them.
            stream.set_nodelay(true).map_err(EndReason::Connect)?;
            Conn::Tcp(stream)
        }
        SocketAddress::Unix(path) => {
            Conn::Unix(UnixStream::connect(path).map_err(EndReason::Connect)?)
        }
    };
    ctx.registry
        .register(
            &mut stream,
            Side::Target.token(ctx.key),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(EndReason::Connect)?;
    Ok(Upstream::Connecting {
        socket: Socket::new(stream),
        addr,
    })
}

/// Whether a nonblocking connect has finished: writable, and no error pending.
fn connected(socket: &Socket) -> io::Result<bool> {
    if !socket.is_writable() {
        return Ok(false);
    }
    // On Linux a connecting socket turns writable only when the connect has finished, and
    // then SO_ERROR says how; no `getpeername` is needed to confirm it.
    match socket.stream().take_error()? {
        Some(err) => Err(err),
        None => Ok(true),
    }
}

/// The upstream end once TCP is connected: plain (after `prelude`, a PROXY header), or a
/// TLS client session.
fn target_endpoint(route: &Route, socket: Socket, prelude: Vec<u8>) -> Result<Endpoint, EndReason> {
    match &route.target {
        Target::Remote { tls: Some(tls), .. } => {
            let conn = UnbufferedClientConnection::new(tls.config.clone(), tls.server_name.clone())
                .map_err(|e| EndReason::Tls(Side::Target, e))?;
            Ok(Endpoint::tls(socket, Session::Client(conn)))
        }
        _ => Ok(Endpoint::plain_after(socket, prelude)),
    }
}
