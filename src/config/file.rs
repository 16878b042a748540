//! The config file: TOML with the process's settings at the top and one table per service,
//! each key named exactly as the flag.
//!
//! ```toml
//! log-level = "info"
//! idle-timeout = "10m"          # the default of every service below
//!
//! [[server]]
//! name = "redis"
//! listen = ":6380"
//! target = "unix:/run/redis/redis.sock"
//! cert = "certs/server.pem"
//! key = "certs/server.key"
//! client-ca = "certs/ca.pem"
//! allow-cn = ["billing-*", "ops-*"]
//!
//! [[client]]
//! name = "postgres"
//! listen = "127.0.0.1:5432"
//! target = "db.example:5433"
//! ca = "certs/ca.pem"
//! ```
//!
//! A value is a string, a number, a boolean (for flags without a value) or, for keys that
//! may be repeated, a list of strings. A relative path is taken from the file's directory.
//! An unknown key is an error — a typo must not silently drop a policy — and every error
//! names the file, the service and the key.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::settings::{self, Source, GLOBAL_KEYS, SERVICE_KEYS};
use super::{Config, ServiceConfig};
use crate::address::Address;
use crate::error::StartError;

/// Keys whose values are files: a relative path is taken from the config file's directory.
const PATH_KEYS: &[&str] = &["cert", "key", "client-ca", "ca", "crl"];

/// Keys whose values are addresses, which may be unix sockets with relative paths.
const ADDRESS_KEYS: &[&str] = &["listen", "target", "status"];

/// Service keys that may also stand at the top, as every service's default.
const DEFAULTS: &[&str] = &[
    "handshake-timeout",
    "connect-timeout",
    "idle-timeout",
    "close-timeout",
    "proxy-timeout",
];

/// A config file, read and parsed.
#[derive(Debug)]
pub struct Document {
    path: PathBuf,
    table: Table,
}

/// Reads and checks the file at `path`: its services and the process's settings, where
/// a setting `flags` gives wins over the file's.
pub fn read(path: &Path, flags: &dyn Source, descriptor_limit: u64) -> Result<Config, StartError> {
    from_document(Document::load(path)?, flags, descriptor_limit)
}

/// [`read`] for a file's text already in hand (`path` names it in errors); nothing is read.
pub fn parse(
    path: &Path,
    text: &str,
    flags: &dyn Source,
    descriptor_limit: u64,
) -> Result<Config, StartError> {
    from_document(Document::parse(path, text)?, flags, descriptor_limit)
}

fn from_document(
    document: Document,
    flags: &dyn Source,
    descriptor_limit: u64,
) -> Result<Config, StartError> {
    let path = document.path.clone();
    // The file's own settings first, so that a mistake there is told as the file's: the
    // flags over them can then only fail for a flag's value, and say so.
    settings::global(&document.top(), descriptor_limit).map_err(|e| document.error(None, e))?;
    let global = settings::global(&Layered(flags, &document.top()), descriptor_limit)?;
    Ok(Config {
        global,
        services: document.services()?,
        demo: None,
        file: Some(path),
    })
}

/// An error in building `service` (reading its files, resolving its names, binding its
/// listener), told as the config file's when the service comes from one.
pub fn service_error(file: Option<&Path>, service: &ServiceConfig, err: StartError) -> StartError {
    match file {
        Some(file) if !matches!(err, StartError::InConfig { .. }) => StartError::InConfig {
            file: file.to_owned(),
            section: Some(format!(
                "[[{}]] {:?}",
                service.kind.mode_name(),
                service.name
            )),
            source: Box::new(err),
        },
        _ => err,
    }
}

/// One settings source over another: a key the first has wins.
struct Layered<'a>(&'a dyn Source, &'a dyn Source);

impl Layered<'_> {
    fn pick(&self, key: &'static str) -> &dyn Source {
        if self.0.has(key) {
            self.0
        } else {
            self.1
        }
    }
}

impl Source for Layered<'_> {
    fn one(&self, key: &'static str) -> Result<Option<String>, StartError> {
        self.pick(key).one(key)
    }

    fn all(&self, key: &'static str) -> Result<Vec<String>, StartError> {
        self.pick(key).all(key)
    }

    fn switch(&self, key: &'static str) -> Result<bool, StartError> {
        self.pick(key).switch(key)
    }

    fn has(&self, key: &'static str) -> bool {
        self.0.has(key) || self.1.has(key)
    }
}

