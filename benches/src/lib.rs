//! moat-bench: the instrument that measures moat.
//!
//! One crate, two binaries:
//!
//! * `moat-bench` — the driver (`run`), the plaintext backends (`backend`), the load
//!   generator (`load`) and a certificate maker (`certs`);
//! * `moat-tokio-proxy` — the tokio + tokio-rustls baseline that moat is compared with.
//!
//! The driver starts every process itself, pins it with `taskset`, and reads each target's
//! CPU time and memory from `/proc`, so the figures do not depend on the generator's view.

pub mod backend;
pub mod certs;
pub mod driver;
pub mod load;
pub mod procfs;
pub mod tls;

/// Errors in this crate are plain sentences: every one ends up in front of a person.
pub type Result<T> = std::result::Result<T, String>;

/// Prints `moat-bench: MESSAGE` to stderr and exits with status 1.
pub fn die(msg: &str) -> ! {
    eprintln!("moat-bench: {msg}");
    std::process::exit(1)
}

/// Parses a number of seconds such as `5`, `0.5` or `250ms` into a [`std::time::Duration`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(std::time::Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "`{text}` is not a duration (use seconds like 5 or 0.5, or 250ms)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
