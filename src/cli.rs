//! The command line: `getopts` definitions, `--help`, and parsing into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use getopts::{Matches, Options};

use crate::config::{
    parse_duration, parse_list, parse_socket_addr, split_host_port, ClientAuth, ClientMode, Config,
    DemoMode, Identity, Limits, Mode, PolicyConfig, ServerMode, Timeouts, TlsParams, TlsVersion,
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
  moat server --listen ADDR --target ADDR... (--cert FILE --key FILE)...
              (--client-ca FILE [--allow-* RULE...] [--crl FILE...] | --no-client-auth)
  moat client --listen ADDR --target HOST:PORT... [--ca FILE] [--server-name NAME]
              [--cert FILE --key FILE] [--allow-* RULE...] [--crl FILE...]
  moat demo [--listen ADDR]

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
    o.optmulti(
        "",
        "cert",
        "PEM certificate chain: the server's (server mode; repeat with --key for SNI) or the \
         client's (client mode)",
        "FILE",
    );
    o.optmulti(
        "",
        "key",
        "PEM private key of --cert (the i-th --key goes with the i-th --cert)",
        "FILE",
    );
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
        "client mode: CA bundle the server's certificate must chain to (default: the system \
         trust store)",
        "FILE",
    );
    o.optopt(
        "",
        "server-name",
        "client mode: name to verify in the server's certificate (default: host of --target)",
        "NAME",
    );
    o.optflag(
        "",
        "unsafe-target",
        "server mode: allow a --target that is not a loopback address (the backend leg is \
         plaintext)",
    );
    o.optmulti(
        "",
        "allow-cn",
        "only peers whose certificate's common name matches PATTERN (repeatable)",
        "PATTERN",
    );
    o.optmulti(
        "",
        "allow-ou",
        "only peers whose certificate's organizational unit matches PATTERN (repeatable)",
        "PATTERN",
    );
    o.optmulti(
        "",
        "allow-dns",
        "only peers with a DNS name (SAN) matching PATTERN (repeatable)",
        "PATTERN",
    );
    o.optmulti(
        "",
        "allow-uri",
        "only peers with a URI (SAN) matching PATTERN, e.g. spiffe://example.org/ns/prod/* \
         (repeatable)",
        "PATTERN",
    );
    o.optmulti(
        "",
        "allow-spki",
        "only peers whose public key has this pin: sha256//BASE64 (repeatable)",
        "PIN",
    );
    o.optmulti(
        "",
        "crl",
        "PEM or DER certificate revocation list for the peer's chain (repeatable)",
        "FILE",
    );
    o.optopt(
        "",
        "alpn",
        "application protocols, most preferred first, e.g. h2,http/1.1 (default: no ALPN)",
        "LIST",
    );
    o.optopt(
        "",
        "min-tls",
        "oldest TLS version accepted: 1.2 or 1.3 (default 1.2)",
        "VERSION",
    );
    o.optopt(
        "",
        "ciphers",
        "cipher suites in order of preference (default: TLS13_AES_128_GCM_SHA256, \
         TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256, then the same for TLS 1.2 \
         ECDHE)",
        "LIST",
    );
    o.optopt(
        "",
        "groups",
        "key exchange groups in order of preference (default: X25519MLKEM768, X25519, P-256, \
         P-384)",
        "LIST",
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
    let policy = policy(m);
    if matches!(client_auth, ClientAuth::Disabled) {
        let checks_certificates = [
            "allow-cn",
            "allow-ou",
            "allow-dns",
            "allow-uri",
            "allow-spki",
            "crl",
        ];
        if let Some(name) = checks_certificates.iter().find(|n| m.opt_present(n)) {
            return Err(StartError::Usage(format!(
                "--{name} checks client certificates, but --no-client-auth asks for none"
            )));
        }
    }
    let identities = identities(m)?;
    if identities.is_empty() {
        return Err(StartError::Usage(
            "server mode needs --cert and --key".into(),
        ));
    }
    let server = ServerMode {
        listen: addr(m, "--listen", "server")?,
        targets: targets(m, "server")?
            .iter()
            .map(|t| parse_socket_addr("--target", t))
            .collect::<Result<_, _>>()?,
        identities,
        client_auth,
        policy,
        crls: paths(m, "crl"),
        alpn: alpn(m)?,
        tls: tls_params(m)?,
        unsafe_target: m.opt_present("unsafe-target"),
    };
    server.check_targets()?;
    Ok(server)
}

fn client_mode(m: &Matches) -> Result<ClientMode, StartError> {
    reject(
        m,
        "client",
        &["client-ca", "no-client-auth", "unsafe-target"],
    )?;
    let targets = targets(m, "client")?;
    for target in &targets {
        split_host_port("--target", target)?;
    }
    let mut identities = identities(m)?;
    if identities.len() > 1 {
        return Err(StartError::Usage(
            "client mode presents one certificate: give --cert and --key once".into(),
        ));
    }
    Ok(ClientMode {
        listen: addr(m, "--listen", "client")?,
        targets,
        ca: m.opt_str("ca").map(PathBuf::from),
        server_name: m.opt_str("server-name"),
        identity: identities.pop(),
        policy: policy(m),
        crls: paths(m, "crl"),
        alpn: alpn(m)?,
        tls: tls_params(m)?,
    })
}

