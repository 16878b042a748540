//! One tunnel: a downstream end (the accepted connection), an upstream end (the target),
//! and the steps between accept and close.
//!
//! ```text
//!  accept ─▶ client TLS handshake ─▶ connect target ─▶ target TLS handshake ─▶ relay ─▶ close
//!            (server mode only)                        (client mode only)
//! ```
//!
//! In server mode the target is dialled only once the client's handshake, and so its
//! certificate, has been accepted: a refused client never reaches the backend.
//! [`Tunnel::drive`] takes the tunnel as far as readiness allows each time the poll loop
//! reports an event for one of its sockets.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::Registry;
use rustls::server::UnbufferedServerConnection;

use crate::address::Peer;
use crate::buffer::BufferPool;

use crate::admission::HandshakeStage;
use crate::endpoint::{Endpoint, EndpointError, LingerStep, Lingering, Readiness, Session, Socket};
use crate::metrics::ServiceMetrics;
use crate::route::{Route, Target};
use crate::timer::TimerClass;
use crate::tls::{identity, notes};

mod connect;
mod proxy;
mod reason;
mod relay;
mod report;

use proxy::ProxyIn;

pub(crate) use reason::tls_failure;
pub use reason::{EndReason, Side};
pub use relay::{Direction, Relay};

/// Plaintext bytes one tunnel may move per [`Tunnel::drive`], so one bulk transfer cannot
/// starve the other tunnels of a turn.
pub const TURN_BUDGET: usize = 256 * 1024;

/// What [`Tunnel::drive`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Bytes moved or the handshake advanced: the idle clock restarts.
    pub progressed: bool,
    /// The turn's budget ran out with work left: drive again next turn.
    pub again: bool,
    /// A failed connect moved on to the next target: its connect deadline starts afresh.
    pub redialed: bool,
    /// The tunnel's TLS handshake (the client's in server mode, the target's in client
    /// mode) finished during this drive.
    pub handshake_done: bool,
    /// The PROXY header arrived during this drive: the peer is now the address it carries.
    pub proxy_done: bool,
}

/// What the loop lends a tunnel while driving it.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// For registering the target socket.
    pub registry: &'a Registry,
    /// The tunnel's slab key.
    pub key: usize,
    /// Where the tunnel leads.
    pub route: &'a Route,
    /// Buffers for the bytes in flight, lent only while there are bytes to hold.
    pub pool: &'a mut BufferPool,
}

/// The upstream end as it comes into being.
#[derive(Debug)]
enum Upstream {
    /// Server mode: waiting for the client's handshake before dialling.
    NotDialled,
    /// TCP connect in flight.
    Connecting {
        socket: Socket,
        addr: crate::address::SocketAddress,
    },
    /// Connected (a TLS handshake may still be under way inside the endpoint).
    Open(Endpoint),
}

/// A tunnel between an accepted connection and its target.
#[derive(Debug)]
pub struct Tunnel {
    /// Unique for the life of the process (slab keys are reused; ids are not).
    pub id: u64,
    /// Where it goes: the route of its service as it was when the tunnel started.
    pub route: Arc<Route>,
    /// Its service's counters in this worker.
    pub metrics: Arc<ServiceMetrics>,
    /// Who connected.
    pub peer: Peer,
    /// Whether it waits in the loop's ready queue.
    pub queued: bool,
    started: Instant,
    down: Endpoint,
    up: Upstream,
    relay: Relay,
    /// The server name the client asked for (server mode).
    sni: Option<Box<str>>,
    /// Connect attempts so far (failover stops once every target address was tried).
    dials: usize,
    /// This tunnel's round-robin turn: where its walk through the targets starts.
    first_target: Option<usize>,
    /// After its end was logged, the one end still draining its peer (see [`Lingering`]).
    lingering: Option<(Side, Lingering)>,
    /// Bytes the kernel held for the peers when an idle or close deadline last passed with
    /// bytes still queued; `None` once the tunnel moved bytes itself.
    queued_at_deadline: Option<usize>,
    /// Whether a PROXY header is still to be read (`--accept-proxy`).
    proxy_in: ProxyIn,
    /// Where the client connected, as the PROXY header said.
    proxied_to: Option<std::net::SocketAddr>,
    /// The address counted for `--max-conns-per-ip`, to give back at the end.
    pub counted_ip: Option<std::net::IpAddr>,
    /// Whether `--trace` follows this tunnel.
    pub traced: bool,
}

