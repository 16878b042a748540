//! Fault injection: how a reader tells the ways a stream can end apart ([`Ending`]), what a
//! peer does ([`Script`]), plain peers that follow a script ([`plain_exchange`]; the TLS
//! peer is in `tls_peer.rs`), and the check that a case left nothing behind in moat — no
//! tunnel, no buffer, no descriptor ([`Watch`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use super::{Moat, PATIENCE};

/// How a stream ended, as its reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Plain: a read returned 0 (TCP FIN).
    Fin,
    /// A read or write failed with `ECONNRESET` (TCP RST).
    Reset,
    /// TLS: `close_notify`, the clean end.
    CloseNotify,
    /// TLS: TCP EOF without `close_notify`, a truncation.
    Truncated,
    /// TLS: the peer sent a fatal alert.
    Alert(AlertDescription),
    /// Anything else (a timeout, a TLS error of our own).
    Failed(String),
}

impl Ending {
    /// Whether a TLS reader learnt of an abort: no `close_notify`, and no alert either (a
    /// reset, or a bare TCP EOF).
    pub fn is_tls_abort(&self) -> bool {
        matches!(self, Self::Truncated | Self::Reset)
    }
}

/// What a peer received, and how its stream ended.
pub struct Received {
    /// Every byte that arrived, in order.
    pub got: Vec<u8>,
    /// How the stream ended.
    pub ending: Ending,
    /// How many bytes of its own the peer handed to the kernel (or to rustls).
    pub sent: usize,
}

/// Lengths, not megabytes of data, in failure messages.
impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("got", &format_args!("{} bytes", self.got.len()))
            .field("ending", &self.ending)
            .field("sent", &self.sent)
            .finish()
    }
}

impl Received {
    /// Asserts that `expected` arrived whole, in order, followed by `ending`.
    #[track_caller]
    pub fn assert_whole(&self, expected: &[u8], ending: Ending) {
        assert_eq!(self.ending, ending, "after {} bytes", self.got.len());
        assert_same(&self.got, expected);
    }

    /// Asserts that what arrived is a prefix of `sent` (after an abort, bytes in flight
    /// may be lost, never changed or reordered).
    #[track_caller]
    pub fn assert_prefix_of(&self, sent: &[u8]) {
        assert!(
            self.got.len() <= sent.len() && sent.starts_with(&self.got),
            "{} bytes arrived; not a prefix of the {} sent",
            self.got.len(),
            sent.len()
        );
    }
}

/// Compares two byte strings, naming the first difference instead of printing megabytes.
#[track_caller]
pub fn assert_same(got: &[u8], expected: &[u8]) {
    if got != expected {
        let first = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "got {} bytes, expected {}; first difference at {:?}",
            got.len(),
            expected.len(),
            first
        );
    }
}

/// The ending an I/O error stands for, on a plain socket.
fn plain_error(e: &io::Error) -> Ending {
    match e.kind() {
        io::ErrorKind::ConnectionReset => Ending::Reset,
        _ => Ending::Failed(e.to_string()),
    }
}

/// A slow reader pauses once per this many bytes read.
pub const PAUSE_EVERY: usize = 16 * 1024;

/// Reads until the stream ends; a `pause` per [`PAUSE_EVERY`] bytes makes a slow reader.
pub fn read_plain(stream: &mut TcpStream, pause: Option<Duration>) -> Received {
    read_plain_noting(stream, pause, usize::MAX, || {})
}

/// [`read_plain`], calling `noted` once when `mark` bytes have arrived.
fn read_plain_noting(
    stream: &mut TcpStream,
    pause: Option<Duration>,
    mark: usize,
    noted: impl FnOnce(),
) -> Received {
    let mut noted = Some(noted);
    let mut got = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let ending = loop {
        if got.len() >= mark {
            if let Some(noted) = noted.take() {
                noted();
            }
        }
        let before = got.len();
        match stream.read(&mut buf) {
            Ok(0) => break Ending::Fin,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break plain_error(&e),
        }
        if let Some(pause) = pause.filter(|_| before / PAUSE_EVERY != got.len() / PAUSE_EVERY) {
            thread::sleep(pause);
        }
    };
    Received {
        got,
        ending,
        sent: 0,
    }
}

/// What a peer does: what it sends, how it ends its own stream, how it reads.
#[derive(Debug, Clone)]
pub struct Script {
    /// The bytes it sends (a TLS peer: once its handshake is done).
    pub data: Vec<u8>,
    /// How it ends its stream after them.
    pub close: Close,
    /// An end other than a half-close ([`Close::Reset`], an alert, a bad record) waits
    /// until this many bytes have arrived too, so it comes mid-transfer.
    pub end_after_receiving: usize,
    /// TLS: key updates it asks for (TLS 1.3 `KeyUpdate`, update requested), spread
    /// evenly over `data`.
    pub key_updates: usize,
    /// A pause per [`PAUSE_EVERY`] bytes read from the socket: a slow reader.
    pub read_pause: Option<Duration>,
}

impl Script {
    /// Sends `data`, then ends as `close` says.
    pub fn new(data: Vec<u8>, close: Close) -> Self {
        Self {
            data,
            close,
            end_after_receiving: 0,
            key_updates: 0,
            read_pause: None,
        }
    }