/// The `--cert`/`--key` pairs, the i-th key with the i-th certificate.
fn identities(m: &Matches) -> Result<Vec<Identity>, StartError> {
    let (certs, keys) = (m.opt_strs("cert"), m.opt_strs("key"));
    if certs.len() != keys.len() {
        return Err(StartError::Usage(format!(
            "--cert and --key go in pairs, the i-th --key with the i-th --cert: got {} --cert \
             and {} --key",
            certs.len(),
            keys.len()
        )));
    }
    Ok(certs
        .into_iter()
        .zip(keys)
        .map(|(cert, key)| Identity {
            cert: cert.into(),
            key: key.into(),
        })
        .collect())
}

fn policy(m: &Matches) -> PolicyConfig {
    PolicyConfig {
        allow_cn: m.opt_strs("allow-cn"),
        allow_ou: m.opt_strs("allow-ou"),
        allow_dns: m.opt_strs("allow-dns"),
        allow_uri: m.opt_strs("allow-uri"),
        allow_spki: m.opt_strs("allow-spki"),
    }
}

fn paths(m: &Matches, name: &str) -> Vec<PathBuf> {
    m.opt_strs(name).into_iter().map(PathBuf::from).collect()
}

fn alpn(m: &Matches) -> Result<Vec<String>, StartError> {
    let Some(text) = m.opt_str("alpn") else {
        return Ok(Vec::new());
    };
    let protocols = parse_list("--alpn", &text)?;
    match protocols.iter().find(|p| p.len() > 255) {
        Some(long) => Err(StartError::invalid(
            "--alpn",
            long,
            "a protocol name is at most 255 bytes",
        )),
        None => Ok(protocols),
    }
}

fn tls_params(m: &Matches) -> Result<TlsParams, StartError> {
    Ok(TlsParams {
        min_version: match m.opt_str("min-tls") {
            Some(text) => TlsVersion::parse("--min-tls", &text)?,
            None => TlsVersion::default(),
        },
        ciphers: m
            .opt_str("ciphers")
            .map(|t| parse_list("--ciphers", &t))
            .transpose()?,
        groups: m
            .opt_str("groups")
            .map(|t| parse_list("--groups", &t))
            .transpose()?,
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
            "unsafe-target",
            "allow-cn",
            "allow-ou",
            "allow-dns",
            "allow-uri",
            "allow-spki",
            "crl",
            "alpn",
            "min-tls",
            "ciphers",
            "groups",
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
    fn cert_and_key_pair_up_in_order() {
        let base = "server --listen 127.0.0.1:1 --target 127.0.0.1:2 --no-client-auth";
        let config = run(&format!(
            "{base} --cert a.pem --key a.key --cert b.pem --key b.key"
        ));
        let Mode::Server(server) = config.unwrap().mode else {
            panic!()
        };
        let pairs: Vec<_> = server
            .identities
            .iter()
            .map(|i| (&i.cert, &i.key))
            .collect();
        assert_eq!(pairs[1], (&"b.pem".into(), &"b.key".into()));
        let err = run(&format!("{base} --cert a.pem --key a.key --cert b.pem")).unwrap_err();
        assert!(
            err.to_string().contains("got 2 --cert and 1 --key"),
            "{err}"
        );
        assert!(run(base).is_err(), "no certificate at all");
        let client = "client --listen 127.0.0.1:1 --target h:2";
        assert!(run(&format!("{client} --cert a --key a --cert b --key b")).is_err());
    }

    #[test]
    fn tls_and_policy_flags_are_parsed_into_the_mode() {
        let base = "server --listen 127.0.0.1:1 --target 127.0.0.1:2 --cert c --key k";
        let line = format!(
            "{base} --client-ca ca --allow-cn a --allow-cn b --allow-uri spiffe://x/* \
             --crl one.crl --alpn h2,http/1.1 --min-tls 1.3 --ciphers X,Y --groups Z"
        );
        let Mode::Server(server) = run(&line).unwrap().mode else {
            panic!()
        };
        assert_eq!(server.policy.allow_cn, ["a", "b"]);
        assert_eq!(server.policy.allow_uri, ["spiffe://x/*"]);
        assert_eq!(server.crls, [PathBuf::from("one.crl")]);
        assert_eq!(server.alpn, ["h2", "http/1.1"]);
        assert_eq!(server.tls.min_version, TlsVersion::Tls13);
        assert_eq!(
            server.tls.ciphers.as_deref(),
            Some(&["X".into(), "Y".into()][..])
        );
        for bad in [
            "--no-client-auth --allow-cn a",
            "--no-client-auth --crl x",
            "--client-ca ca --min-tls 1.1",
            "--client-ca ca --alpn h2,",
        ] {
            assert!(run(&format!("{base} {bad}")).is_err(), "{bad}");
        }
        let client = run("client --listen 127.0.0.1:1 --target h:2").unwrap();
        let Mode::Client(client) = client.mode else {
            panic!()
        };
        assert!(
            client.ca.is_none(),
            "--ca is optional: the system store is the default"
        );
    }

    #[test]
    fn server_mode_keeps_plaintext_on_this_host() {
        let base = "server --listen 0.0.0.0:1 --cert c --key k --no-client-auth";
        let err = run(&format!("{base} --target 10.0.0.5:6379")).unwrap_err();
        assert!(err.to_string().contains("--unsafe-target"), "{err}");
        assert!(run(&format!("{base} --target 10.0.0.5:6379 --unsafe-target")).is_ok());
        assert!(run(&format!("{base} --target [::1]:6379")).is_ok());
        let client = "client --listen 127.0.0.1:1 --target h:2 --unsafe-target";
        assert!(
            run(client).is_err(),
            "--unsafe-target is a server-mode flag"
        );
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
