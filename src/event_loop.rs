//! The poll loop: one thread, one `mio::Poll`, every socket of every tunnel.
//!
//! Each turn of [`EventLoop::run`] does, in order:
//!
//! 1. **wait** for readiness, no longer than the earliest deadline (zero if work is left over);
//! 2. **dispatch** events: mark sockets ready and queue their tunnels, note listeners and signals;
//! 3. **accept** new connections, within the connection cap and a per-turn budget;
//! 4. **drive** each queued tunnel once, up to its byte budget ([`crate::tunnel::TURN_BUDGET`]);
//! 5. **expire** deadlines from the heads of the timer lists.
//!
//! A tunnel that ends is removed at once (`EventLoop::end_tunnel`): by then every event
//! of the turn has been dispatched into readiness flags, and the ready queue names tunnels
//! by `(key, id)`, so a reused slab key is never mistaken for its previous tunnel. Nothing in
//! a turn looks at a tunnel that has no event, no deadline due and no leftover work.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::address::Peer;
use crate::buffer::BufferPool;
use crate::config::{Limits, Timeouts};
use crate::endpoint::{Conn, Readiness, Socket};
use crate::limits::{
    handshake_room, HandshakeRoom, HandshakeStage, Handshakes, LogLimiter, PerIpCount,
};
use crate::listener::Listener;
use crate::logger;
use crate::notify::Notifier;
use crate::route::Route;
use crate::timer::{TimerClass, Timers};
use crate::tunnel::{Ctx, EndReason, Side, Tunnel};

/// Token of the signal pipe; listeners count down from just below it, tunnels up from 0.
const SIGNALS: Token = Token(usize::MAX);

/// Connections accepted per listener per turn, so a connect storm cannot starve open tunnels.
const ACCEPT_BUDGET: usize = 64;

/// How long to stop accepting after an accept error such as EMFILE: long enough for
/// tunnels to end and free descriptors, short enough that clients barely notice.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Lines per [`WARNING_INTERVAL`] for tunnels that ended before they were established.
const UNESTABLISHED_BURST: u32 = 20;

/// At most one line per this interval for each kind of repeated warning.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Events taken from the kernel per `poll` call.
const EVENT_CAPACITY: usize = 1024;

fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

/// Where a service's connections go, and the sockets it listens on.
#[derive(Debug)]
pub struct Service {
    route: Route,
    /// Where its tunnels go, as the `listening on` line shows it.
    target: String,
}

impl Service {
    /// A service routing to `route`, whose targets read `target` in the log.
    pub fn new(route: Route, target: String) -> Self {
        Self { route, target }
    }
}

/// A listening socket of the loop, and the service it belongs to.
#[derive(Debug)]
struct ListenerSlot {
    listener: Listener,
    service: usize,
    /// The kernel said connections are waiting and no accept has said `WouldBlock` since.
    acceptable: bool,
}

