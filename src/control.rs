//! The control thread — moat's main thread once it serves. It starts everything in an
//! order that makes "ready" true when it is said, then waits for signals:
//!
//! 1. build the services (read files, resolve names, configure TLS) and bind listeners;
//! 2. make each worker's poll loop and give it its services;
//! 3. install the signal handlers;
//! 4. enter the sandbox;
//! 5. say where moat listens, start the worker threads, tell the service manager READY=1.
//!
//! Then: SIGHUP (or a changed file, with `--reload-interval`) builds the next generation
//! here, off the loops, and hands each worker its new services; SIGTERM/SIGINT starts a
//! graceful shutdown (a second one stops at once); SIGUSR1 logs a `stats:` line summed
//! over the workers. Reading files and resolving names never happens in a poll loop.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::address::SocketAddress;
use crate::admission::Shared;
use crate::config::Config;
use crate::demo;
use crate::error::StartError;
use crate::event_loop::{Command, EventLoop, Stats, StatusSetup, WorkerSetup};
use crate::listener::{ListenOptions, Listener};
use crate::logger;
use crate::metrics::{LoopMetrics, ProcessMetrics};
use crate::notify::Notifier;
use crate::reload::{Fingerprint, Generation};
use crate::sandbox;

const SIGNALS: Token = Token(0);
const WORKER_DONE: Token = Token(1);

/// How long the control thread waits for every worker's answer (its counts for a
/// `stats:` line, its listeners closed at shutdown).
const WORKER_PATIENCE: Duration = Duration::from_secs(1);

