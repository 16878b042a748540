//! The status endpoint as the first worker's loop serves it: its listener and at most
//! [`MAX_STATUS_CONNS`] connections, each with its own deadline, beside the tunnels. The
//! HTTP itself is in [`crate::status`]; here are only the sockets, tokens and deadlines —
//! bounded so that a scraper, slow or hostile, can never stall the tunnels.

use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Registry, Token};

use crate::endpoint::Conn;
use crate::listener::Listener;
use crate::logger;
use crate::metrics::{LoopMetrics, ProcessMetrics};
use crate::status::{Drive, Health, MetricsView, StatusConn, MAX_STATUS_CONNS, STATUS_DEADLINE};

/// The status listener's token; its connections count down from just below.
const LISTENER: Token = Token(usize::MAX - 1);

/// Whether `token` is the status endpoint's.
pub(super) fn owns(token: Token) -> bool {
    token.0 <= LISTENER.0 && token.0 > LISTENER.0 - 1 - MAX_STATUS_CONNS
}

fn conn_token(index: usize) -> Token {
    Token(LISTENER.0 - 1 - index)
}

/// What the status endpoint serves from, and where.
#[derive(Debug)]
pub struct StatusSetup {
    /// Where it listens.
    pub listener: Listener,
    /// The process-wide metrics.
    pub process: Arc<ProcessMetrics>,
    /// Every worker's metrics, summed when rendered.
    pub loops: Vec<Arc<LoopMetrics>>,
}

/// The status endpoint in a loop.
#[derive(Debug)]
pub(super) struct StatusHost {
    setup: StatusSetup,
    acceptable: bool,
    conns: Vec<Option<(StatusConn<Conn>, Instant)>>,
    health: Health,
}

impl StatusHost {
    pub(super) fn new(mut setup: StatusSetup, registry: &Registry) -> std::io::Result<Self> {
        registry.register(&mut setup.listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            setup,
            acceptable: false,
            conns: (0..MAX_STATUS_CONNS).map(|_| None).collect(),
            health: Health::Serving,
        })
    }

    /// From now on `/healthz` says `503 draining`.
    pub(super) fn draining(&mut self) {
        self.health = Health::Draining;
    }

    /// Handles an event for one of its tokens.
    pub(super) fn on_event(&mut self, token: Token, now: Instant) {
        if token == LISTENER {
            self.acceptable = true;
            return;
        }
        let index = LISTENER.0 - 1 - token.0;
        self.drive(index, now);
    }

    /// Accepts waiting scrapers while there is room; more wait in the backlog.
    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) {
        // Connections past their deadline give their slots up first: a scraper waiting in
        // the backlog raises no new event, so this turn is its chance.
        self.expire(now);
        while self.acceptable {
            let Some(index) = self.conns.iter().position(Option::is_none) else {
                return;
            };
            match self.setup.listener.accept() {
                Ok((mut stream, _)) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if registry
                        .register(&mut stream, conn_token(index), interest)
                        .is_ok()
                    {
                        self.conns[index] = Some((StatusConn::new(stream), now + STATUS_DEADLINE));
                        self.drive(index, now);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.acceptable = false,
                Err(_) => return,
            }
        }
    }

    /// The earliest deadline of its connections.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().map(|(_, at)| *at).min()
    }

    /// Closes the connections whose deadline has passed (a slow or stalled request). There
    /// are at most [`MAX_STATUS_CONNS`], so looking at each is cheap.
    pub(super) fn expire(&mut self, now: Instant) {
        for conn in &mut self.conns {
            if conn.as_ref().is_some_and(|(_, at)| *at <= now) {
                *conn = None;
            }
        }
    }

    fn drive(&mut self, index: usize, now: Instant) {
        let Some(Some((conn, deadline))) = self.conns.get_mut(index) else {
            return;
        };
        if *deadline <= now {
            self.conns[index] = None;
            return;
        }
        let process = &self.setup.process;
        // Dropped log lines are counted by the logger; the metric catches up at a scrape.
        let dropped = logger::dropped_lines();
        let counted = process.log_lines_dropped.get();
        if dropped > counted {
            process.log_lines_dropped.add(dropped - counted);
        }
        let view = MetricsView {
            process,
            loops: &self.setup.loops,
            health: self.health,
        };
        match conn.drive(&view) {
            Ok(Drive::Pending) => {}
            Ok(Drive::Done) | Err(_) => self.conns[index] = None,
        }
    }
}
