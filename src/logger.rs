//! A small logger for the `log` facade: one line per record on standard error,
//! `2026-11-26T21:55:27.123Z INFO  message`.
//!
//! While the poll loop runs, lines are gathered in a bounded buffer and written with one
//! system call per loop turn ([`flush`]), so a burst of finished tunnels costs one `write`,
//! not one each. Outside the loop (start-up, exit) every line is written at once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// Lines waiting for the end of the loop turn.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Whether lines wait for [`flush`] (set while the poll loop runs).
static BATCHING: AtomicBool = AtomicBool::new(false);

/// Past this many waiting bytes a line is written at once, so the buffer stays small.
const BATCH_LIMIT: usize = 16 * 1024;

/// Gathers lines until [`flush`] (`true`), or writes each at once (`false`, flushing first).
pub fn batch(on: bool) {
    BATCHING.store(on, Ordering::Relaxed);
    if !on {
        flush();
    }
}

/// Writes the waiting lines with one system call.
pub fn flush() {
    let Ok(mut pending) = PENDING.lock() else {
        return;
    };
    if !pending.is_empty() {
        // A closed stderr must not take the loop down: a lost log line is the lesser harm.
        let _ = std::io::stderr().lock().write_all(&pending);
        pending.clear();
        if pending.capacity() > BATCH_LIMIT * 2 {
            pending.shrink_to(BATCH_LIMIT);
        }
    }
}

/// Installs the logger at `level`. Calling it twice keeps the first logger and only changes
/// the level, so tests that start moat in-process more than once do not fail.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
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
        let Ok(mut pending) = PENDING.lock() else {
            return;
        };
        let _ = writeln!(
            pending,
            "{} {:<5} {}",
            utc_timestamp(),
            record.level(),
            record.args()
        );
        let full = pending.len() >= BATCH_LIMIT;
        drop(pending);
        if full || !BATCHING.load(Ordering::Relaxed) {
            flush();
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
fn utc_timestamp() -> String {
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
    use super::civil_from_days;

    #[test]
    fn calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
    }
}