/// One worker thread, as the control thread sees it.
#[derive(Debug)]
struct Worker {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Worker {
    fn tell(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Runs `config` until a signal stops moat; `reparse` reads the configuration again for a
/// reload (the same command line, and the config file it names, read anew).
pub fn run(
    config: Config,
    reparse: impl Fn() -> Result<Config, StartError> + 'static,
) -> Result<(), StartError> {
    let workers = config.global.workers.max(1);
    let limits = config.global.limits;
    let shared = Arc::new(Shared::new(limits.max_conns, limits.max_conns_per_ip));
    let process = Arc::new(ProcessMetrics::new(SystemTime::now()));
    let mut ids = 0;
    // Taken before the files are read (see Fingerprint).
    let fingerprint = config
        .global
        .reload_interval
        .map(|_| Fingerprint::of(&config.files()));
    let (mut generation, offers, guide) = match &config.demo {
        Some(settings) => {
            let (built, guide) = demo::services(settings, workers > 1)?;
            let (generation, offers) = Generation::prebuilt(config, built, workers, &mut ids)?;
            (generation, offers, Some(guide))
        }
        None => {
            let (generation, offers, _) = Generation::build(config, None, workers, &mut ids)?;
            (generation, offers, None)
        }
    };
    let poll = Poll::new().map_err(StartError::Runtime)?;
    let done = Arc::new(Waker::new(poll.registry(), WORKER_DONE).map_err(StartError::Runtime)?);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    let mut metrics = Vec::with_capacity(workers);
    let now = Instant::now();
    for _ in 0..workers {
        metrics.push(Arc::new(LoopMetrics::default()));
    }
    let mut status = status_listener(&generation.config)?;
    let status_port = status.as_ref().and_then(|l| match l.local() {
        Ok(SocketAddress::Tcp(addr)) => Some(addr.port()),
        _ => None,
    });
    let status_shown = status.as_ref().and_then(|listener| listener.local().ok());
    for (index, offers) in offers.into_iter().enumerate() {
        let (commands, receiver) = mpsc::channel();
        let setup = WorkerSetup {
            index,
            count: workers,
            max_handshakes: share(limits.max_handshakes, workers),
            shared: shared.clone(),
            metrics: metrics[index].clone(),
            trace: generation.config.global.trace.clone(),
            status: status.take().map(|listener| StatusSetup {
                listener,
                process: process.clone(),
                loops: metrics.clone(),
            }),
        };
        let (mut event_loop, waker) =
            EventLoop::new(setup, receiver).map_err(StartError::Runtime)?;
        let _ = commands.send(Command::Serve(offers));
        event_loop.take_commands(now).map_err(StartError::Runtime)?;
        loops.push(event_loop);
        handles.push(Worker {
            commands,
            waker,
            thread: None,
        });
    }
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP]).map_err(StartError::Runtime)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(StartError::Runtime)?;
    let notifier = Notifier::from_env();
    if generation.config.global.sandbox {
        sandbox::enter(&sandbox_plan(&generation, &loops, status_port))?;
        generation.sandboxed = true;
    }
    // Only now, with every listener bound, the signal handlers installed and the sandbox
    // entered, is moat ready: a supervisor that signals it as soon as it says so must find
    // it able to shut down.
    if let Some(local) = status_shown {
        log::info!("status: listening on {local}, serving /metrics and /healthz");
    }
    let listening = loops.first().map(EventLoop::listening).unwrap_or_default();
    for (name, local, targets) in &listening {
        log::info!("{name}: listening on {local}, forwarding to {targets}");
    }
    if let Some(guide) = guide {
        println!("{guide}");
    }
    logger::start_writer();
    for (index, (event_loop, worker)) in loops.into_iter().zip(&mut handles).enumerate() {
        let (done, finished) = (done.clone(), finished.clone());
        let thread = thread::Builder::new()
            .name(format!("moat-worker-{index}"))
            .spawn(move || {
                let result = event_loop.run();
                finished.fetch_add(1, Ordering::Release);
                let _ = done.wake();
                result
            })
            .map_err(StartError::Runtime)?;
        worker.thread = Some(thread);
    }
    if let Some(notifier) = &notifier {
        let shown: Vec<&str> = listening
            .iter()
            .map(|(_, local, _)| local.as_str())
            .collect();
        notifier.ready(&format!("listening on {}", shown.join(", ")));
    }
    let control = Control {
        poll,
        signals,
        workers: handles,
        generation,
        reparse: Box::new(reparse),
        ids,
        shared,
        process,
        notifier,
        shutdown: None,
        fingerprint,
        finished,
    };
    control.serve()
}

/// The state the control thread keeps while moat serves.
struct Control {
    poll: Poll,
    signals: Signals,
    workers: Vec<Worker>,
    generation: Generation,
    reparse: Box<dyn Fn() -> Result<Config, StartError>>,
    ids: u64,
    shared: Arc<Shared>,
    process: Arc<ProcessMetrics>,
    notifier: Option<Notifier>,
    /// When the graceful shutdown began.
    shutdown: Option<Instant>,
    fingerprint: Option<Fingerprint>,
    /// Workers whose loop has returned.
    finished: Arc<AtomicUsize>,
}

impl Control {
    fn serve(mut self) -> Result<(), StartError> {
        let mut events = Events::with_capacity(16);
        let interval = self.generation.config.global.reload_interval;
        let mut next_check = interval.map(|i| Instant::now() + i);
        loop {
            let timeout = next_check.map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StartError::Runtime(e)),
            }
            let pending: Vec<i32> = self.signals.pending().collect();
            for signal in pending {
                self.on_signal(signal);
            }
            if let (Some(at), Some(every)) = (next_check, interval) {
                if Instant::now() >= at && self.shutdown.is_none() {
                    self.check_files();
                    next_check = Some(Instant::now() + every);
                }
            }
            // A worker's loop returns at the end of a shutdown, or when it failed.
            if self.finished.load(Ordering::Acquire) > 0 {
                if self.shutdown.is_none() {
                    self.stop("a worker stopped");
                }
                if self.finished.load(Ordering::Acquire) == self.workers.len() {
                    return self.finish();
                }
            }
        }
    }

    fn on_signal(&mut self, signal: i32) {
        match signal {
            SIGUSR1 => self.log_stats(),
            SIGHUP if self.shutdown.is_none() => self.reload("SIGHUP"),
            SIGHUP => {}
            _ => {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                self.stop(name);
            }
        }
    }

    /// The first SIGTERM/SIGINT: stop accepting, let tunnels finish; the second: now.
    fn stop(&mut self, name: &str) {
        if self.shutdown.is_some() {
            log::warn!("{name} again: stopping now");
            for worker in &self.workers {
                worker.tell(Command::StopNow);
            }
            return;
        }
        let grace = self.generation.config.global.shutdown_timeout;
        if let Some(notifier) = &self.notifier {
            notifier.stopping();
        }
        self.shutdown = Some(Instant::now());
        let (closed, acks) = mpsc::channel();
        for worker in &self.workers {
            worker.tell(Command::Shutdown(grace, closed.clone()));
        }
        drop(closed);
        // The line is true when it is read: every worker has closed its listeners (a worker
        // that does not answer within the patience is not waited for).
        let deadline = Instant::now() + WORKER_PATIENCE;
        for _ in &self.workers {
            if acks
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                break;
            }
        }
        log::info!(
            "{name}: no longer accepting; waiting up to {grace:?} for {} open tunnel(s)",
            self.shared.open()
        );
    }

    /// Every worker has stopped: join them and say how it went.
    fn finish(&mut self) -> Result<(), StartError> {
        let mut failure = None;
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failure = Some(StartError::Runtime(e)),
                    Err(_) => {
                        failure = Some(StartError::Runtime(io::Error::other("a worker panicked")))
                    }
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if self.shared.open() == 0 {
            log::info!("all tunnels finished; exiting");
        }
        Ok(())
    }

    /// SIGUSR1: how many tunnels are open and how many buffers they hold, over all workers.
    fn log_stats(&self) {
        let (reply, counts) = mpsc::channel();
        for worker in &self.workers {
            worker.tell(Command::Stats(reply.clone()));
        }
        drop(reply);
        let deadline = Instant::now() + WORKER_PATIENCE;
        let mut total = Stats::default();
        for _ in &self.workers {
            match counts.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(stats) => total = total + stats,
                Err(_) => break,
            }
        }
        log::info!(
            "stats: tunnels={} buffers_in_use={} buffers_spare={}",
            total.tunnels,
            total.buffers_in_use,
            total.buffers_spare
        );
    }

    /// `--reload-interval`: reloads when a file moat reads has changed.
    fn check_files(&mut self) {
        let now = self.fingerprint.as_ref().map(Fingerprint::again);
        if self.fingerprint != now {
            self.reload("a file changed");
        }
    }

    /// Builds the next generation and hands it to the workers; on any error keeps the
    /// running one, and says why in one line.
    fn reload(&mut self, why: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.reloading();
        }
        // What the files were before this reload reads them (see Fingerprint).
        let before = self.fingerprint.as_ref().map(Fingerprint::again);
        let mut attempted = None;
        match self.try_reload(&mut attempted) {
            Ok(changes) => {
                self.process.reload_succeeded(SystemTime::now());
                log::info!("reload ({why}): {changes}");
                for (name, local, targets) in &changes.listening {
                    log::info!("{name}: listening on {local}, forwarding to {targets}");
                }
                for name in &changes.modes_kept {
                    log::warn!(
                        "reload: {name}: its unix socket keeps its mode: the sandbox does not \
                         let moat change a file's mode; restart moat for the new --unix-mode"
                    );
                }
            }
            Err(e) => {
                self.process.reload_failed();
                let hint = sandbox_hint(&e, self.generation.sandboxed);
                log::warn!("reload ({why}) failed, keeping the running configuration: {e}{hint}");
            }
        }
        if let Some(before) = before {
            // The files a failed configuration names are watched too: a certificate it
            // names that is not there yet is what the operator will put there next.
            let mut files = self.generation.files();
            if let Some(attempted) = &attempted {
                for file in attempted.files() {
                    if !files.contains(&file) {
                        files.push(file);
                    }
                }
            }
            let seen: Vec<&Fingerprint> = [Some(&before), attempted.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            self.fingerprint = Some(Fingerprint::as_seen(&files, &seen));
        }
        if let Some(notifier) = &self.notifier {
            notifier.ready("reloaded");
        }
    }

    /// Reloads; `attempted` is given the state of the files the configuration read again
    /// names, before they are read.
    fn try_reload(
        &mut self,
        attempted: &mut Option<Fingerprint>,
    ) -> Result<crate::reload::Changes, StartError> {
        if self.generation.config.demo.is_some() {
            return Err(StartError::Usage(
                "the demo's certificates are built in: there is nothing to reload".into(),
            ));
        }
        let config = (self.reparse)()?;
        *attempted = Some(Fingerprint::of(&config.files()));
        let fixed = fixed_settings_changed(&self.generation.config, &config);
        let workers = self.workers.len();
        let (generation, offers, changes) =
            Generation::build(config, Some(&self.generation), workers, &mut self.ids)?;
        for (worker, offers) in self.workers.iter().zip(offers) {
            worker.tell(Command::Serve(offers));
        }
        let global = &generation.config.global;
        log::set_max_level(global.log_level);
        self.shared
            .set_caps(global.limits.max_conns, global.limits.max_conns_per_ip);
        for worker in &self.workers {
            worker.tell(Command::MaxHandshakes(share(
                global.limits.max_handshakes,
                workers,
            )));
        }
        if let Some(what) = fixed {
            log::warn!("reload: {what} cannot change while moat runs; restart moat for it");
        }
        self.generation = generation;
        Ok(changes)
    }
}