impl Tunnel {
    /// A tunnel for a connection just accepted on `route`.
    pub fn new(
        id: u64,
        route: Arc<Route>,
        metrics: Arc<ServiceMetrics>,
        socket: Socket,
        peer: Peer,
        now: Instant,
    ) -> io::Result<Self> {
        let route_accepts_proxy = route.accept_proxy.is_some();
        let down = match &route.accept_tls {
            Some(tls) => {
                let conn = UnbufferedServerConnection::new(tls.config.clone())
                    .map_err(io::Error::other)?;
                Endpoint::tls(socket, Session::Server(conn))
            }
            None => Endpoint::plain(socket),
        };
        let up = match route.target {
            Target::Mirror => Upstream::Open(Endpoint::Mirror(Default::default())),
            Target::Remote { .. } => Upstream::NotDialled,
        };
        Ok(Self {
            id,
            route,
            metrics,
            peer,
            queued: false,
            started: now,
            down,
            up,
            relay: Relay::default(),
            sni: None,
            dials: 0,
            first_target: None,
            lingering: None,
            queued_at_deadline: None,
            proxy_in: if route_accepts_proxy {
                ProxyIn::Waiting
            } else {
                ProxyIn::Done
            },
            proxied_to: None,
            counted_ip: None,
            traced: false,
        })
    }

    /// Records readiness reported for one of the tunnel's sockets.
    pub fn mark(&mut self, side: Side, ready: Readiness) {
        if let Some((lingering_side, end)) = &mut self.lingering {
            if *lingering_side == side {
                end.socket_mut().mark(ready);
            }
            return;
        }
        let socket = match (side, &mut self.up) {
            (Side::Client, _) => self.down.socket_mut(),
            (Side::Target, Upstream::Connecting { socket, .. }) => Some(socket),
            (Side::Target, Upstream::Open(end)) => end.socket_mut(),
            (Side::Target, Upstream::NotDialled) => None,
        };
        if let Some(socket) = socket {
            socket.mark(ready);
        }
    }

    /// Evicted from the handshake budget: drops the client's TLS state and holds the bare
    /// connection, unread, until its handshake deadline. A slowloris client that is closed at
    /// once just reconnects; held, it costs a descriptor and no work.
    pub fn hold(&mut self, pool: &mut BufferPool) {
        let down = std::mem::replace(&mut self.down, Endpoint::Mirror(Default::default()));
        self.down = down.into_held(pool);
    }

    /// Whether the tunnel got as far as relaying: both handshakes done, target connected.
    pub fn is_established(&self) -> bool {
        matches!(&self.up, Upstream::Open(up) if !up.is_handshaking())
            && !self.down.is_handshaking()
            && !self.is_held()
    }

    /// Whether the tunnel was evicted and is only being held (see [`Tunnel::hold`]).
    pub fn is_held(&self) -> bool {
        matches!(self.down, Endpoint::Held(_))
    }

    /// How far the tunnel's TLS handshake has come, if one is under way.
    pub fn handshake_stage(&self) -> Option<HandshakeStage> {
        match &self.up {
            // A PROXY header counts in the budget like a hello that has not come.
            _ if self.proxy_in == ProxyIn::Waiting => Some(HandshakeStage::Hello),
            _ if self.down.is_handshaking() && !self.down.has_sent() => Some(HandshakeStage::Hello),
            _ if self.down.is_handshaking() => Some(HandshakeStage::Answered),
            Upstream::Open(up) if up.is_handshaking() => Some(HandshakeStage::Answered),
            _ => None,
        }
    }

    /// The deadline the tunnel is under in its current step.
    pub fn timer_class(&self) -> TimerClass {
        if self.lingering.is_some() {
            return TimerClass::Linger;
        }
        if self.proxy_in == ProxyIn::Waiting {
            return TimerClass::Proxy;
        }
        match &self.up {
            _ if self.down.is_handshaking() => TimerClass::Handshake,
            Upstream::NotDialled => TimerClass::Handshake,
            Upstream::Connecting { .. } => TimerClass::Connect,
            Upstream::Open(up) if up.is_handshaking() => TimerClass::Handshake,
            Upstream::Open(_) if self.relay.is_half_closed() => TimerClass::Close,
            Upstream::Open(_) => TimerClass::Idle,
        }
    }

