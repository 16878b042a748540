//! The command line: `getopts` definitions, `--help`, and parsing into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use getopts::{Matches, Options};

use crate::config::{
    parse_duration, parse_socket_addr, split_host_port, ClientAuth, ClientMode, Config, DemoMode,
    Identity, Limits, Mode, ServerMode, Timeouts,
};
use crate::error::StartError;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run moat with this configuration.
    Run(Box<Config>),
    /// Print this help text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

const USAGE: &str = "\
moat: a TLS tunnel with mutual authentication.

Usage:
  moat server --listen ADDR --target ADDR... --cert FILE --key FILE (--client-ca FILE | --no-client-auth)
  moat client --listen ADDR --target HOST:PORT... --ca FILE [--server-name NAME] [--cert FILE --key FILE]
  moat demo [--listen ADDR]

  server  accepts TLS on --listen and forwards plaintext to --target.
  client  accepts plaintext on --listen and forwards TLS to --target.
          --target may be repeated: tunnels take the targets in turn, and a failed or
          timed-out connect moves on to the next before the client is given up on.
  demo    runs an echo backend, a server tunnel in front of it and a client tunnel in front
          of that, with the development certificates built into moat; prints how to try it.

ADDR is IP:PORT (127.0.0.1:7000, [::1]:7000). DUR is a number with a unit: 250ms, 10s, 5m, 1h.";

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "listen",
        "address to accept connections on (demo: first of three ports; default 127.0.0.1:7000)",
        "ADDR",
    );
    o.optmulti(
        "",
        "target",
        "where to forward: server mode IP:PORT, client mode HOST:PORT",
        "ADDR",
    );
    o.optopt(
        "",
        "cert",
        "PEM certificate chain: the server's (server mode) or the client's (client mode)",
        "FILE",
    );
    o.optopt("", "key", "PEM private key of --cert", "FILE");
    o.optopt(
        "",
        "client-ca",
        "server mode: require client certificates signed by a CA in FILE",
        "FILE",
    );
    o.optflag(
        "",
        "no-client-auth",
        "server mode: accept clients without a certificate",
    );
    o.optopt(
        "",
        "ca",
        "client mode: CA bundle the server's certificate must chain to",
        "FILE",
    );
    o.optopt(
        "",
        "server-name",
        "client mode: name to verify in the server's certificate (default: host of --target)",
        "NAME",
    );
    o.optopt(
        "",
        "max-conns",
        "most tunnels at once; at the cap moat stops accepting (default: descriptor limit / 2)",
        "N",
    );
    o.optopt(
        "",
        "max-conns-per-ip",
        "most tunnels at once from one source address; more are closed at accept (default: no limit)",
        "N",
    );
    o.optopt(
        "",
        "max-handshakes",
        "most TLS handshakes in flight; at the budget the stalest one makes room (default 1024)",
        "N",
    );
    o.optopt(
        "",
        "handshake-timeout",
        "limit on a TLS handshake (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "connect-timeout",
        "limit on connecting to the target (default 5s)",
        "DUR",
    );
    o.optopt(
        "",
        "idle-timeout",
        "close a tunnel with no traffic for this long (default 5m)",
        "DUR",
    );
    o.optopt(
        "",
        "close-timeout",
        "close a half-closed tunnel with no traffic for this long (default 30s)",
        "DUR",
    );
    o.optopt(
        "",
        "shutdown-timeout",
        "on SIGTERM/SIGINT, let open tunnels finish for this long (default 30s)",
        "DUR",
    );
    o.optopt(
        "",
        "log-level",
        "error, warn, info, debug or trace (default info)",
        "LEVEL",
    );
    o.optflag(
        "",
        "no-sandbox",
        "do not restrict moat once it serves (Landlock: files and ports; seccomp: system calls)",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

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
    let mode_name = match matches.free.as_slice() {
        [] => {
            return Err(StartError::Usage(
                "missing mode: say 'moat server', 'moat client' or 'moat demo'".into(),
            ))
        }
        [one] => one.as_str(),
        [_, extra, ..] => return Err(StartError::Usage(format!("unexpected argument '{extra}'"))),
    };
    let mode = match mode_name {
        "server" => Mode::Server(server_mode(&matches)?),
        "client" => Mode::Client(client_mode(&matches)?),
        "demo" => Mode::Demo(demo_mode(&matches)?),
        other => {
            return Err(StartError::Usage(format!(
                "unknown mode '{other}': say 'moat server', 'moat client' or 'moat demo'"
            )))
        }
    };
    Ok(Command::Run(Box::new(Config {
        mode,
        timeouts: timeouts(&matches)?,
        limits: limits(&matches, descriptor_limit)?,
        log_level: log_level(&matches)?,
        sandbox: !matches.opt_present("no-sandbox"),
    })))
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

fn server_mode(m: &Matches) -> Result<ServerMode, StartError> {
    reject(m, "server", &["ca", "server-name"])?;
    let client_auth = match (m.opt_str("client-ca"), m.opt_present("no-client-auth")) {
        (Some(ca), false) => ClientAuth::Required { ca: ca.into() },
        (None, true) => ClientAuth::Disabled,
        (Some(_), true) => {
            return Err(StartError::Usage(
                "--client-ca and --no-client-auth contradict each other: give one".into(),
            ))
        }
        (None, false) => {
            return Err(StartError::Usage(
                "server mode needs --client-ca FILE to require client certificates signed by \
                 that CA (mutual TLS), or --no-client-auth to accept any client"
                    .into(),
            ))
        }
    };
    Ok(ServerMode {
        listen: addr(m, "--listen", "server")?,
        targets: targets(m, "server")?
            .iter()
            .map(|t| parse_socket_addr("--target", t))
            .collect::<Result<_, _>>()?,
        cert: required(m, "cert", "server")?.into(),
        key: required(m, "key", "server")?.into(),
        client_auth,
    })
}

fn client_mode(m: &Matches) -> Result<ClientMode, StartError> {
    reject(m, "client", &["client-ca", "no-client-auth"])?;
    let targets = targets(m, "client")?;
    for target in &targets {
        split_host_port("--target", target)?;
    }
    let identity = match (m.opt_str("cert"), m.opt_str("key")) {
        (Some(cert), Some(key)) => Some(Identity {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => {
            return Err(StartError::Usage(
                "--cert and --key go together: give both to present a client certificate".into(),
            ))
        }
    };
    Ok(ClientMode {
        listen: addr(m, "--listen", "client")?,
        targets,
        ca: PathBuf::from(required(m, "ca", "client")?),
        server_name: m.opt_str("server-name"),
        identity,
    })
}

fn demo_mode(m: &Matches) -> Result<DemoMode, StartError> {
    reject(
        m,
        "demo",
        &[
            "target",
            "cert",
            "key",
            "client-ca",
            "no-client-auth",
            "ca",
            "server-name",
        ],
    )?;
    let base = match m.opt_str("listen") {
        Some(text) => parse_socket_addr("--listen", &text)?,
        None => SocketAddr::from(([127, 0, 0, 1], 7000)),
    };
    if base.port() > u16::MAX - 2 {
        return Err(StartError::invalid(
            "--listen",
            &base.to_string(),
            "the demo needs this port and the two after it",
        ));
    }
    Ok(DemoMode { base })
}

fn timeouts(m: &Matches) -> Result<Timeouts, StartError> {
    let d = Timeouts::default();
    let get = |name: &str, flag: &'static str, default| match m.opt_str(name) {
        Some(text) => parse_duration(flag, &text),
        None => Ok(default),
    };
    Ok(Timeouts {
        handshake: get("handshake-timeout", "--handshake-timeout", d.handshake)?,
        connect: get("connect-timeout", "--connect-timeout", d.connect)?,
        idle: get("idle-timeout", "--idle-timeout", d.idle)?,
        close: get("close-timeout", "--close-timeout", d.close)?,
        shutdown: get("shutdown-timeout", "--shutdown-timeout", d.shutdown)?,
    })
}

fn limits(m: &Matches, descriptor_limit: u64) -> Result<Limits, StartError> {
    let max_conns = match m.opt_str("max-conns") {
        Some(text) => count("--max-conns", &text)?,
        None => Limits::default_max_conns(descriptor_limit),
    };
    Ok(Limits {
        max_conns,
        max_conns_per_ip: m
            .opt_str("max-conns-per-ip")
            .map(|t| count("--max-conns-per-ip", &t))
            .transpose()?,
        max_handshakes: match m.opt_str("max-handshakes") {
            Some(text) => count("--max-handshakes", &text)?,
            None => Limits::DEFAULT_MAX_HANDSHAKES,
        },
    })
}

fn count(flag: &'static str, text: &str) -> Result<usize, StartError> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(StartError::invalid(
            flag,
            text,
            "expected a whole number above 0",
        )),
    }
}

