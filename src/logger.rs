//! A small logger for the `log` facade: one line per record on standard error, as text
//! (`2026-11-26T21:55:27.123Z INFO  message`) or as one JSON object (`--log-format json`).
//!
//! Logging must never stall the loop: a blocked `write(2)` on a full stderr pipe would stop
//! every tunnel. So lines go into a bounded buffer that a writer thread of its own empties
//! into stderr. While the poll loop runs it wakes the writer once per turn ([`flush`]), so a
//! burst of finished tunnels costs one `write`, not one each. When stderr stalls and the
//! buffer is full, lines are dropped and counted ([`dropped_lines`]); the writer says how
//! many once it catches up.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::log_format::{self, Field, TunnelRecord};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of text per record.
    Text,
    /// One JSON object per record.
    Json,
}

#[derive(Debug)]
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// Lines waiting for the writer thread.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Wakes the writer thread.
static WAKE: Condvar = Condvar::new();

// Whether lines wait for `flush` (set while a poll loop runs), per thread: a worker's loop
// gathers its turn's lines, while a line from any other thread (the control thread's reload
// or shutdown lines) wakes the writer at once.
thread_local! {
    static BATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lines dropped because the buffer was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// [`Format`] as a number (0 text, 1 JSON).
static FORMAT: AtomicU8 = AtomicU8::new(0);

/// Set by [`finish`]: the writer writes what is left and stops.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether the writer thread runs (see [`start_writer`]).
static WRITER: AtomicBool = AtomicBool::new(false);

/// How the writer says it has written everything, for [`finish`].
static DONE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

/// Most bytes waiting for stderr; past it lines are dropped.
pub const PENDING_LIMIT: usize = 1024 * 1024;

/// Past this many waiting bytes the writer is woken at once, not at the end of the turn.
const WAKE_AT: usize = 64 * 1024;

/// How long [`finish`] waits for a stalled stderr before exiting anyway.
const FINISH_PATIENCE: Duration = Duration::from_secs(2);

/// Installs the logger at `level`. Until [`start_writer`], lines are written at once by
/// whoever logs them. Calling it again only changes the level and format, so tests that
/// start moat in-process more than once work.
pub fn init(level: LevelFilter, format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
    log::set_max_level(level);
    let _ = log::set_logger(&LOGGER);
}

/// Starts the writer thread; from now on lines wait in the buffer. Called when the loop
/// starts, after the sandbox: a thread started later is bound by it like the rest.
pub fn start_writer() {
    if WRITER.swap(true, Ordering::Relaxed) {
        return;
    }
    let (done_tx, done_rx) = mpsc::channel();
    if let Ok(mut done) = DONE.lock() {
        *done = Some(done_rx);
    }
    let spawned = thread::Builder::new()
        .name("moat-log".into())
        .spawn(move || write_lines(done_tx));
    if spawned.is_err() {
        WRITER.store(false, Ordering::Relaxed);
    }
}

/// Gathers lines until [`flush`] (`true`, while the loop runs), or wakes the writer for
/// each line (`false`).
pub fn batch(on: bool) {
    BATCHING.with(|b| b.set(on));
    if !on {
        flush();
    }
}

/// Wakes the writer for the lines gathered so far (the end of a loop turn).
pub fn flush() {
    WAKE.notify_one();
}

/// Writes every waiting line and stops the writer; waits at most two seconds for a stderr
/// that does not drain. Call before the process exits.
pub fn finish() {
    if !WRITER.load(Ordering::Relaxed) {
        return;
    }
    STOPPING.store(true, Ordering::Relaxed);
    WAKE.notify_one();
    if let Ok(mut done) = DONE.lock() {
        if let Some(done) = done.take() {
            let _ = done.recv_timeout(FINISH_PATIENCE);
        }
    }
}

/// Lines dropped so far because stderr did not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The format lines are written in.
pub fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// Logs a tunnel's closing line, with its facts as separate fields in JSON.
pub fn tunnel_closed(level: Level, record: &TunnelRecord<'_>) {
    if level > log::max_level() {
        return;
    }
    let ts = utc_timestamp();
    let mut line = String::with_capacity(256);
    match format() {
        Format::Json => log_format::write_json(&ts, level, record, &mut line),
        Format::Text => {
            let _ = write!(line, "{ts} {level:<5} ");
            log_format::write_text(record, &mut line);
            line.push('\n');
        }
    }
    queue(line.as_bytes());
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // rustls logs its own view of every alert at debug; keep it behind `trace` so that
        // `debug` stays about tunnels.
        if record.target().starts_with("rustls") && log::max_level() < LevelFilter::Trace {
            return;
        }
        let ts = utc_timestamp();
        let mut line = String::with_capacity(128);
        match format() {
            Format::Text => {
                let _ = writeln!(line, "{ts} {:<5} {}", record.level(), record.args());
            }
            Format::Json => {
                let mut fields = Fields::default();
                let _ = record.key_values().visit(&mut fields);
                let fields: Vec<(&str, Field<'_>)> = fields
                    .0
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.field()))
                    .collect();
                log_format::write_json_line_with(
                    &ts,
                    record.level(),
                    record.args(),
                    &fields,
                    &mut line,
                );
            }
        }
        queue(line.as_bytes());
    }

    fn flush(&self) {
        flush();
    }
}