    /// Takes the tunnel as far as readiness allows: handshakes, connect, relay.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Result<Step, EndReason> {
        if self.is_held() {
            return Ok(Step::default());
        }
        if let Some((_, end)) = &mut self.lingering {
            if end.drive(ctx.pool) == LingerStep::Done {
                self.lingering = None;
            }
            return Ok(Step::default());
        }
        let mut step = Step::default();
        if self.proxy_in == ProxyIn::Waiting {
            if !self.read_proxy_header()? {
                return Ok(step);
            }
            step.progressed = true;
            step.proxy_done = true;
            // The loop counts the new peer before the tunnel goes on.
            return Ok(step);
        }
        if self.down.is_handshaking() {
            let (stepped, notes) = notes::during(|| self.down.handshake(ctx.pool));
            if let Some(name) = notes.server_name {
                self.sni = Some(name);
            }
            step.progressed |= stepped.map_err(|e| tls_failure(Side::Client, e, notes.refusal))?;
            if self.down.is_handshaking() {
                return Ok(step);
            }
            self.client_authenticated(ctx.route)?;
            step.handshake_done = true;
        }
        if let Upstream::NotDialled = self.up {
            self.dial(ctx, None)?;
            step.progressed = true;
        }
        match self.finish_connect(ctx.route) {
            Ok(connected) => step.progressed |= connected,
            Err(EndReason::Connect(e)) => {
                self.dial(ctx, Some(EndReason::Connect(e)))?;
                step.progressed = true;
                step.redialed = true;
                return Ok(step);
            }
            Err(other) => return Err(other),
        }
        let Upstream::Open(up) = &mut self.up else {
            return Ok(step);
        };
        if up.is_handshaking() {
            let (stepped, notes) = notes::during(|| up.handshake(ctx.pool));
            step.progressed |= stepped.map_err(|e| tls_failure(Side::Target, e, notes.refusal))?;
            if up.is_handshaking() {
                return Ok(step);
            }
            step.handshake_done = true;
        }
        let (moved, again) = self.relay(ctx.pool)?;
        step.progressed |= moved;
        step.again = again;
        Ok(step)
    }

    /// Follows this tunnel with `--trace` from now on.
    pub fn trace(&mut self) {
        self.traced = true;
        if let Some(socket) = self.down.socket_mut() {
            socket.set_trace(crate::trace::Tag {
                tunnel: self.id,
                side: "client",
            });
        }
    }

    /// A trace line about this tunnel, when it is traced.
    pub fn trace_line(&self, what: std::fmt::Arguments<'_>) {
        if self.traced {
            crate::trace::Tag {
                tunnel: self.id,
                side: "",
            }
            .line(what);
        }
    }

    /// When the tunnel was accepted.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Plaintext bytes moved so far: (to the target, to the client).
    pub fn bytes(&self) -> (u64, u64) {
        (self.relay.to_target.bytes, self.relay.to_client.bytes)
    }

    /// The rustls session of the tunnel's TLS leg (the client's in server mode, the
    /// target's in client mode), for what its handshake negotiated.
    pub fn tls_common(&self) -> Option<&rustls::CommonState> {
        self.down.tls_common().or(match &self.up {
            Upstream::Open(up) => up.tls_common(),
            _ => None,
        })
    }

    /// Whether both directions have finished: the tunnel can be closed without losing data.
    pub fn is_finished(&self) -> bool {
        self.relay.is_finished() || self.has_ended()
    }

    /// Records that the tunnel moved bytes or advanced its handshake.
    pub fn note_progress(&mut self) {
        self.queued_at_deadline = None;
    }

    /// At an idle or close deadline: whether the peers are still taking bytes the kernel
    /// holds for them. moat hands the kernel all it can at once, so a slow reader makes no
    /// progress moat can see: it is still reading if the kernel holds bytes for it and
    /// holds fewer than at the last deadline. A peer that stopped reading is cut at the
    /// next deadline (at most two timeout periods after its last progress).
    pub fn peers_still_reading(&mut self) -> bool {
        let queued = self.down.unsent_bytes()
            + match &mut self.up {
                Upstream::Open(end) => end.unsent_bytes(),
                _ => 0,
            };
        let reading = queued > 0 && self.queued_at_deadline.is_none_or(|before| queued < before);
        self.queued_at_deadline = Some(queued);
        reading
    }

    /// Whether the tunnel's end was logged and only a lingering end kept it (see
    /// [`Tunnel::close`]); once this holds and it is finished, it goes without another line.
    pub fn has_ended(&self) -> bool {
        self.lingering.is_none() && matches!(self.down, Endpoint::Closed)
    }

    /// Closes both ends after the tunnel ended for `reason`; returns whether one of them
    /// lingers (the tunnel must then stay until [`Tunnel::has_ended`] or its linger
    /// deadline).
    ///
    /// A peer is told "end of stream" only when the stream towards it ended at its source
    /// and that end was passed on. A stream cut short for any other reason — the other
    /// side reset or failed its TLS session, the target could not be reached or failed its
    /// handshake, a deadline or a shutdown came first — reaches it as an abort: a reset
    /// towards a plain peer, no `close_notify` towards a TLS one. So a backend never takes
    /// an upload moat gave up on, or bytes moat could not deliver, for a complete one. A TLS
    /// peer that was sent a fatal alert gets a lingering close instead, so the alert arrives.
    pub fn close(&mut self, reason: &EndReason, pool: &mut BufferPool) -> bool {
        let alerted = reason.alerted();
        let down = std::mem::replace(&mut self.down, Endpoint::Closed);
        let up = match std::mem::replace(&mut self.up, Upstream::NotDialled) {
            Upstream::Open(end) => Some(end),
            Upstream::Connecting { socket, .. } => {
                // The target may have accepted already: it must not see a clean end either.
                socket.abort();
                None
            }
            Upstream::NotDialled => None,
        };
        let ends = [(Side::Client, Some(down)), (Side::Target, up)];
        for (side, end) in ends {
            let Some(end) = end else { continue };
            let abort = !self.relay.towards(side).is_finished();
            if let Some(lingering) = end.close(pool, alerted == Some(side), abort) {
                self.lingering = Some((side, lingering));
            }
        }
        self.lingering.is_some()
    }

    /// How a tunnel that finished both directions ended.
    pub fn clean_end(&self) -> EndReason {
        self.relay.clean_end()
    }

    /// Gives back the buffers the tunnel holds; call before dropping it.
    pub fn release(&mut self, pool: &mut BufferPool) {
        self.down.release(pool);
        if let Upstream::Open(up) = &mut self.up {
            up.release(pool);
        }
    }

    /// Moves bytes both ways until nothing moves or the budget is spent (see
    /// [`Relay::run`]).
    fn relay(&mut self, pool: &mut BufferPool) -> Result<(bool, bool), EndReason> {
        let Upstream::Open(up) = &mut self.up else {
            return Ok((false, false));
        };
        let (moved, again) = self.relay.run(&mut self.down, up, pool)?;
        // A PROXY header no data went out with goes alone: the backend may speak first.
        let wrote = up
            .flush_prelude()
            .map_err(|e| reason::failure(Side::Target, e))?;
        Ok((moved || wrote, again))
    }

    /// The client's handshake is done. A resumed session's certificate is checked again
    /// against the route's rules, since rustls verifies certificates only in full handshakes.
    fn client_authenticated(&mut self, route: &Route) -> Result<(), EndReason> {
        let resumed = self.down.negotiated().is_some_and(|n| n.resumed);
        let verifier = route
            .accept_tls
            .as_ref()
            .and_then(|tls| tls.verifier.as_ref());
        if let (true, Some(verifier)) = (resumed, verifier) {
            let chain = self.down.peer_certificates().unwrap_or_default();
            let now = rustls::pki_types::UnixTime::now();
            let (checked, notes) = notes::during(|| verifier.recheck(chain, now));
            checked.map_err(|e| tls_failure(Side::Client, EndpointError::Tls(e), notes.refusal))?;
        }
        if log::log_enabled!(log::Level::Debug) {
            let subject = self.subject().map(|s| format!(" as {s}"));
            log::debug!(
                tunnel = self.id;
                "tunnel {}: client {} finished TLS handshake{}",
                self.id,
                self.peer,
                subject.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The subject of the client's certificate, for the log.
    fn subject(&self) -> Option<String> {
        let certs = self.down.peer_certificates()?;
        identity::subject(certs.first()?)
    }
}
