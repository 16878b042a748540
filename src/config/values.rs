//! How the values of settings are written: durations, counts, lists, levels, versions.
//! The same parsers serve the command line and the config file.

use std::time::Duration;

use super::TlsVersion;
use crate::error::StartError;

/// Parses a duration such as `250ms`, `10s`, `5m` or `1h`.
pub fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, StartError> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = |reason: &str| StartError::invalid(flag, text, reason);
    let number: u64 = number
        .parse()
        .map_err(|_| bad("expected a number with a unit, such as 250ms, 10s, 5m or 1h"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(bad("missing unit: write 250ms, 10s, 5m or 1h")),
        _ => return Err(bad("unknown unit: use ms, s, m or h")),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| bad("too long"))?;
    if millis == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses a whole number above zero.
pub fn parse_count(flag: &'static str, text: &str) -> Result<usize, StartError> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(StartError::invalid(
            flag,
            text,
            "expected a whole number above 0",
        )),
    }
}

/// Splits a comma-separated list (`h2,http/1.1`); empty items are an error.
pub fn parse_list(flag: &'static str, text: &str) -> Result<Vec<String>, StartError> {
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(StartError::invalid(
            flag,
            text,
            "expected a comma-separated list without empty items",
        ));
    }
    Ok(items)
}

/// Parses a log level: `error`, `warn`, `info`, `debug` or `trace`.
pub fn parse_log_level(flag: &'static str, text: &str) -> Result<log::LevelFilter, StartError> {
    match text {
        "error" | "warn" | "info" | "debug" | "trace" => {
            Ok(text.parse().unwrap_or(log::LevelFilter::Info))
        }
        _ => Err(StartError::invalid(
            flag,
            text,
            "expected error, warn, info, debug or trace",
        )),
    }
}

/// Parses a file mode written in octal, such as `0660` or `660`.
pub fn parse_mode(flag: &'static str, text: &str) -> Result<u32, StartError> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(StartError::invalid(
            flag,
            text,
            "expected an octal file mode, such as 0660",
        )),
    }
}

impl TlsVersion {
    /// Parses `1.2` or `1.3`.
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, StartError> {
        match text {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(StartError::invalid(flag, text, "expected 1.2 or 1.3")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        let ok = |t| parse_duration("--x", t).ok();
        assert_eq!(ok("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(ok("10s"), Some(Duration::from_secs(10)));
        assert_eq!(ok("5m"), Some(Duration::from_secs(300)));
        assert_eq!(ok("1h"), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "10",
            "s",
            "-1s",
            "1.5s",
            "10 s",
            "0s",
            "3d",
            "99999999999999999h",
        ] {
            assert!(parse_duration("--x", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            parse_list("--alpn", "h2,http/1.1").ok(),
            Some(vec!["h2".to_owned(), "http/1.1".to_owned()])
        );
        for bad in ["", "h2,", ",h2", "h2,,x"] {
            assert!(parse_list("--alpn", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("--unix-mode", "0660").ok(), Some(0o660));
        assert_eq!(parse_mode("--unix-mode", "600").ok(), Some(0o600));
        for bad in ["", "0999", "rw", "77777"] {
            assert!(parse_mode("--unix-mode", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn counts_are_positive() {
        assert_eq!(parse_count("--n", "7").ok(), Some(7));
        for bad in ["0", "-1", "x", ""] {
            assert!(parse_count("--n", bad).is_err(), "{bad:?} accepted");
        }
    }
}
