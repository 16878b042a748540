//! The attackers of the flood scenarios. They speak raw TCP, never a whole TLS handshake,
//! from `--source-ip` so the target (and a reader of its log) can tell them from the
//! legitimate generator. The driver runs this beside a legitimate handshake generator.
//!
//! * `slowloris`: `concurrency` connections that never finish a handshake; even-numbered
//!   ones stay silent, odd-numbered ones send one byte of a real ClientHello every
//!   [`TRICKLE_EVERY`]. A connection the target cuts is opened again at once.
//! * `storm`: `concurrency` tasks looping TCP connect → close as fast as they can.
//! * `garbage`: `concurrency` tasks looping connect → 1 KiB of random bytes → wait for the
//!   target to close.
//! * `ip-flood`: `concurrency` silent connections from one address, each reopened
//!   [`REOPEN_PAUSE`] after the target closes it.
//!
//! The run lasts `--duration`. It reports how many connections it opened, how many the
//! target cut and how long each lived, how many it held open for a second or more, and the
//! target's peak RSS.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::rr::percentile;
use super::{Args, Client, Mode, Report};
use crate::procfs::rss_kib;
use crate::Result;

/// A trickling slowloris client sends one byte this often.
pub const TRICKLE_EVERY: Duration = Duration::from_secs(2);
/// An `ip-flood` connection is reopened this long after the target closed it.
const REOPEN_PAUSE: Duration = Duration::from_millis(10);
/// How often the target's RSS and the held connections are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// A connection open this long counts as held.
const HELD_AFTER: Duration = Duration::from_secs(1);
/// A cut later than the handshake timeout plus this counts as late. Time spent in the
/// target's listen backlog counts: the client cannot see when it was accepted.
pub const LATE_SLACK: Duration = Duration::from_millis(1500);

/// What the attackers saw, shared by their tasks.
struct Tally {
    started: Instant,
    opened: AtomicU64,
    connect_errors: AtomicU64,
    /// Connect-to-close times of connections the target closed, in milliseconds.
    lifetimes_ms: Mutex<Vec<u64>>,
    /// Ages of connections still open when the run ended, in milliseconds.
    open_at_end_ms: Mutex<Vec<u64>>,
    /// Per task: milliseconds since `started` + 1 at which its connection opened; 0 if none.
    open_since: Vec<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn ms_since_start(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn error(&self, e: std::io::Error) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| e.to_string());
    }

    fn push(list: &Mutex<Vec<u64>>, value: Duration) {
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        list.push(value.as_millis() as u64);
    }
}

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let source = args.source_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let hello = Arc::new(client.client_hello()?);
    let tally = Arc::new(Tally {
        started: Instant::now(),
        opened: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        lifetimes_ms: Mutex::new(Vec::new()),
        open_at_end_ms: Mutex::new(Vec::new()),
        open_since: (0..args.concurrency).map(|_| AtomicU64::new(0)).collect(),
        first_error: Mutex::new(None),
    });
    let deadline = tally.started + args.duration;
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let (tally, hello, mode, addr) = (tally.clone(), hello.clone(), args.mode, args.addr);
        tasks.push(tokio::spawn(async move {
            let _ =
                tokio::time::timeout_at(deadline, attacker(i, mode, addr, source, &tally, &hello))
                    .await;
            // Still open at the deadline: how long has it lasted?
            let since = tally.open_since[i].swap(0, Ordering::Relaxed);
            if since > 0 {
                let age = tally.ms_since_start().saturating_sub(since);
                Tally::push(&tally.open_at_end_ms, Duration::from_millis(age));
            }
        }));
    }

    let (mut rss_peak, mut held) = (0u64, Vec::new());
    while Instant::now() < deadline {
        if args.target_pid > 0 {
            rss_peak = rss_peak.max(rss_kib(args.target_pid).unwrap_or(0));
        }
        let now = tally.ms_since_start();
        let old = HELD_AFTER.as_millis() as u64;
        let count = tally
            .open_since
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&s| s > 0 && now.saturating_sub(s) >= old)
            .count();
        held.push(count as u64);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    for task in tasks {
        let _ = task.await;
    }

    let mut report = Report::default();
    let secs = tally.started.elapsed().as_secs_f64();
    report.put("atk_secs", format!("{secs:.3}"));
    report.put("atk_attackers", args.concurrency);
    let own = crate::procfs::cpu_time(std::process::id())?;
    report.put("atk_cpu", format!("{:.3}", own.as_secs_f64()));
    report.put("atk_opened", tally.opened.load(Ordering::Relaxed));
    report.put("atk_errors", tally.connect_errors.load(Ordering::Relaxed));
    let mut lives = tally
        .lifetimes_ms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut open = tally
        .open_at_end_ms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    lives.sort_unstable();
    open.sort_unstable();
    report.put("atk_cut", lives.len());
    for (key, q) in [("atk_life_p50_ms", 0.5), ("atk_life_p99_ms", 0.99)] {
        report.put(key, percentile(&lives, q));
    }
    report.put("atk_life_max_ms", lives.last().copied().unwrap_or(0));
    report.put("atk_open_end", open.len());
    report.put("atk_open_end_max_ms", open.last().copied().unwrap_or(0));
    if let Some(limit) = args.cut_after {
        let late = (limit + LATE_SLACK).as_millis() as u64;
        report.put("atk_late", lives.iter().filter(|&&l| l > late).count());
        report.put("atk_uncut", open.iter().filter(|&&l| l > late).count());
        report.put("atk_limit_ms", limit.as_millis());
    }
    held.sort_unstable();
    report.put("atk_held_p50", percentile(&held, 0.5));
    report.put("atk_held_max", held.last().copied().unwrap_or(0));
    report.put("rss_peak_kib", rss_peak);
    let first = tally.first_error.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = first.as_ref() {
        report.put("atk_first_error", e.replace(char::is_whitespace, "_"));
    }
    Ok(report)
}