/// Everything the loop owns. A single thread owns it all, so plain `&mut` suffices.
pub struct EventLoop {
    poll: Poll,
    signals: Signals,
    services: Vec<Service>,
    /// Every listening socket; its index is its token's (see [`listener_token`]).
    listeners: Vec<Option<ListenerSlot>>,
    tunnels: Slab<Tunnel>,
    timers: Timers,
    /// Tunnels with readiness or leftover work, with their id (a key may be reused).
    ready: VecDeque<(usize, u64)>,
    /// Buffers for the bytes in flight, lent to tunnels only while they hold something.
    pool: BufferPool,
    limits: Limits,
    timeouts: Timeouts,
    next_id: u64,
    accept_paused_until: Option<Instant>,
    at_cap: bool,
    accept_warnings: LogLimiter,
    /// Handshakes in flight, by stage, for `--max-handshakes`.
    handshakes: Handshakes,
    per_ip: PerIpCount,
    /// Lines for tunnels that never got established (refused, timed out, evicted).
    unestablished_lines: LogLimiter,
    evicted: u64,
    eviction_warnings: LogLimiter,
    shutdown_deadline: Option<Instant>,
    /// The service manager, told when a shutdown begins.
    notifier: Option<Notifier>,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("services", &self.services)
            .field("tunnels", &self.tunnels.len())
            .field("ready", &self.ready.len())
            .field("shutdown_deadline", &self.shutdown_deadline)
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// Registers the listeners and signal handlers; nothing is accepted until [`Self::run`].
    /// `listeners` pairs each listening socket with the index of its service.
    pub fn new(
        services: Vec<Service>,
        listeners: Vec<(usize, Listener)>,
        limits: Limits,
        timeouts: Timeouts,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut slots = Vec::with_capacity(listeners.len());
        for (index, (service, mut listener)) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(&mut listener, listener_token(index), Interest::READABLE)?;
            slots.push(Some(ListenerSlot {
                listener,
                service,
                acceptable: false,
            }));
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Self {
            poll,
            signals,
            services,
            listeners: slots,
            tunnels: Slab::new(),
            timers: Timers::new(&timeouts),
            ready: VecDeque::new(),
            pool: BufferPool::default(),
            limits,
            timeouts,
            next_id: 0,
            accept_paused_until: None,
            at_cap: false,
            accept_warnings: LogLimiter::new(WARNING_INTERVAL),
            handshakes: Handshakes::default(),
            unestablished_lines: LogLimiter::with_burst(WARNING_INTERVAL, UNESTABLISHED_BURST),
            per_ip: PerIpCount::new(limits.max_conns_per_ip),
            evicted: 0,
            eviction_warnings: LogLimiter::new(WARNING_INTERVAL),
            shutdown_deadline: None,
            notifier: None,
        })
    }

    /// Says in the log where each service listens (tests read the port from these lines).
    /// Called once the loop can take signals: from this line on, moat is ready.
    pub fn announce(&self) {
        for slot in self.listeners.iter().flatten() {
            let Some(service) = self.services.get(slot.service) else {
                continue;
            };
            if let Ok(local) = slot.listener.local() {
                log::info!(
                    "{}: listening on {local}, forwarding to {}",
                    service.route.name,
                    service.target
                );
            }
        }
    }

    /// Where each listener listens, in the order they were given (the demo's guide).
    pub fn local_addresses(&self) -> Vec<Option<crate::address::SocketAddress>> {
        self.listeners
            .iter()
            .map(|slot| slot.as_ref().and_then(|s| s.listener.local().ok()))
            .collect()
    }

    /// Tells `notifier`'s service manager when a graceful shutdown begins (`STOPPING=1`).
    pub fn notify_with(&mut self, notifier: Option<Notifier>) {
        self.notifier = notifier;
    }

    /// Runs until a signal asks moat to stop and the open tunnels have finished (or the
    /// shutdown timeout has passed).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        let mut now = Instant::now();
        logger::start_writer();
        logger::batch(true);
        let result = loop {
            // The turn's log lines go out together, before the loop may sleep.
            logger::flush();
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
            now = Instant::now();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            self.accept(now);
            self.drive_ready(now);
            self.expire(now);
            if self.shutdown_is_over(now) {
                break Ok(());
            }
        };
        logger::batch(false);
        result
    }

    /// Zero while work is waiting; otherwise until the earliest deadline (or forever).
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.can_accept(now) {
            return Some(Duration::ZERO);
        }
        let handshakes_free_at = match self.handshake_room(now) {
            HandshakeRoom::FullUntil(at)
                if self.listeners.iter().flatten().any(|l| l.acceptable) =>
            {
                Some(at)
            }
            _ => None,
        };
        [
            self.timers.next_deadline(),
            self.accept_paused_until,
            handshakes_free_at,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        match event.token() {
            SIGNALS => self.on_signals(now),
            token if usize::MAX - 1 - token.0 < self.listeners.len() => {
                if let Some(Some(slot)) = self.listeners.get_mut(usize::MAX - 1 - token.0) {
                    slot.acceptable = true;
                }
            }
            token => {
                let (key, side) = Side::from_token(token);
                let Some(tunnel) = self.tunnels.get_mut(key) else {
                    return;
                };
                tunnel.mark(side, Readiness::of(event));
                if !tunnel.queued {
                    tunnel.queued = true;
                    self.ready.push_back((key, tunnel.id));
                }
            }
        }
    }

    fn can_accept(&self, now: Instant) -> bool {
        self.tunnels.len() < self.limits.max_conns
            && self.accept_paused_until.is_none_or(|until| now >= until)
            && !matches!(self.handshake_room(now), HandshakeRoom::FullUntil(_))
            && self.listeners.iter().flatten().any(|l| l.acceptable)
    }

    /// Accepts what the listeners hold, up to the cap and the per-turn budget.
    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        for index in 0..self.listeners.len() {
            for _ in 0..ACCEPT_BUDGET {
                let acceptable = self
                    .listeners
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|slot| slot.acceptable);
                if !acceptable || !self.below_cap() {
                    break;
                }
                let room = self.handshake_room(now);
                if let HandshakeRoom::FullUntil(_) = room {
                    return;
                }
                let Some(slot) = self.listeners.get(index).and_then(Option::as_ref) else {
                    break;
                };
                let service = slot.service;
                match slot.listener.accept() {
                    Ok((stream, peer)) => {
                        if !self.per_ip.admit(peer.ip(), now) {
                            continue; // dropping the stream closes it
                        }
                        if let HandshakeRoom::Evict(key) = room {
                            self.evict(key, now);
                        }
                        self.open_tunnel(service, stream, peer, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Some(Some(slot)) = self.listeners.get_mut(index) {
                            slot.acceptable = false;
                        }
                    }
                    // The client gave up before we got to it; the next one may be fine.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin.
                        if let Some(held_back) = self.accept_warnings.allow(now) {
                            log::warn!(
                                "accept failed: {}; pausing accepts for {ACCEPT_PAUSE:?} \
                                 ({held_back} more since the last such line)",
                                crate::error::plain_io(&e)
                            );
                        }
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                }
            }
        }
    }

    /// What the handshake budget allows: the handshakes in flight are the tunnels under the
    /// handshake deadline, and the oldest of them heads that list.
    fn handshake_room(&self, now: Instant) -> HandshakeRoom {
        handshake_room(self.limits.max_handshakes, &self.handshakes, now)
    }

    /// Keeps the handshake budget's lists in step with the tunnel's handshake.
    fn track_handshake(&mut self, key: usize, progressed: bool, now: Instant) {
        let Some(tunnel) = self.tunnels.get(key) else {
            return;
        };
        match tunnel.handshake_stage() {
            None => {
                self.handshakes.remove(key);
            }
            // A hello's place is its accept time: stray bytes do not buy time.
            Some(stage)
                if self.handshakes.list_of(key) == Some(stage.list())
                    && !(progressed && stage == HandshakeStage::Answered) => {}
            Some(stage) => self.handshakes.push_back(key, stage.list(), now),
        }
    }

    /// Ends the oldest handshake to make room for a newcomer (slowloris defence).
    fn evict(&mut self, key: usize, now: Instant) {
        self.evicted += 1;
        if let Some(held_back) = self.eviction_warnings.allow(now) {
            log::warn!(
                "handshake budget full ({} in flight, --max-handshakes): evicting the stalest; \
                 {} evicted so far, {held_back} since the last such line",
                self.limits.max_handshakes,
                self.evicted
            );
        }
        // Near the connection cap the descriptor is worth more than slowing the attacker.
        if self.tunnels.len() < self.limits.max_conns / 4 * 3 {
            if let Some(tunnel) = self.tunnels.get_mut(key) {
                tunnel.hold(&mut self.pool);
            }
            self.handshakes.remove(key);
        } else {
            self.end_tunnel(key, EndReason::Evicted, now);
        }
    }

    /// Whether another tunnel fits under `--max-conns`; logs when the cap is reached or left.
    fn below_cap(&mut self) -> bool {
        let below = self.tunnels.len() < self.limits.max_conns;
        if below == self.at_cap {
            self.at_cap = !below;
            if below {
                log::info!("below the connection cap again: accepting");
            } else {
                log::warn!(
                    "connection cap reached ({} tunnels): new connections wait in the listen backlog",
                    self.limits.max_conns
                );
            }
        }
        below
    }

    fn open_tunnel(&mut self, index: usize, mut stream: Conn, peer: Peer, now: Instant) {
        let entry = self.tunnels.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Side::Client.token(key), interest)
        {
            log::warn!(
                "cannot watch connection from {peer}: {}",
                crate::error::plain_io(&e)
            );
            self.per_ip.release(peer.ip());
            return;
        }
        let Some(route) = self.services.get(index).map(|s| &s.route) else {
            return;
        };
        let id = self.next_id;
        let mut tunnel = match Tunnel::new(id, index, route, Socket::new(stream), peer, now) {
            Ok(tunnel) => tunnel,
            Err(e) => {
                log::warn!("cannot start tunnel for {peer}: {e}");
                self.per_ip.release(peer.ip());
                return;
            }
        };
        self.next_id += 1;
        log::debug!("tunnel {id}: accepted {peer} on {}", route.name);
        // Queue it once: client mode dials right away, and a server-mode client's hello may
        // already be in the socket.
        tunnel.queued = true;
        self.ready.push_back((key, id));
        self.timers.set(key, tunnel.timer_class(), now);
        entry.insert(tunnel);
        self.track_handshake(key, false, now);
    }

    /// Drives each queued tunnel once. Tunnels queued during this pass wait for the next turn.
    fn drive_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some((key, id)) = self.ready.pop_front() else {
                break;
            };
            let Some(tunnel) = self.tunnels.get_mut(key).filter(|t| t.id == id) else {
                continue;
            };
            tunnel.queued = false;
            let mut ctx = Ctx {
                registry: self.poll.registry(),
                key,
                route: &self.services[tunnel.route].route,
                pool: &mut self.pool,
            };
            match tunnel.drive(&mut ctx) {
                Ok(_) if tunnel.has_ended() => self.remove_tunnel(key),
                Ok(_) if tunnel.is_finished() => {
                    let reason = tunnel.clean_end();
                    self.end_tunnel(key, reason, now);
                }
                Ok(step) => {
                    let class = tunnel.timer_class();
                    if step.progressed {
                        tunnel.note_progress();
                    }
                    if self.timers.class_of(key) != Some(class) || step.redialed {
                        self.timers.set(key, class, now);
                    } else if step.progressed {
                        self.timers.touch(key, now);
                    }
                    if step.again {
                        tunnel.queued = true;
                        self.ready.push_back((key, id));
                    }
                    self.track_handshake(key, step.progressed, now);
                }
                Err(reason) => self.end_tunnel(key, reason, now),
            }
        }
    }

    /// Ends the tunnels whose deadline has passed; a connect that timed out first tries the
    /// next target, if the route has one left.
    fn expire(&mut self, now: Instant) {
        while let Some((key, class)) = self.timers.pop_expired(now) {
            let Some(tunnel) = self.tunnels.get_mut(key) else {
                continue;
            };
            if class == TimerClass::Linger {
                self.remove_tunnel(key);
                continue;
            }
            if matches!(class, TimerClass::Idle | TimerClass::Close) && tunnel.peers_still_reading()
            {
                self.timers.set(key, class, now);
                continue;
            }
            if class == TimerClass::Connect {
                let ctx = Ctx {
                    registry: self.poll.registry(),
                    key,
                    route: &self.services[tunnel.route].route,
                    pool: &mut self.pool,
                };
                if tunnel.connect_timed_out(&ctx).is_ok() {
                    self.timers.set(key, TimerClass::Connect, now);
                    continue;
                }
            }
            let reason = if tunnel.is_held() {
                EndReason::Evicted
            } else {
                EndReason::Timeout(class)
            };
            self.end_tunnel(key, reason, now);
        }
    }

    /// Ends a tunnel: logs its line and closes its ends (see [`Tunnel::close`]). A tunnel
    /// with an end that lingers stays in the slab, silent, until that end is done or its
    /// linger deadline passes; otherwise it goes at once. Dropping its sockets closes them,
    /// which also takes them out of the poll.
    ///
    /// This is safe at any point after the turn's events were dispatched: those events live
    /// on as readiness flags, and the ready queue holds `(key, id)` pairs, so a reused slab
    /// key is never mistaken for the tunnel that had it before.
    fn end_tunnel(&mut self, key: usize, reason: EndReason, now: Instant) {
        self.handshakes.remove(key);
        let Some(tunnel) = self.tunnels.get_mut(key) else {
            self.timers.remove(key);
            return;
        };
        let route = &self.services[tunnel.route].route;
        if tunnel.is_established() {
            tunnel.log_end(route, &reason, now);
        } else if let Some(held_back) = self.unestablished_lines.allow(now) {
            // Failed handshakes and connects are what a flood is made of: log a few.
            tunnel.log_end(route, &reason, now);
            if held_back > 0 {
                log::warn!(
                    "{held_back} more tunnels ended before they were established (not logged)"
                );
            }
        }
        if tunnel.close(&reason, &mut self.pool) {
            log::debug!("tunnel {}: lingering to drain its peer", tunnel.id);
            self.timers.set(key, TimerClass::Linger, now);
            // Its socket may be ready already; a lingering end is driven like any other.
            if !tunnel.queued {
                tunnel.queued = true;
                self.ready.push_back((key, tunnel.id));
            }
        } else {
            self.remove_tunnel(key);
        }
    }

    /// Takes a tunnel whose end was already logged out of the loop.
    fn remove_tunnel(&mut self, key: usize) {
        self.timers.remove(key);
        self.handshakes.remove(key);
        if let Some(mut tunnel) = self.tunnels.try_remove(key) {
            tunnel.release(&mut self.pool);
            self.per_ip.release(tunnel.peer.ip());
        }
    }

    fn on_signals(&mut self, now: Instant) {
        for signal in self.signals.pending() {
            if signal == SIGUSR1 {
                self.log_stats();
                continue;
            }
            if signal == SIGHUP {
                log::info!("SIGHUP: nothing to reload (moat was started from flags)");
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.shutdown_deadline.is_some() {
                log::warn!("{name} again: stopping now");
                self.shutdown_deadline = Some(now);
                continue;
            }
            log::info!(
                "{name}: no longer accepting; waiting up to {:?} for {} open tunnel(s)",
                self.timeouts.shutdown,
                self.tunnels.len()
            );
            // Closing the listeners also takes them out of the poll.
            self.listeners.clear();
            self.shutdown_deadline = Some(now + self.timeouts.shutdown);
            if let Some(notifier) = &self.notifier {
                notifier.stopping();
            }
        }
    }

    /// On SIGUSR1: how many tunnels are open and how many buffers they hold.
    fn log_stats(&self) {
        log::info!(
            "stats: tunnels={} buffers_in_use={} buffers_spare={}",
            self.tunnels.len(),
            self.pool.in_use(),
            self.pool.spare()
        );
    }

    /// After a shutdown signal: over once every tunnel has finished, or at the deadline,
    /// when the tunnels still open are closed.
    fn shutdown_is_over(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if self.tunnels.is_empty() {
            log::info!("all tunnels finished; exiting");
            return true;
        }
        if now < deadline {
            return false;
        }
        log::warn!(
            "shutdown timeout: closing {} open tunnel(s)",
            self.tunnels.len()
        );
        for mut tunnel in self.tunnels.drain() {
            tunnel.release(&mut self.pool);
            if tunnel.has_ended() || tunnel.timer_class() == TimerClass::Linger {
                continue;
            }
            tunnel.log_end(
                &self.services[tunnel.route].route,
                &EndReason::Shutdown,
                now,
            );
        }
        true
    }
}