impl Document {
    /// Reads and parses the file; an unknown key at the top is an error.
    pub fn load(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path).map_err(|source| StartError::ReadFile {
            flag: "--config",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses a file's text (`path` names it in errors); an unknown key at the top is an
    /// error.
    pub fn parse(path: &Path, text: &str) -> Result<Self, StartError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| StartError::BadFile {
                flag: "--config",
                path: path.to_owned(),
                reason: one_line(&e.to_string()),
            })?;
        let document = Self {
            path: path.to_owned(),
            table,
        };
        for key in document.table.keys() {
            let known = GLOBAL_KEYS.contains(&key.as_str())
                || DEFAULTS.contains(&key.as_str())
                || key == "server"
                || key == "client";
            if !known {
                let hint = if SERVICE_KEYS.contains(&key.as_str()) {
                    "it belongs in a [[server]] or [[client]] table"
                } else {
                    "not a setting moat knows (a typo?)"
                };
                return Err(document.error(None, unknown(key, hint)));
            }
        }
        Ok(document)
    }

    /// The top of the file as a settings source.
    pub fn top(&self) -> FileTable<'_> {
        FileTable {
            table: &self.table,
            defaults: None,
            dir: self.dir(),
        }
    }

    /// Every `[[server]]` and `[[client]]` table, in order; names must be unique.
    pub fn services(&self) -> Result<Vec<ServiceConfig>, StartError> {
        let mut services: Vec<ServiceConfig> = Vec::new();
        for mode in ["server", "client"] {
            let Some(value) = self.table.get(mode) else {
                continue;
            };
            let Value::Array(tables) = value else {
                let err = StartError::Usage(format!("write [[{mode}]] tables for services"));
                return Err(self.error(None, err));
            };
            for (index, table) in tables.iter().enumerate() {
                let section = Section {
                    mode,
                    index: index + 1,
                    name: table.get("name").and_then(Value::as_str).map(str::to_owned),
                };
                let Value::Table(table) = table else {
                    let err = StartError::Usage(format!("write [[{mode}]] tables for services"));
                    return Err(self.error(Some(&section), err));
                };
                let service = self
                    .service(mode, table, &section)
                    .map_err(|e| self.error(Some(&section), e))?;
                if services.iter().any(|s| s.name == service.name) {
                    let err = StartError::Usage(format!(
                        "another service is named \"{}\": give each a name of its own",
                        service.name
                    ));
                    return Err(self.error(Some(&section), err));
                }
                let shared = |s: &&ServiceConfig| s.listen == service.listen && !any_port(s);
                if let Some(other) = services.iter().find(shared) {
                    let err = StartError::Usage(format!(
                        "listen: \"{}\" listens on {} already: give each service a place of \
                         its own",
                        other.name, service.listen
                    ));
                    return Err(self.error(Some(&section), err));
                }
                services.push(service);
            }
        }
        if services.is_empty() {
            let err = StartError::Usage("no service: add a [[server]] or [[client]] table".into());
            return Err(self.error(None, err));
        }
        Ok(services)
    }

    fn service(
        &self,
        mode: &str,
        table: &Table,
        section: &Section,
    ) -> Result<ServiceConfig, StartError> {
        if let Some(key) = table.keys().find(|k| !SERVICE_KEYS.contains(&k.as_str())) {
            let hint = if GLOBAL_KEYS.contains(&key.as_str()) {
                "it is a setting of the whole process: write it at the top of the file"
            } else {
                "not a setting moat knows (a typo?)"
            };
            return Err(unknown(key, hint));
        }
        let source = FileTable {
            table,
            defaults: Some(&self.table),
            dir: self.dir(),
        };
        let default_name = if section.index == 1 {
            mode.to_owned()
        } else {
            format!("{mode}-{}", section.index)
        };
        settings::service(&source, mode, &default_name)
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn error(&self, section: Option<&Section>, source: StartError) -> StartError {
        StartError::InConfig {
            file: self.path.clone(),
            section: section.map(ToString::to_string),
            source: Box::new(source),
        }
    }
}