/// One attacker task: its mode's loop until the run's deadline cancels it.
async fn attacker(
    i: usize,
    mode: Mode,
    addr: SocketAddr,
    source: IpAddr,
    tally: &Tally,
    hello: &[u8],
) {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    loop {
        let mut stream = match connect_from(source, addr).await {
            Ok(s) => s,
            Err(e) => {
                tally.error(e);
                // Out of ports or descriptors: do not spin.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        tally.opened.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        match mode {
            Mode::Storm => {
                drop(stream);
                continue;
            }
            Mode::Garbage => {
                let junk: Vec<u8> = (0..1024).map(|_| xorshift(&mut seed) as u8).collect();
                let _ = stream.write_all(&junk).await;
            }
            _ => {}
        }
        tally.open_since[i].store(tally.ms_since_start(), Ordering::Relaxed);
        let trickle = mode == Mode::Slowloris && i % 2 == 1;
        wait_for_close(&mut stream, trickle.then_some(hello)).await;
        tally.open_since[i].store(0, Ordering::Relaxed);
        Tally::push(&tally.lifetimes_ms, opened.elapsed());
        if mode == Mode::IpFlood {
            tokio::time::sleep(REOPEN_PAUSE).await;
        }
    }
}

/// Waits until the target closes (or resets) the connection, sending one byte of `trickle`
/// every [`TRICKLE_EVERY`] meanwhile when it is given.
async fn wait_for_close(stream: &mut TcpStream, trickle: Option<&[u8]>) {
    let mut buf = [0u8; 1024];
    let mut next = Instant::now();
    let mut sent = 0usize;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an alert, say; the close follows
            },
            _ = tokio::time::sleep_until(next), if trickle.is_some() => {
                let bytes = trickle.unwrap_or_default();
                let byte = bytes.get(sent % bytes.len().max(1)).copied().unwrap_or(0x16);
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
                sent += 1;
                next += TRICKLE_EVERY;
            }
        }
    }
}

/// A TCP connection from `source` (any free port) to `addr`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    set_bind_address_no_port(&socket);
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Lets the kernel pick the source port at connect time, per destination, so that many
/// connections from one bound address do not run out of ports early.
fn set_bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
