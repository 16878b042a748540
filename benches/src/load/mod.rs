//! The load generator: `moat-bench load --mode MODE --addr ADDR ...`.
//!
//! It runs one scenario against one target for a warm-up and then a measured window, reads
//! the target's (and the backend's and its own) CPU time from `/proc` at both edges of the
//! window, and prints one line on stdout:
//!
//! ```text
//! RESULT secs=5.001 ops=12345 target_cpu=4.98 gen_cpu=5.00 backend_cpu=0.40 errors=0 ...
//! ```
//!
//! The driver parses that line; a person can read it too. Everything runs on one tokio
//! current-thread runtime, since the generator is pinned to a single CPU.

mod bulk;
mod fairness;
pub mod flood;
mod handshake;
mod idle;
mod rr;
mod rr_idle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::procfs::CpuSample;
use crate::tls::{self, ClientProfile, ResumeMode};
use crate::{parse_duration, Result};

/// What the generator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect, handshake, echo 16 bytes, close; over and over on `concurrency` connections.
    Handshake,
    /// `concurrency` streams writing as fast as they can into a sink.
    Upload,
    /// `concurrency` streams reading as fast as they can from a source.
    Download,
    /// Open `tunnels` tunnels, echo-check them, hold them, sample the target's RSS.
    Idle,
    /// `concurrency` connections ping-ponging `size`-byte messages.
    RequestResponse,
    /// Request/response alone, then beside `tunnels` idle tunnels held open.
    RequestResponseBesideIdle,
    /// Request/response alone, then beside one bulk download (mux backend).
    Fairness,
    /// Attackers (see [`flood`]): connections that never finish a handshake.
    Slowloris,
    /// Attackers: TCP connect and close, as fast as they can.
    Storm,
    /// Attackers: random bytes instead of a ClientHello.
    Garbage,
    /// Attackers: silent connections from one source address, reopened when closed.
    IpFlood,
}

impl Mode {
    const NAMES: [&'static str; 11] = [
        "handshake",
        "upload",
        "download",
        "idle",
        "rr",
        "rr-idle",
        "fairness",
        "slowloris",
        "storm",
        "garbage",
        "ip-flood",
    ];

    fn parse(text: &str) -> Result<Mode> {
        Ok(match text {
            "handshake" => Mode::Handshake,
            "upload" => Mode::Upload,
            "download" => Mode::Download,
            "idle" => Mode::Idle,
            "rr" => Mode::RequestResponse,
            "rr-idle" => Mode::RequestResponseBesideIdle,
            "fairness" => Mode::Fairness,
            "slowloris" => Mode::Slowloris,
            "storm" => Mode::Storm,
            "garbage" => Mode::Garbage,
            "ip-flood" => Mode::IpFlood,
            _ => {
                return Err(format!(
                    "unknown --mode `{text}` ({})",
                    Mode::NAMES.join(", ")
                ))
            }
        })
    }
}

/// Everything one generator run needs.
#[derive(Debug, Clone)]
pub struct Args {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub resume: ResumeMode,
    /// The suites and groups the client offers.
    pub profile: ClientProfile,
    pub concurrency: usize,
    pub tunnels: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub target_pid: u32,
    pub backend_pid: Option<u32>,
    /// Address the connections come from (attackers); the kernel's choice when absent.
    pub source_ip: Option<std::net::IpAddr>,
    /// The target's handshake timeout, against which attackers' lifetimes are checked.
    pub cut_after: Option<Duration>,
    /// Bulk: write or check the backend's [`crate::backend::Stream`] (it needs `--verify`
    /// too); request/response: number each request and check every echo.
    pub verify: bool,
}