/// Whether a service listens on port 0, where every listener gets a port of its own.
fn any_port(service: &ServiceConfig) -> bool {
    match &service.listen {
        Address::Ip(addr) => addr.port() == 0,
        Address::AnyInterface(port) | Address::Host(_, port) => *port == 0,
        Address::Unix(_) => false,
    }
}

/// Which service table an error is about: `[[server]] "redis"`, or `[[client]] #2`.
struct Section {
    mode: &'static str,
    index: usize,
    name: Option<String>,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "[[{}]] {name:?}", self.mode),
            None => write!(f, "[[{}]] #{}", self.mode, self.index),
        }
    }
}

/// One table of the file as a settings source, with the top of the file as the defaults
/// of the keys that may stand there.
#[derive(Debug)]
pub struct FileTable<'a> {
    table: &'a Table,
    defaults: Option<&'a Table>,
    dir: &'a Path,
}

impl FileTable<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.table.get(key).or_else(|| {
            self.defaults
                .filter(|_| DEFAULTS.contains(&key))
                .and_then(|d| d.get(key))
        })
    }

    /// A scalar as the text a flag would carry.
    fn text(&self, key: &'static str, value: &Value) -> Result<String, StartError> {
        let text = match value {
            Value::String(s) => s.clone(),
            // A mode written as an octal literal (0o660) is already the number.
            Value::Integer(n) if key == "unix-mode" => format!("{n:o}"),
            Value::Integer(n) => n.to_string(),
            other => {
                return Err(StartError::invalid(
                    flag(key),
                    &other.to_string(),
                    "expected a string (or a number)",
                ))
            }
        };
        Ok(self.resolve(key, text))
    }

    /// Relative paths of file keys, and of unix sockets (`unix:moat.sock`), are taken
    /// from the config file's directory.
    fn resolve(&self, key: &str, text: String) -> String {
        if PATH_KEYS.contains(&key) && Path::new(&text).is_relative() {
            return self.dir.join(&text).to_string_lossy().into_owned();
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if ADDRESS_KEYS.contains(&key) && !path.is_empty() && Path::new(path).is_relative() {
                return format!("unix:{}", self.dir.join(path).to_string_lossy());
            }
        }
        text
    }
}

impl Source for FileTable<'_> {
    fn one(&self, key: &'static str) -> Result<Option<String>, StartError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(_)) => Err(StartError::invalid(
                flag(key),
                "[...]",
                "expected one value, not a list",
            )),
            Some(value) => self.text(key, value).map(Some),
        }
    }

    fn all(&self, key: &'static str) -> Result<Vec<String>, StartError> {
        match self.value(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|v| self.text(key, v)).collect(),
            Some(value) => Ok(vec![self.text(key, value)?]),
        }
    }

    fn switch(&self, key: &'static str) -> Result<bool, StartError> {
        match self.value(key) {
            None => Ok(false),
            Some(Value::Boolean(on)) => Ok(*on),
            Some(other) => Err(StartError::invalid(
                flag(key),
                &other.to_string(),
                "expected true or false",
            )),
        }
    }

    fn has(&self, key: &'static str) -> bool {
        match self.value(key) {
            Some(Value::Boolean(on)) => *on,
            Some(_) => true,
            None => false,
        }
    }
}

/// The flag spelling of `key`, which errors carry (a config file's message says `key`).
fn flag(key: &'static str) -> &'static str {
    settings::flag_of(key)
}

fn unknown(key: &str, hint: &str) -> StartError {
    StartError::Usage(format!("unknown key '{key}': {hint}"))
}

/// TOML's messages span lines, with the offending line quoted under its number
/// (`12 | [[client]`) and a caret line; moat's errors are one line: where, then what.
fn one_line(text: &str) -> String {
    let quoted = |line: &str| {
        line.split_once('|')
            .is_some_and(|(number, _)| number.trim().chars().all(|c| c.is_ascii_digit()))
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !quoted(l))
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_become_one_line() {
        let err = "[[client]\nx = 1\n"
            .parse::<Table>()
            .unwrap_err()
            .to_string();
        assert!(err.lines().count() > 1, "{err}");
        let line = one_line(&err);
        assert!(!line.contains('|') && !line.contains('\n'), "{line}");
        assert!(
            line.starts_with("TOML parse error at line 1, column "),
            "{line}"
        );
        assert!(line.contains(": unclosed array table"), "{line}");
    }
}
