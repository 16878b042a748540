//! The command line: `getopts` definitions, `--help`, and parsing into a [`Config`].
//!
//! The flags are one settings [`Source`] among two: the builders in
//! [`crate::config::settings`] read them exactly as they read a config file's table.

use getopts::{Matches, Options};

use crate::config::settings::{self, Source, SERVICE_KEYS};
use crate::config::{file, Config};
use crate::error::StartError;

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
    o.optopt(
        "",
        "name",
        "the service's name in logs and metrics (default: server or client)",
        "NAME",
    );
    o.optopt(
        "",
        "unix-mode",
        "file mode of a unix socket listener, in octal (e.g. 0660)",
        "MODE",
    );
    o.optopt(
        "",
        "proxy-protocol",
        "server mode: send the client's address to the backend in a PROXY header, v1 or v2",
        "VERSION",
    );
    o.optflag(
        "",
        "accept-proxy",
        "read a PROXY protocol header (v1 or v2) from each connection first (behind a load \
         balancer)",
    );
    o.optopt(
        "",
        "proxy-timeout",
        "limit on receiving the PROXY header (default 3s)",
        "DUR",
    );
    o.optopt("", "log-format", "text or json (default text)", "FORMAT");
    o.optopt(
        "",
        "workers",
        "poll loops (threads) serving tunnels: a number, or auto for one per core (default 1)",
        "N",
    );
    o.optopt(
        "",
        "status",
        "serve /metrics (Prometheus) and /healthz on ADDR (IP:PORT or unix:/path)",
        "ADDR",
    );
    o.optopt(
        "",
        "reload-interval",
        "also reload when a file moat reads changes, checking this often (default: only on \
         SIGHUP)",
        "DUR",
    );
    o.optflag(
        "",
        "trace",
        "log every readiness event, socket call, TLS step, buffer and timer of every tunnel",
    );
    o.optmulti(
        "",
        "trace-peer",
        "like --trace, for tunnels from this IP address only (repeatable)",
        "IP",
    );
    o.optopt(
        "",
        "config",
        "read the services and settings from this TOML file (see README)",
        "FILE",
    );
    o.optflag(
        "",
        "check",
        "check the configuration (files, names, certificates) and exit without listening",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::config::{ClientAuth, ClientMode, ServerMode, ServiceKind, Timeouts, TlsVersion};
    use std::path::PathBuf;

    fn run(line: &str) -> Result<Config, StartError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args, 20_000)? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn server(line: &str) -> ServerMode {
        match run(line).unwrap().services.remove(0).kind {
            ServiceKind::Server(server) => server,
            other => panic!("not server mode: {other:?}"),
        }
    }

    fn client(line: &str) -> ClientMode {
        match run(line).unwrap().services.remove(0).kind {
            ServiceKind::Client(client) => client,
            other => panic!("not client mode: {other:?}"),
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
        let config = server(&format!("{base} --client-ca ca.pem"));
        assert!(matches!(config.client_auth, ClientAuth::Required { .. }));
    }

    #[test]
    fn client_takes_host_names_and_optional_identity() {
        let base = "client --listen [::1]:1 --target db.example:6379 --ca ca.pem";
        let config = client(base);
        assert_eq!(config.targets, [Address::Host("db.example".into(), 6379)]);
        assert!(config.identity.is_none());
        assert!(run(&format!("{base} --cert c.pem")).is_err());
        assert!(run(&format!("{base} --cert c.pem --key k.pem")).is_ok());
        assert!(run(&format!("{base} --client-ca x")).is_err());
    }

    #[test]
    fn addresses_people_write_are_taken() {
        let config = run(
            "server --listen :6380 --target localhost:6379 --target unix:/run/r.sock \
             --cert c --key k --no-client-auth",
        )
        .unwrap();
        let service = &config.services[0];
        assert_eq!(service.listen, Address::AnyInterface(6380));
        let ServiceKind::Server(server) = &service.kind else {
            panic!()
        };
        assert_eq!(server.targets[1], Address::Unix("/run/r.sock".into()));
        let unix = run(
            "server --listen unix:/tmp/m.sock --unix-mode 0660 --target 127.0.0.1:1 \
             --cert c --key k --no-client-auth",
        )
        .unwrap();
        assert_eq!(unix.services[0].unix_mode, Some(0o660));
        assert!(run(
            "server --listen 127.0.0.1:1 --unix-mode 0660 --target 127.0.0.1:2 --cert c \
             --key k --no-client-auth"
        )
        .is_err());
    }

    #[test]
    fn cert_and_key_pair_up_in_order() {
        let base = "server --listen 127.0.0.1:1 --target 127.0.0.1:2 --no-client-auth";
        let config = server(&format!(
            "{base} --cert a.pem --key a.key --cert b.pem --key b.key"
        ));
        let pairs: Vec<_> = config
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
        let config = server(&line);
        assert_eq!(config.policy.allow_cn, ["a", "b"]);
        assert_eq!(config.policy.allow_uri, ["spiffe://x/*"]);
        assert_eq!(config.crls, [PathBuf::from("one.crl")]);
        assert_eq!(config.alpn, ["h2", "http/1.1"]);
        assert_eq!(config.tls.min_version, TlsVersion::Tls13);
        assert_eq!(
            config.tls.ciphers.as_deref(),
            Some(&["X".into(), "Y".into()][..])
        );
        for bad in [
            "--no-client-auth --allow-cn a",
            "--no-client-auth --crl x",
            "--client-ca ca --min-tls 1.1",
            "--client-ca ca --alpn h2,",
            "--client-ca ca --proxy-protocol v3",
            "--client-ca ca --proxy-timeout 1s",
        ] {
            assert!(run(&format!("{base} {bad}")).is_err(), "{bad}");
        }
        assert!(
            client("client --listen 127.0.0.1:1 --target h:2")
                .ca
                .is_none(),
            "--ca is optional: the system store is the default"
        );
    }

    #[test]
    fn mode_flags_stay_in_their_mode() {
        let client = "client --listen 127.0.0.1:1 --target h:2";
        for bad in ["--unsafe-target", "--proxy-protocol v1", "--client-ca x"] {
            assert!(run(&format!("{client} {bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn common_flags_and_defaults() {
        let config = run("demo --max-conns 7 --log-level debug").unwrap();
        assert_eq!(config.global.limits.max_conns, 7);
        assert_eq!(config.global.log_level, log::LevelFilter::Debug);
        assert!(config.global.sandbox);
        assert!(!run("demo --no-sandbox").unwrap().global.sandbox);
        assert_eq!(run("demo").unwrap().global.limits.max_conns, 9_968);
        let server = run(
            "server --listen 127.0.0.1:1 --target 127.0.0.1:2 --cert c --key k \
             --no-client-auth --idle-timeout 2m --workers 2",
        )
        .unwrap();
        assert_eq!(
            server.services[0].timeouts.idle,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(
            server.services[0].timeouts.handshake,
            Timeouts::default().handshake
        );
        assert_eq!(server.global.workers, 2);
        for bad in [
            "demo --max-conns 0",
            "demo --log-level loud",
            "demo --idle-timeout 5m",
            "demo --workers 0",
            "bogus",
            "",
            "demo extra",
        ] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