fn log_level(m: &Matches) -> Result<log::LevelFilter, StartError> {
    let Some(text) = m.opt_str("log-level") else {
        return Ok(log::LevelFilter::Info);
    };
    match text.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" => {
            Ok(text.parse().unwrap_or(log::LevelFilter::Info))
        }
        _ => Err(StartError::invalid(
            "--log-level",
            &text,
            "expected error, warn, info, debug or trace",
        )),
    }
}

fn targets(m: &Matches, mode: &str) -> Result<Vec<String>, StartError> {
    let targets = m.opt_strs("target");
    if targets.is_empty() {
        return Err(StartError::Usage(format!("{mode} mode needs --target")));
    }
    Ok(targets)
}

fn required(m: &Matches, name: &str, mode: &str) -> Result<String, StartError> {
    m.opt_str(name)
        .ok_or_else(|| StartError::Usage(format!("{mode} mode needs --{name}")))
}

fn addr(m: &Matches, flag: &'static str, mode: &str) -> Result<SocketAddr, StartError> {
    let name = flag.trim_start_matches('-');
    parse_socket_addr(flag, &required(m, name, mode)?)
}

/// Flags that belong to another mode are a mistake worth naming, not something to ignore.
fn reject(m: &Matches, mode: &str, names: &[&str]) -> Result<(), StartError> {
    match names.iter().find(|name| m.opt_present(name)) {
        Some(name) => Err(StartError::Usage(format!(
            "--{name} does not apply to {mode} mode"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Config, StartError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args, 20_000)? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn server_needs_an_explicit_client_policy() {
        let base = "server --listen 127.0.0.1:1 --target 127.0.0.1:2 --cert c --key k";
        let err = run(base).unwrap_err().to_string();
        assert!(
            err.contains("--client-ca") && err.contains("--no-client-auth"),
            "{err}"
        );
        assert!(run(&format!("{base} --no-client-auth")).is_ok());
        assert!(run(&format!("{base} --client-ca ca --no-client-auth")).is_err());
        let config = run(&format!("{base} --client-ca ca.pem")).unwrap();
        assert!(matches!(
            config.mode,
            Mode::Server(ServerMode {
                client_auth: ClientAuth::Required { .. },
                ..
            })
        ));
    }

    #[test]
    fn client_takes_host_names_and_optional_identity() {
        let base = "client --listen [::1]:1 --target db.example:6379 --ca ca.pem";
        let config = run(base).unwrap();
        let Mode::Client(client) = config.mode else {
            panic!()
        };
        assert_eq!(client.targets, ["db.example:6379"]);
        assert!(client.identity.is_none());
        assert!(run(&format!("{base} --cert c.pem")).is_err());
        assert!(run(&format!("{base} --cert c.pem --key k.pem")).is_ok());
        assert!(run(&format!("{base} --client-ca x")).is_err());
    }

    #[test]
    fn common_flags_and_defaults() {
        let config = run("demo --idle-timeout 2m --max-conns 7 --log-level debug").unwrap();
        assert_eq!(config.timeouts.idle, std::time::Duration::from_secs(120));
        assert_eq!(config.timeouts.handshake, Timeouts::default().handshake);
        assert_eq!(config.limits.max_conns, 7);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert!(config.sandbox);
        assert!(!run("demo --no-sandbox").unwrap().sandbox);
        assert_eq!(run("demo").unwrap().limits.max_conns, 9_968);
        for bad in [
            "demo --max-conns 0",
            "demo --log-level loud",
            "demo --idle-timeout 5",
            "bogus",
            "",
            "demo extra",
        ] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
