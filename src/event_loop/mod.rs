//! The poll loop: one thread, one `mio::Poll`, every socket of every tunnel it owns.
//!
//! Each turn of [`EventLoop::run`] does, in order:
//!
//! 1. **wait** for readiness, no longer than the earliest deadline (zero if work is left over);
//! 2. **dispatch** events: mark sockets ready and queue their tunnels, note listeners, and
//!    take the control thread's commands when its waker fired;
//! 3. **accept** new connections, within the caps and a per-turn budget;
//! 4. **drive** each queued tunnel once, up to its byte budget ([`crate::tunnel::TURN_BUDGET`]);
//! 5. **expire** deadlines from the heads of the timer lists.
//!
//! A tunnel that ends is removed at once (`EventLoop::end_tunnel`): by then every event
//! of the turn has been dispatched into readiness flags, and the ready queue names tunnels
//! by `(key, id)`, so a reused slab key is never mistaken for its previous tunnel. Nothing in
//! a turn looks at a tunnel that has no event, no deadline due and no leftover work.
//!
//! With `--workers N` there are N such loops, one per thread, each with its own listeners
//! (`SO_REUSEPORT`), slab, timers and buffer pool; what they share is small: the
//! process-wide caps ([`crate::admission::Shared`]) and their commands from the control
//! thread ([`crate::control`]), which handles signals and reloads.

mod accept;
mod command;
mod services;
mod status_host;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

pub use command::{Command, Offer, Stats};
use services::{listener_index, Services};
use status_host::StatusHost;
pub use status_host::StatusSetup;

use crate::admission::{Admission, HandshakeRoom, Shared};
use crate::buffer::BufferPool;
use crate::endpoint::Readiness;
use crate::logger;
use crate::metrics::{HandshakeFailure, LoopMetrics, Negotiated, TunnelEnd};
use crate::timer::{TimerClass, Timers};
use crate::tunnel::{Ctx, EndReason, Side, Tunnel};

/// The token of the waker through which the control thread's commands arrive.
const WAKER: Token = Token(usize::MAX);

/// Connections accepted per listener per turn, so a connect storm cannot starve open tunnels.
const ACCEPT_BUDGET: usize = 64;

/// Events taken from the kernel per `poll` call.
const EVENT_CAPACITY: usize = 1024;

/// How a worker's loop is set up.
#[derive(Debug)]
pub struct WorkerSetup {
    /// This worker's index (0 for the first); tunnel ids are unique across workers.
    pub index: usize,
    /// How many workers there are.
    pub count: usize,
    /// This worker's part of `--max-handshakes`.
    pub max_handshakes: usize,
    /// The process-wide caps.
    pub shared: Arc<Shared>,
    /// This worker's counters, which the status endpoint reads.
    pub metrics: Arc<LoopMetrics>,
    /// The status endpoint, if this worker serves it (`--status`, the first worker).
    pub status: Option<StatusSetup>,
    /// Which tunnels `--trace` follows.
    pub trace: crate::config::Trace,
}

/// Everything one worker's loop owns. A single thread owns it all, so plain `&mut` suffices.
pub struct EventLoop {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    services: Services,
    tunnels: Slab<Tunnel>,
    timers: Timers,
    /// Tunnels with readiness or leftover work, with their id (a key may be reused).
    ready: VecDeque<(usize, u64)>,
    /// Buffers for the bytes in flight, lent to tunnels only while they hold something.
    pool: BufferPool,
    admission: Admission,
    metrics: Arc<LoopMetrics>,
    status: Option<StatusHost>,
    /// Ids go up by the worker count from the worker's index, so they never collide.
    next_id: u64,
    id_step: u64,
    shutdown_deadline: Option<Instant>,
    /// The control thread hung up: stop as soon as the tunnels are done.
    orphaned: bool,
    trace: crate::config::Trace,
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
    /// A loop that takes its services and orders from `commands`, woken through the
    /// returned waker. Poll and waker are made here, before the sandbox forbids it.
    pub fn new(
        setup: WorkerSetup,
        commands: mpsc::Receiver<Command>,
    ) -> io::Result<(Self, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        setup.shared.add_waker(waker.clone());
        let status = match setup.status {
            Some(status) => Some(StatusHost::new(status, poll.registry())?),
            None => None,
        };
        let event_loop = Self {
            status,
            poll,
            commands,
            services: Services::default(),
            tunnels: Slab::new(),
            timers: Timers::new(),
            ready: VecDeque::new(),
            pool: BufferPool::default(),
            admission: Admission::new(setup.shared, setup.max_handshakes),
            metrics: setup.metrics,
            next_id: setup.index as u64,
            id_step: setup.count.max(1) as u64,
            shutdown_deadline: None,
            orphaned: false,
            trace: setup.trace,
        };
        Ok((event_loop, waker))
    }

