//! Start-up errors: each one a sentence that names the flag or file and the problem.
//!
//! Everything that can go wrong before moat listens ends up here, so `main` can print one
//! line and pick the exit code. Problems of a single tunnel at run time are not errors of
//! this kind: they end that tunnel with a log line (see [`crate::tunnel::EndReason`]).

use std::fmt::{self, Write as _};
use std::io;
use std::path::PathBuf;

/// Why moat could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The command line is malformed: unknown flag, missing value, conflicting flags.
    Usage(String),
    /// A flag's value is not valid (bad address, bad duration, out of range).
    InvalidValue {
        /// The flag, with its dashes (`--listen`).
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named by a flag could not be read.
    ReadFile {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A file was read but does not hold what the flag needs.
    BadFile {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    KeyMismatch {
        /// The certificate file (`--cert`).
        cert: PathBuf,
        /// The key file (`--key`).
        key: PathBuf,
    },
    /// A target host name could not be resolved at start-up.
    Resolve {
        /// The flag that named the host.
        flag: &'static str,
        /// The host and port as given.
        value: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// A listening socket could not be opened (port in use, permission denied).
    Listen {
        /// The address moat tried to listen on, as the log shows it.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The sandbox could not be entered (see [`crate::sandbox`]).
    Sandbox(String),
    /// The poll loop could not be set up or failed outright.
    Runtime(io::Error),
    /// A mistake in the config file: the file, the service table (if any), and the error,
    /// told with the key's name as the file spells it (`cert`, not `--cert`).
    InConfig {
        /// The config file.
        file: PathBuf,
        /// `[[server]] "redis"`, or `None` for the top of the file.
        section: Option<String>,
        /// What is wrong.
        source: Box<Self>,
    },
}

impl StartError {
    /// The process exit code for this error: 2 for usage and configuration, 1 at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Listen { .. } | Self::Sandbox(_) | Self::Runtime(_) => 1,
            Self::InConfig { source, .. } => source.exit_code(),
            _ => 2,
        }
    }

    /// Shorthand for an [`StartError::InvalidValue`].
    pub fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            flag,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values and paths come from the command line: a line break or a terminal escape
        // in one is shown escaped, so the error stays one line.
        let f = &mut OneLine(f);
        match self {
            Self::Usage(msg) => write!(f, "{msg} (see moat --help)"),
            Self::InvalidValue {
                flag,
                value,
                reason,
            } => write!(f, "invalid {flag} '{value}': {reason}"),
            Self::ReadFile { flag, path, source } => {
                write!(
                    f,
                    "cannot read {flag} {}: {}",
                    path.display(),
                    plain_io(source)
                )
            }
            Self::BadFile { flag, path, reason } => {
                write!(f, "{flag} {}: {reason}", path.display())
            }
            Self::KeyMismatch { cert, key } => write!(
                f,
                "--key {} does not match the certificate in --cert {}",
                key.display(),
                cert.display()
            ),
            Self::Resolve {
                flag,
                value,
                source,
            } => write!(f, "cannot resolve {flag} '{value}': {}", plain_io(source)),
            Self::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {}", plain_io(source))
            }
            Self::Sandbox(reason) => write!(
                f,
                "cannot enter the sandbox: {reason} (--no-sandbox runs without it)"
            ),
            Self::Runtime(err) => write!(f, "{}", plain_io(err)),
            Self::InConfig {
                file,
                section,
                source,
            } => {
                write!(f, "{}: ", file.display())?;
                if let Some(section) = section {
                    write!(f, "{section}: ")?;
                }
                source.fmt_keyed(f)
            }
        }
    }
}

impl StartError {
    /// The error as a config file's message tells it: the key first, spelled as the file
    /// spells it (`cert: cannot read certs/x.pem: ...`), and no pointer to `--help`.
    fn fmt_keyed(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let key = |flag: &str| flag.trim_start_matches('-').to_owned();
        match self {
            Self::Usage(msg) => f.write_str(&unflag(msg)),
            Self::InvalidValue {
                flag,
                value,
                reason,
            } => write!(
                f,
                "{}: invalid value '{value}': {}",
                key(flag),
                unflag(reason)
            ),
            Self::ReadFile { flag, path, source } => write!(
                f,
                "{}: cannot read {}: {}",
                key(flag),
                path.display(),
                plain_io(source)
            ),
            Self::BadFile { flag, path, reason } => {
                write!(f, "{}: {}: {}", key(flag), path.display(), unflag(reason))
            }
            Self::KeyMismatch { cert, key } => write!(
                f,
                "key: {} does not match the certificate in cert {}",
                key.display(),
                cert.display()
            ),
            Self::Resolve {
                flag,
                value,
                source,
            } => write!(
                f,
                "{}: cannot resolve '{value}': {}",
                key(flag),
                plain_io(source)
            ),
            other => write!(f, "{other}"),
        }
    }
}

/// A message written for the command line, with `--flag` spelled as a file's key.
fn unflag(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let starts_word = at == 0 || rest[..at].ends_with([' ', '(', '\'']);
        let next_is_letter = rest[at + 2..].starts_with(|c: char| c.is_ascii_lowercase());
        out.push_str(&rest[..at]);
        if !(starts_word && next_is_letter) {
            out.push_str("--");
        }
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

/// Writes through to a formatter with control characters (and Unicode line separators)
/// escaped as `\n`, `\u{1b}`, ...
struct OneLine<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for OneLine<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadFile { source, .. }
            | Self::Resolve { source, .. }
            | Self::Listen { source, .. }
            | Self::Runtime(source) => Some(source),
            Self::InConfig { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// An `io::Error` as a person wants to read it: "No such file or directory", without the
/// "(os error 2)" suffix that `Display` adds.
pub fn plain_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_stays_one_line_whatever_the_value_holds() {
        // Found by the fuzzer (fuzz/regressions/cli/line-break-in-an-argument): `moat $'\n'`
        // printed a two-line error.
        let usage = StartError::Usage("unknown mode '\n'".into());
        assert_eq!(usage.to_string(), "unknown mode '\\n' (see moat --help)");
        let invalid = StartError::invalid("--listen", "1.2.3.4\r\n:5\u{1b}[2J", "no");
        assert_eq!(
            invalid.to_string(),
            "invalid --listen '1.2.3.4\\r\\n:5\\u{1b}[2J': no"
        );
        let file = StartError::BadFile {
            flag: "--cert",
            path: "a\u{2028}b\u{85}.pem".into(),
            reason: "empty".into(),
        };
        assert_eq!(file.to_string(), "--cert a\\u{2028}b\\u{85}.pem: empty");
        // Text without control characters is shown as it is.
        let plain = StartError::invalid("--idle-timeout", "5 minutes", "unknown unit");
        assert_eq!(
            plain.to_string(),
            "invalid --idle-timeout '5 minutes': unknown unit"
        );
    }
}