/// Adds a line to the buffer, or drops it when the buffer is full; before the writer
/// thread runs (start-up, and after [`finish`]), writes it at once.
fn queue(line: &[u8]) {
    if !WRITER.load(Ordering::Relaxed) || STOPPING.load(Ordering::Relaxed) {
        let _ = std::io::stderr().lock().write_all(line);
        return;
    }
    let Ok(mut pending) = PENDING.lock() else {
        return;
    };
    if pending.len() + line.len() > PENDING_LIMIT {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    pending.extend_from_slice(line);
    let wake = pending.len() >= WAKE_AT || !BATCHING.with(std::cell::Cell::get);
    drop(pending);
    if wake {
        WAKE.notify_one();
    }
}

/// The writer thread: takes what is waiting, writes it (blocking only itself), and says
/// how many lines were dropped while it was stuck.
fn write_lines(done: mpsc::Sender<()>) {
    let mut out = Vec::new();
    let mut reported = 0;
    loop {
        let stopping = {
            let Ok(mut pending) = PENDING.lock() else {
                return;
            };
            while pending.is_empty() && !STOPPING.load(Ordering::Relaxed) {
                pending = match WAKE.wait_timeout(pending, Duration::from_secs(1)) {
                    Ok((guard, _)) => guard,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut *pending, &mut out);
            STOPPING.load(Ordering::Relaxed) && pending.is_empty()
        };
        let dropped = dropped_lines();
        if dropped > reported {
            let note = dropped_note(format(), &utc_timestamp(), dropped - reported);
            out.extend_from_slice(note.as_bytes());
            reported = dropped;
        }
        // A closed stderr must not take moat down: a lost log line is the lesser harm.
        let _ = std::io::stderr().lock().write_all(&out);
        out.clear();
        if out.capacity() > WAKE_AT * 4 {
            out.shrink_to(WAKE_AT);
        }
        if stopping {
            let _ = done.send(());
            return;
        }
    }
}

/// The line that says `count` lines were dropped, in the format of the others (a JSON
/// reader must not meet a line of text), with the count as a field of its own.
fn dropped_note(format: Format, ts: &str, count: u64) -> String {
    let msg = format_args!("{count} log line(s) dropped: standard error did not keep up");
    let mut line = String::with_capacity(128);
    match format {
        Format::Text => {
            let _ = writeln!(line, "{ts} {:<5} {msg}", Level::Warn);
        }
        Format::Json => {
            let fields = [("dropped", Field::Number(count))];
            log_format::write_json_line_with(ts, Level::Warn, &msg, &fields, &mut line);
        }
    }
    line
}

/// The key-values of one record, kept for its JSON object.
#[derive(Default)]
struct Fields(Vec<(String, FieldValue)>);

enum FieldValue {
    Number(u64),
    Text(String),
}

impl FieldValue {
    fn field(&self) -> Field<'_> {
        match self {
            Self::Number(n) => Field::Number(*n),
            Self::Text(text) => Field::Text(text),
        }
    }
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let value = match value.to_u64() {
            Some(n) => FieldValue::Number(n),
            None => FieldValue::Text(value.to_string()),
        };
        self.0.push((key.as_str().to_owned(), value));
        Ok(())
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn utc_timestamp() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, dropped_note, Format};

    #[test]
    fn the_dropped_lines_note_takes_the_format_of_the_other_lines() {
        let ts = "2026-11-26T22:05:30.324Z";
        assert_eq!(
            dropped_note(Format::Text, ts, 3),
            "2026-11-26T22:05:30.324Z WARN  3 log line(s) dropped: standard error did not keep up\n"
        );
        let json = dropped_note(Format::Json, ts, 3);
        assert!(
            json.ends_with("}\n") && json.matches('\n').count() == 1,
            "{json}"
        );
        let object: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(object["level"], "WARN");
        assert_eq!(object["dropped"], 3);
        assert_eq!(
            object["msg"],
            "3 log line(s) dropped: standard error did not keep up"
        );
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
    }
}