    /// Takes the commands waiting (the first `Serve` at start-up).
    pub fn take_commands(&mut self, now: Instant) -> io::Result<()> {
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.obey(command, now)?,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.orphaned = true;
                    self.begin_shutdown(Duration::ZERO, now);
                    return Ok(());
                }
            }
        }
    }

    /// Each listener's service, address and targets, for the `listening on` lines.
    pub fn listening(&self) -> Vec<(Arc<str>, String, String)> {
        self.services.listening()
    }

    /// Runs until a shutdown command and the open tunnels have finished (or the shutdown
    /// timeout has passed).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        let mut now = Instant::now();
        logger::batch(true);
        let result = loop {
            // The turn's log lines go out together, before the loop may sleep.
            logger::flush();
            self.metrics
                .set_buffers(self.pool.in_use(), self.pool.spare());
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
            now = Instant::now();
            let mut commands = false;
            for event in events.iter() {
                commands |= event.token() == WAKER;
                self.dispatch(event, now);
            }
            if commands {
                if let Err(e) = self.take_commands(now) {
                    break Err(e);
                }
            }
            if let Some(status) = &mut self.status {
                status.accept(self.poll.registry(), now);
                status.expire(now);
            }
            self.accept(now);
            self.drive_ready(now);
            self.expire(now);
            if self.shutdown_is_over(now) {
                break Ok(());
            }
        };
        logger::flush();
        result
    }

    /// Zero while work is waiting; otherwise until the earliest deadline (or forever).
    fn poll_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.can_accept(now) {
            return Some(Duration::ZERO);
        }
        let handshakes_free_at = match self.admission.handshake_room(now) {
            HandshakeRoom::FullUntil(at) if self.services.any_acceptable() => Some(at),
            _ => None,
        };
        [
            self.timers.next_deadline(),
            self.admission.paused_until(),
            handshakes_free_at,
            self.shutdown_deadline,
            self.status.as_ref().and_then(StatusHost::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        match event.token() {
            WAKER => {}
            token if status_host::owns(token) => {
                if let Some(status) = &mut self.status {
                    status.on_event(token, now);
                }
            }
            token if listener_index(token).is_some() => {
                if let Some(index) = listener_index(token) {
                    self.services.mark_acceptable(index);
                }
            }
            token => {
                let (key, side) = Side::from_token(token);
                let Some(tunnel) = self.tunnels.get_mut(key) else {
                    return;
                };
                let ready = Readiness::of(event);
                tunnel.trace_line(format_args!("event on {side}: {ready}"));
                tunnel.mark(side, ready);
                if !tunnel.queued {
                    tunnel.queued = true;
                    self.ready.push_back((key, tunnel.id));
                }
            }
        }
    }

    fn obey(&mut self, command: Command, now: Instant) -> io::Result<()> {
        match command {
            Command::Serve(offers) => {
                if self.shutdown_deadline.is_none() {
                    self.services
                        .apply(offers, self.poll.registry(), &self.metrics)?;
                }
            }
            Command::MaxHandshakes(max) => self.admission.set_max_handshakes(max),
            Command::Shutdown(grace, closed) => {
                self.begin_shutdown(grace, now);
                let _ = closed.send(());
            }
            Command::StopNow => self.shutdown_deadline = Some(now),
            Command::Stats(reply) => {
                let _ = reply.send(Stats {
                    tunnels: self.tunnels.len(),
                    buffers_in_use: self.pool.in_use(),
                    buffers_spare: self.pool.spare(),
                });
            }
        }
        Ok(())
    }

    /// Stops accepting; open tunnels have `grace` to finish.
    fn begin_shutdown(&mut self, grace: Duration, now: Instant) {
        // Closing the listeners also takes them out of the poll. The status endpoint stays,
        // to say that moat is draining.
        self.services.close_all();
        if let Some(status) = &mut self.status {
            status.draining();
        }
        let deadline = now + grace;
        self.shutdown_deadline = Some(self.shutdown_deadline.map_or(deadline, |d| d.min(deadline)));
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
            let route = Arc::clone(&tunnel.route);
            if tunnel.traced {
                self.pool.trace_for(Some(crate::trace::Tag {
                    tunnel: tunnel.id,
                    side: "",
                }));
            }
            let mut ctx = Ctx {
                registry: self.poll.registry(),
                key,
                route: &route,
                pool: &mut self.pool,
            };
            let before = tunnel.bytes();
            let result = tunnel.drive(&mut ctx);
            self.pool.trace_for(None);
            // Counted as they move, so a long tunnel's bytes show while it lasts.
            let after = tunnel.bytes();
            tunnel.metrics.relayed(
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            );
            if let Ok(step) = &result {
                if step.handshake_done {
                    if let Some(common) = tunnel.tls_common() {
                        let took = now.saturating_duration_since(tunnel.started());
                        tunnel
                            .metrics
                            .handshake_completed(&Negotiated::of(common), took);
                    }
                }
            }
            if let Ok(step) = &result {
                if step.proxy_done {
                    // The PROXY header named the client: count it now.
                    let ip = tunnel.peer.ip();
                    if !self.admission.shared().admit_ip(ip, now) {
                        self.metrics.refusals.inc(crate::metrics::Refusal::PerIp);
                        self.end_tunnel(key, EndReason::TooManyFromPeer, now);
                        continue;
                    }
                    tunnel.counted_ip = ip;
                    if !tunnel.traced && crate::trace::wanted(&self.trace, ip) {
                        tunnel.trace();
                    }
                }
            }
            match result {
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
                        let duration = route.deadline(class);
                        self.timers.set(key, class, duration, now);
                        tunnel.trace_line(format_args!(
                            "deadline {} armed: {duration:?}",
                            class.name()
                        ));
                    } else if step.progressed
                        && matches!(class, TimerClass::Idle | TimerClass::Close)
                    {
                        self.timers.touch(key, now);
                        tunnel.trace_line(format_args!("deadline {} moved", class.name()));
                    }
                    // After a PROXY header the handshake may already be waiting behind it.
                    if step.again || step.proxy_done {
                        tunnel.queued = true;
                        self.ready.push_back((key, id));
                    }
                    let stage = tunnel.handshake_stage();
                    self.admission.track(key, stage, step.progressed, now);
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
            let route = Arc::clone(&tunnel.route);
            if class == TimerClass::Linger {
                self.remove_tunnel(key);
                continue;
            }
            if matches!(class, TimerClass::Idle | TimerClass::Close) && tunnel.peers_still_reading()
            {
                self.timers.set(key, class, route.deadline(class), now);
                continue;
            }
            tunnel.trace_line(format_args!("deadline {} passed", class.name()));
            tunnel.metrics.timeouts.inc(class);
            if class == TimerClass::Connect {
                let ctx = Ctx {
                    registry: self.poll.registry(),
                    key,
                    route: &route,
                    pool: &mut self.pool,
                };
                if tunnel.connect_timed_out(&ctx).is_ok() {
                    self.timers
                        .set(key, TimerClass::Connect, route.deadline(class), now);
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
        self.admission.forget(key);
        let Some(tunnel) = self.tunnels.get_mut(key) else {
            self.timers.remove(key);
            return;
        };
        let established = tunnel.is_established();
        if established {
            tunnel.log_end(&reason, now);
        } else if let Some(held_back) = self.admission.shared().allow_unestablished_line(now) {
            // Failed handshakes and connects are what a flood is made of: log a few.
            tunnel.log_end(&reason, now);
            if held_back > 0 {
                log::warn!(
                    "{held_back} more tunnels ended before they were established (not logged)"
                );
            }
        }
        let metrics = &tunnel.metrics;
        metrics.tunnel_closed(TunnelEnd::of(&reason));
        if tunnel.handshake_stage().is_some() || tunnel.is_held() {
            metrics.handshake_failed(HandshakeFailure::of(&reason));
        }
        if tunnel.close(&reason, &mut self.pool) {
            log::debug!(tunnel = tunnel.id; "tunnel {}: lingering to drain its peer", tunnel.id);
            self.timers.set(
                key,
                TimerClass::Linger,
                tunnel.route.deadline(TimerClass::Linger),
                now,
            );
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
        self.admission.forget(key);
        if let Some(mut tunnel) = self.tunnels.try_remove(key) {
            tunnel.release(&mut self.pool);
            self.admission.shared().release_ip(tunnel.counted_ip);
            self.admission.shared().release();
        }
    }

    /// After a shutdown command: over once every tunnel has finished, or at the deadline,
    /// when the tunnels still open are closed.
    fn shutdown_is_over(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if self.tunnels.is_empty() {
            // The status endpoint says `draining` until the last tunnel of every worker
            // has ended (that one wakes this loop), or the deadline.
            let others_draining = self.status.is_some() && self.admission.shared().drain();
            return !others_draining || now >= deadline;
        }
        if now < deadline {
            return false;
        }
        let keys: Vec<usize> = self.tunnels.iter().map(|(key, _)| key).collect();
        let lingering = keys
            .iter()
            .filter(|&&key| {
                self.tunnels
                    .get(key)
                    .is_some_and(|t| t.timer_class() == TimerClass::Linger)
            })
            .count();
        if keys.len() > lingering && !self.orphaned {
            log::warn!(
                "shutdown timeout: closing {} open tunnel(s)",
                keys.len() - lingering
            );
        }
        for key in keys {
            let Some(tunnel) = self.tunnels.get(key) else {
                continue;
            };
            if tunnel.has_ended() || tunnel.timer_class() == TimerClass::Linger {
                self.remove_tunnel(key);
            } else {
                self.end_tunnel(key, EndReason::Shutdown, now);
                self.remove_tunnel(key);
            }
        }
        true
    }
}
