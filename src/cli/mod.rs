//! The command line: `getopts` definitions, `--help`, and parsing into a [`Config`].
//!
//! The flags are one settings [`Source`] among two: the builders in
//! [`crate::config::settings`] read them exactly as they read a config file's table.

use getopts::{Matches, Options};

use crate::config::settings::{self, Source, SERVICE_KEYS};

mod flags;
#[cfg(test)]
mod tests;

use crate::config::{file, Config};
use crate::error::StartError;
use flags::{Kind, FLAGS};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run moat with this configuration.
    Run(Box<Config>),
    /// Check this configuration and exit (`moat check`, `--check`).
    Check(Box<Config>),
    /// Print this help text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

const USAGE: &str = "\
moat: a TLS tunnel with mutual authentication.

Usage:
  moat server --listen ADDR --target ADDR... (--cert FILE --key FILE)...
              (--client-ca FILE [--allow-* RULE...] [--crl FILE...] | --no-client-auth)
  moat client --listen ADDR --target ADDR... [--ca FILE] [--server-name NAME]
              [--cert FILE --key FILE] [--allow-* RULE...] [--crl FILE...]
  moat demo [--listen IP:PORT]
  moat --config FILE        run the services a TOML file describes
  moat check --config FILE  check a config file (and every file it names) without listening

  server  accepts TLS on --listen and forwards plaintext to --target.
  client  accepts plaintext on --listen and forwards TLS to --target.
          --target may be repeated: tunnels take the targets in turn, and a failed or
          timed-out connect moves on to the next before the client is given up on.
          Without --ca the server's certificate must chain to the system's trust store.
  demo    runs an echo backend, a server tunnel in front of it and a client tunnel in front
          of that, with the development certificates built into moat; prints how to try it.

Who gets in: a peer's certificate must chain to the CA and, when any --allow-* rule is
given, match at least one of them. In a pattern '*' matches within one DNS label (also for
--allow-cn and --allow-ou, where '.' separates labels) or one URI path segment; DNS names
compare without regard to case. --allow-spki takes sha256//BASE64 (or plain BASE64) of the
SHA-256 of the certificate's SubjectPublicKeyInfo, as curl's --pinnedpubkey does.

Several --cert/--key pairs: the certificate is chosen by the name the client asks for (SNI),
exact SAN first, then a wildcard SAN; the first pair is the default, also for clients that
send no name.

SIGHUP (or --reload-interval) re-reads the config file, certificates, keys, CAs, CRLs and
allow-lists for new handshakes; open tunnels are untouched. A reload that fails keeps all
of the old configuration.

ADDR is IP:PORT (127.0.0.1:7000), [IPv6]:PORT, HOST:PORT (resolved at start-up and
reload), :PORT (every interface) or unix:/path. DUR is a number with a unit: 250ms, 10s,
5m, 1h.";

/// Parses the arguments after the program name.
///
/// `descriptor_limit` is the process's open-file limit, from which the default `--max-conns`
/// is derived.
pub fn parse(args: &[String], descriptor_limit: u64) -> Result<Command, StartError> {
    let opts = options();
    let matches = opts
        .parse(args)
        .map_err(|e| StartError::Usage(describe(&e)))?;
    if matches.opt_present("help") {
        return Ok(Command::Help(opts.usage(USAGE)));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version);
    }
    let flags = Flags(&matches);
    let (mode_name, check) = match matches.free.as_slice() {
        [] => (None, false),
        [one] if one == "check" => (None, true),
        [one] => (Some(one.as_str()), false),
        [_, extra, ..] => return Err(StartError::Usage(format!("unexpected argument '{extra}'"))),
    };
    let check = check || matches.opt_present("check");
    let config = match (mode_name, matches.opt_str("config")) {
        (None, Some(file)) => from_file(&flags, &file, descriptor_limit)?,
        (Some(_), Some(_)) => {
            return Err(StartError::Usage(
                "--config describes the services: give it without a mode".into(),
            ))
        }
        (None, None) if check => {
            return Err(StartError::Usage(
                "check needs --config FILE (or --check after a mode's flags)".into(),
            ))
        }
        (None, None) => {
            return Err(StartError::Usage(
                "missing mode: say 'moat server', 'moat client', 'moat demo' or \
                 'moat --config FILE'"
                    .into(),
            ))
        }
        (Some(mode), None) => from_flags(&flags, mode, descriptor_limit)?,
    };
    Ok(if check {
        Command::Check(Box::new(config))
    } else {
        Command::Run(Box::new(config))
    })
}

/// One service (or the demo) from the flags.
fn from_flags(flags: &Flags<'_>, mode: &str, descriptor_limit: u64) -> Result<Config, StartError> {
    let global = settings::global(flags, descriptor_limit)?;
    let (services, demo) = match mode {
        "server" | "client" => (vec![settings::service(flags, mode, mode)?], None),
        "demo" => (Vec::new(), Some(settings::demo(flags)?)),
        other => {
            return Err(StartError::Usage(format!(
                "unknown mode '{other}': say 'moat server', 'moat client' or 'moat demo'"
            )))
        }
    };
    Ok(Config {
        global,
        services,
        demo,
        file: None,
    })
}

/// The services of a config file; settings of the process given as flags override the
/// file's.
fn from_file(flags: &Flags<'_>, file: &str, descriptor_limit: u64) -> Result<Config, StartError> {
    if let Some(key) = SERVICE_KEYS.iter().find(|k| flags.has(k)) {
        return Err(StartError::Usage(format!(
            "--{key} belongs to a service: with --config, write it in the file's \
             [[server]] or [[client]] table"
        )));
    }
    file::read(std::path::Path::new(file), flags, descriptor_limit)
}

/// The command line as a settings source.
struct Flags<'a>(&'a Matches);

impl Source for Flags<'_> {
    fn one(&self, key: &'static str) -> Result<Option<String>, StartError> {
        Ok(self.0.opt_str(key))
    }

    fn all(&self, key: &'static str) -> Result<Vec<String>, StartError> {
        Ok(self.0.opt_strs(key))
    }

    fn switch(&self, key: &'static str) -> Result<bool, StartError> {
        Ok(self.0.opt_present(key))
    }

    fn has(&self, key: &'static str) -> bool {
        self.0.opt_present(key)
    }
}

/// getopts' complaints in moat's own words, with the flag spelled as the user typed it.
fn describe(fail: &getopts::Fail) -> String {
    use getopts::Fail;
    let flag = |name: &str| {
        if name.chars().count() == 1 {
            format!("-{name}")
        } else {
            format!("--{name}")
        }
    };
    match fail {
        Fail::UnrecognizedOption(name) => format!("unknown flag {}", flag(name)),
        Fail::ArgumentMissing(name) => format!("{} needs a value", flag(name)),
        Fail::OptionDuplicated(name) => format!("{} given more than once", flag(name)),
        Fail::UnexpectedArgument(name) => format!("{} takes no value", flag(name)),
        Fail::OptionMissing(name) => format!("{} is required", flag(name)),
    }
}

fn options() -> Options {
    let mut o = Options::new();
    for flag in FLAGS {
        match flag.kind {
            Kind::One => o.optopt(flag.short, flag.name, flag.help, flag.hint),
            Kind::Many => o.optmulti(flag.short, flag.name, flag.help, flag.hint),
            Kind::Switch => o.optflag(flag.short, flag.name, flag.help),
        };
    }
    o
}