/// Binds the status endpoint's listener (`--status`), if there is one.
fn status_listener(config: &Config) -> Result<Option<Listener>, StartError> {
    let Some(address) = &config.global.status else {
        return Ok(None);
    };
    let places = address.resolve("--status")?;
    let first = places.first().ok_or_else(|| {
        StartError::invalid("--status", &address.to_string(), "resolves to no address")
    })?;
    Listener::bind(first, ListenOptions::default()).map(Some)
}

/// A worker's part of a process-wide budget.
fn share(total: usize, workers: usize) -> usize {
    total.div_ceil(workers.max(1)).max(1)
}

/// Settings of the process a reload cannot change in place.
fn fixed_settings_changed(old: &Config, new: &Config) -> Option<&'static str> {
    let (old, new) = (&old.global, &new.global);
    if old.workers != new.workers {
        Some("--workers")
    } else if old.status != new.status {
        Some("--status")
    } else if old.sandbox != new.sandbox {
        Some("--no-sandbox")
    } else if old.log_format != new.log_format {
        Some("--log-format")
    } else if old.trace != new.trace {
        Some("--trace")
    } else if old.reload_interval != new.reload_interval {
        Some("--reload-interval")
    } else {
        None
    }
}

/// Under the sandbox, a file or port moat did not have at start-up is out of reach: say so.
fn sandbox_hint(err: &StartError, sandbox: bool) -> &'static str {
    let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
    let inner = match err {
        StartError::InConfig { source, .. } => source.as_ref(),
        other => other,
    };
    match inner {
        StartError::ReadFile { source, .. } | StartError::Listen { source, .. }
            if sandbox && denied(source) =>
        {
            " (the sandbox allows only the files, directories and ports moat had at start-up: \
             restart moat to use new ones, or run it with --no-sandbox)"
        }
        _ => "",
    }
}

/// What the sandbox must leave moat: its files, its sockets, its ports.
fn sandbox_plan(
    generation: &Generation,
    loops: &[EventLoop],
    status_port: Option<u16>,
) -> sandbox::Plan {
    let mut bind_ports: Vec<u16> = loops
        .first()
        .map(EventLoop::listening)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, local, _)| local.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.port())
        .collect();
    bind_ports.extend(status_port);
    let connect_ports = match &generation.config.demo {
        // The demo's legs connect to its own listeners.
        Some(_) => generation
            .services
            .iter()
            .flat_map(|l| l.service.listen_at.iter())
            .filter_map(|a| match a {
                SocketAddress::Tcp(addr) => Some(addr.port()),
                SocketAddress::Unix(_) => None,
            })
            .collect(),
        None => generation.target_ports(),
    };
    sandbox::Plan::new(
        generation.files(),
        generation.unix_sockets(),
        bind_ports,
        connect_ports,
        generation.resolves_names(),
    )
}