/// Parses `moat-bench load` options.
pub fn parse_args(argv: &[String]) -> Result<Args> {
    let mut opts = getopts::Options::new();
    opts.reqopt("", "mode", &Mode::NAMES.join(" | "), "MODE");
    opts.reqopt("", "addr", "target address", "ADDR");
    opts.reqopt(
        "",
        "ca",
        "CA certificate the target's certificate chains to",
        "FILE",
    );
    opts.optopt("", "cert", "client certificate (mutual TLS)", "FILE");
    opts.optopt("", "key", "client key (mutual TLS)", "FILE");
    opts.optflag("", "resume", "resume sessions from a deep ticket pool");
    opts.optopt(
        "",
        "profile",
        "suites and groups the client offers: default, openssl-order, mlkem",
        "NAME",
    );
    opts.optflag(
        "",
        "verify",
        "check every byte: bulk against `backend --verify`, request/response echoes",
    );
    opts.optopt("", "concurrency", "connections or streams in parallel", "N");
    opts.optopt(
        "",
        "tunnels",
        "idle and rr-idle modes: tunnels to hold open",
        "N",
    );
    opts.optopt("", "size", "request/response message size in bytes", "N");
    opts.optopt("", "warmup", "seconds before the measured window", "DUR");
    opts.optopt("", "duration", "seconds in the measured window", "DUR");
    opts.reqopt("", "target-pid", "process id of the target", "PID");
    opts.optopt("", "backend-pid", "process id of the backend", "PID");
    opts.optopt(
        "",
        "source-ip",
        "attackers: connect from this address",
        "IP",
    );
    opts.optopt(
        "",
        "cut-after",
        "attackers: the target's handshake timeout, to check cuts against",
        "DUR",
    );
    let m = opts.parse(argv).map_err(|e| e.to_string())?;

    let number = |name: &str, default: usize| -> Result<usize> {
        match m.opt_str(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: `{v}` is not a whole number")),
            None => Ok(default),
        }
    };
    let duration = |name: &str, default: f64| -> Result<Duration> {
        match m.opt_str(name) {
            Some(v) => parse_duration(&v).map_err(|e| format!("--{name}: {e}")),
            None => Ok(Duration::from_secs_f64(default)),
        }
    };
    let pid = |name: &str| -> Result<Option<u32>> {
        m.opt_str(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: `{v}` is not a process id"))
            })
            .transpose()
    };
    let addr_text = m.opt_str("addr").unwrap_or_default();
    let client_auth = match (m.opt_str("cert"), m.opt_str("key")) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Args {
        mode: Mode::parse(&m.opt_str("mode").unwrap_or_default())?,
        addr: addr_text
            .parse()
            .map_err(|_| format!("--addr: `{addr_text}` is not an IP:PORT address"))?,
        ca: PathBuf::from(m.opt_str("ca").unwrap_or_default()),
        client_auth,
        resume: if m.opt_present("resume") {
            ResumeMode::Pool
        } else {
            ResumeMode::Off
        },
        profile: match m.opt_str("profile") {
            Some(name) => ClientProfile::parse(&name).map_err(|e| format!("--profile: {e}"))?,
            None => ClientProfile::Default,
        },
        concurrency: number("concurrency", 32)?.max(1),
        tunnels: number("tunnels", 1000)?,
        size: number("size", 64)?.max(1),
        warmup: duration("warmup", 1.0)?,
        duration: duration("duration", 5.0)?,
        target_pid: pid("target-pid")?.unwrap_or(0),
        backend_pid: pid("backend-pid")?,
        source_ip: m
            .opt_str("source-ip")
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--source-ip: `{v}` is not an IP address"))
            })
            .transpose()?,
        cut_after: m
            .opt_str("cut-after")
            .map(|v| parse_duration(&v).map_err(|e| format!("--cut-after: {e}")))
            .transpose()?,
        verify: m.opt_present("verify"),
    })
}

/// Runs the generator and prints its `RESULT` line.
pub fn run(args: Args) -> Result<()> {
    crate::procfs::raise_open_file_limit()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(async move {
        let client = Client::new(&args)?;
        match args.mode {
            Mode::Handshake => handshake::run(&args, client).await,
            Mode::Upload | Mode::Download => bulk::run(&args, client).await,
            Mode::Idle => idle::run(&args, client).await,
            Mode::RequestResponse => rr::run(&args, client).await,
            Mode::RequestResponseBesideIdle => rr_idle::run(&args, client).await,
            Mode::Fairness => fairness::run(&args, client).await,
            Mode::Slowloris | Mode::Storm | Mode::Garbage | Mode::IpFlood => {
                flood::run(&args, client).await
            }
        }
    })?;
    println!("RESULT {}", report.line());
    // Open connections and tasks end with the process.
    Ok(())
}

/// A TLS client for the target: connector, server name and address.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
}

impl Client {
    fn new(args: &Args) -> Result<Client> {
        let auth = args
            .client_auth
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let config = tls::client_config(&args.ca, auth, args.resume, args.profile)?;
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(crate::certs::SERVER_NAME)
                .map_err(|e| format!("bad server name: {e}"))?,
            addr: args.addr,
        })
    }

    /// TCP connect (TCP_NODELAY on) and a full TLS handshake.
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        self.connector.connect(self.name.clone(), tcp).await
    }

    /// The bytes of the ClientHello this client would send, for attackers to trickle.
    pub fn client_hello(&self) -> Result<Vec<u8>> {
        let config = self.connector.config().clone();
        let mut conn = rustls::ClientConnection::new(config, self.name.clone())
            .map_err(|e| format!("cannot start a TLS client: {e}"))?;
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello)
                .map_err(|e| format!("cannot write a ClientHello: {e}"))?;
        }
        Ok(hello)
    }
}