    /// Ends (other than by a half-close) only once `bytes` have arrived.
    pub fn ending_after_receiving(mut self, bytes: usize) -> Self {
        self.end_after_receiving = bytes;
        self
    }

    /// Reads slowly: `pause` per [`PAUSE_EVERY`] bytes.
    pub fn reading_slowly(mut self, pause: Duration) -> Self {
        self.read_pause = Some(pause);
        self
    }

    /// Asks for `count` key updates on the way (TLS 1.3).
    pub fn with_key_updates(mut self, count: usize) -> Self {
        self.key_updates = count;
        self
    }
}

/// When a peer ends its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Right after its data: FIN (plain) or `close_notify` (TLS).
    AfterSending,
    /// After its data, and only once the other side's stream has ended.
    AfterPeerEnd,
    /// After its data, with a reset instead.
    Reset,
    /// TLS: after its data, a fatal alert instead of `close_notify`.
    Alert(AlertDescription),
    /// TLS: after its data, a record that does not decrypt.
    CorruptRecord,
    /// TLS: as [`Close::CorruptRecord`], but only once the other side's `close_notify` has
    /// arrived: garbage into a half-closed session.
    CorruptRecordAfterPeerEnd,
}

/// A plain peer that follows `script` while reading everything the other side sends (a
/// writer thread and a reader, so both directions are busy at once).
///
/// A reset is reported once by the kernel, to whichever call meets it first, and later
/// reads see EOF: a reset the writer met counts as the ending.
pub fn plain_exchange(stream: TcpStream, script: Script) -> Received {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(PATIENCE))
        .expect("write timeout");
    let mut reader = stream.try_clone().expect("clone stream");
    let (ended_tx, ended_rx) = mpsc::channel();
    let (mark_tx, mark_rx) = mpsc::channel();
    let (pause, mark) = (script.read_pause, script.end_after_receiving);
    let reading = thread::spawn(move || {
        let received = read_plain_noting(&mut reader, pause, mark, move || {
            let _ = mark_tx.send(());
        });
        let _ = ended_tx.send(());
        received
    });
    let mut stream = stream;
    let data = script.data;
    let mut sent = 0;
    let mut write_reset = false;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                write_reset = e.kind() == io::ErrorKind::ConnectionReset;
                break;
            }
        }
    }
    match script.close {
        Close::AfterSending => {
            let _ = stream.shutdown(Shutdown::Write);
        }
        Close::AfterPeerEnd => {
            let _ = ended_rx.recv_timeout(PATIENCE);
            let _ = stream.shutdown(Shutdown::Write);
        }
        Close::Reset => {
            let _ = mark_rx.recv_timeout(PATIENCE);
            // The reset goes out when the last handle closes: stop the reader first.
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER");
            let _ = stream.shutdown(Shutdown::Read);
        }
        close @ (Close::Alert(_) | Close::CorruptRecord | Close::CorruptRecordAfterPeerEnd) => {
            panic!("{close:?} needs a TLS peer")
        }
    }
    let mut received = reading.join().expect("reader thread");
    if write_reset && received.ending == Ending::Fin {
        received.ending = Ending::Reset;
    }
    received.sent = sent;
    drop(stream);
    received
}

/// Closes `stream` with a reset instead of a FIN (SO_LINGER 0).
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

/// moat's resources when a case begins: the descriptors it holds. A case is over when the
/// tunnel count is back to zero with no buffer lent, and every descriptor the case opened
/// is closed again.
pub struct Watch {
    pid: u32,
    fds: Vec<String>,
    rss_kib: u64,
}

impl Watch {
    /// Notes what `moat` holds now, and starts its peak memory afresh.
    pub fn new(moat: &Moat) -> Self {
        let pid = moat.pid();
        // "5" resets VmHWM, the peak resident size, to the current size (Linux ≥ 4.0).
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
        Self {
            pid,
            fds: descriptors(pid),
            rss_kib: status_kib(pid, "VmRSS:"),
        }
    }

    /// Waits until moat has no tunnel and lends no buffer, then checks that it holds the
    /// descriptors it held at the start, no more.
    ///
    /// The `stats:` line is asked for after the case's tunnel has ended (its closing line
    /// is logged as it ends, but an end that lingers to drain its peer keeps the tunnel a
    /// little longer), and asked again until it reads zero.
    #[track_caller]
    pub fn assert_settled(&self, moat: &Moat) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let before = moat.lines_with("stats: ").len();
            moat.signal("USR1");
            let line = moat
                .wait_for_count("stats: ", before + 1)
                .pop()
                .expect("a stats line");
            if line.contains("stats: tunnels=0 buffers_in_use=0 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moat still holds a tunnel or a buffer: {line}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let now = descriptors(self.pid);
        assert_eq!(
            now.len(),
            self.fds.len(),
            "descriptors before: {:?}\nafter: {:?}",
            self.fds,
            now
        );
    }

    /// How far moat's resident memory rose, at its peak during the case, above what it
    /// was at the start, in KiB.
    pub fn peak_growth_kib(&self) -> u64 {
        status_kib(self.pid, "VmHWM:").saturating_sub(self.rss_kib)
    }
}

/// A size field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, name: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// The descriptors `pid` holds, each as what it points to.
fn descriptors(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("{}->{target}", entry.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}