/// Counters shared by a scenario's tasks.
#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub resumed: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
    first_error: Mutex<Option<String>>,
    /// The cipher suite and key-exchange group of the first handshake, for the report.
    negotiated: OnceLock<Negotiated>,
    /// Handshakes that negotiated something other than the first one did.
    negotiated_other: AtomicU64,
}

/// What one handshake negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    suite: Option<rustls::CipherSuite>,
    group: Option<rustls::NamedGroup>,
}

impl Negotiated {
    /// `SUITE/GROUP`, one token for the `RESULT` line: `AES_256_GCM_SHA384/X25519`.
    fn token(self) -> String {
        let suite = self.suite.map_or("none".into(), tls::short_suite);
        let group = self.group.map_or("none".into(), |g| format!("{g:?}"));
        format!("{suite}/{group}").replace(char::is_whitespace, "")
    }
}

impl Counters {
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error and keeps the first one's text for the report.
    pub fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }

    /// Remembers what the first completed handshake negotiated, and counts the handshakes
    /// that negotiated anything else.
    pub fn note_negotiated(&self, conn: &rustls::ClientConnection) {
        let this = Negotiated {
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        };
        if *self.negotiated.get_or_init(|| this) != this {
            self.negotiated_other.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> [u64; 4] {
        [&self.ops, &self.resumed, &self.bytes, &self.errors].map(|c| c.load(Ordering::Relaxed))
    }
}

/// The measured window: counter deltas, CPU deltas and wall time.
pub struct Window {
    pub secs: f64,
    pub ops: u64,
    pub resumed: u64,
    pub bytes: u64,
    pub errors: u64,
    /// CPU times at the start and the end of the window.
    pub cpu_start: CpuSample,
    pub cpu_end: CpuSample,
}

/// Waits out the warm-up, then measures `duration` of whatever the tasks are doing.
/// While the window is open, `phase` (when given) holds the second value.
pub async fn measure(
    args: &Args,
    counters: &Counters,
    phase: Option<(&AtomicUsize, usize)>,
) -> Result<Window> {
    tokio::time::sleep(args.warmup).await;
    if let Some((flag, value)) = phase {
        flag.store(value, Ordering::Relaxed);
    }
    let c0 = counters.snapshot();
    let cpu_start = CpuSample::take(args.target_pid, args.backend_pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(args.duration).await;
    let c1 = counters.snapshot();
    let cpu_end = CpuSample::take(args.target_pid, args.backend_pid)?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some((flag, _)) = phase {
        flag.store(0, Ordering::Relaxed);
    }
    Ok(Window {
        secs,
        ops: c1[0] - c0[0],
        resumed: c1[1] - c0[1],
        bytes: c1[2] - c0[2],
        errors: c1[3] - c0[3],
        cpu_start,
        cpu_end,
    })
}

/// The `key=value` pairs of the `RESULT` line.
#[derive(Default)]
pub struct Report {
    pairs: Vec<(&'static str, String)>,
}

impl Report {
    /// Starts a report from a window's common figures.
    pub fn from_window(w: &Window, counters: &Counters) -> Report {
        let mut r = Report::default();
        r.put("secs", format!("{:.3}", w.secs));
        r.put("ops", w.ops);
        r.put("resumed", w.resumed);
        r.put("bytes", w.bytes);
        r.put("errors", w.errors);
        let (a, b) = (&w.cpu_start, &w.cpu_end);
        let secs = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64());
        r.put("target_cpu", secs(b.target - a.target));
        r.put("gen_cpu", secs(b.generator - a.generator));
        r.put("backend_cpu", secs(b.backend - a.backend));
        let others = b.others_since(a).as_secs_f64() * 100.0 / w.secs.max(1e-9);
        r.put("other_cpu", format!("{others:.1}"));
        for (i, (end, start)) in b.cpus.iter().zip(&a.cpus).enumerate().take(2) {
            let (busy, irq) = (end.busy_pct_since(start), end.irq_pct_since(start));
            r.put(["cpu0_busy", "cpu1_busy"][i], format!("{busy:.1}"));
            r.put(["cpu0_irq", "cpu1_irq"][i], format!("{irq:.1}"));
        }
        if let Some(negotiated) = counters.negotiated.get() {
            r.put("negotiated", negotiated.token());
            r.put(
                "negotiated_other",
                counters.negotiated_other.load(Ordering::Relaxed),
            );
        }
        let first = counters
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = first.as_ref() {
            // One token: the driver splits on whitespace.
            r.put("first_error", e.replace(char::is_whitespace, "_"));
        }
        r
    }

    pub fn put(&mut self, key: &'static str, value: impl ToString) {
        self.pairs.push((key, value.to_string()));
    }

    fn line(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
