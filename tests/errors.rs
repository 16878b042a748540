//! Start-up mistakes end the real binary with one line a person can act on: `moat: ...` on
//! standard error naming the flag or file and the problem, exit code 2 for usage and
//! configuration and 1 for a runtime failure (see `StartError::exit_code`), never a panic.

mod common;

use std::net::TcpListener;

use common::files::{fails_with as fails, run_to_exit as run};
use common::Pki;

/// Arguments of a server-mode moat that would start, with `changes` applied: a flag it
/// has gets the new value (or is removed, for `None`); a flag it lacks is appended.
fn server(pki: &Pki, changes: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut args = pki.server_args("127.0.0.1:9");
    for &(flag, value) in changes {
        match (args.iter().position(|a| a == flag), value) {
            (Some(i), Some(v)) => args[i + 1] = v.to_owned(),
            (Some(i), None) => drop(args.drain(i..i + 2)),
            (None, Some(v)) => args.extend([flag.to_owned(), v.to_owned()]),
            (None, None) => {}
        }
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn missing_file_names_flag_path_and_reason() {
    let pki = Pki::new();
    let args = server(&pki, &[("--cert", Some("/nonexistent/moat.pem"))]);
    let line = fails(&strs(&args), 2, &[]);
    assert_eq!(
        line,
        "moat: cannot read --cert /nonexistent/moat.pem: No such file or directory"
    );
    let ca_dir = pki.dir.to_string_lossy().into_owned();
    let args = server(&pki, &[("--client-ca", Some(&ca_dir))]);
    fails(&strs(&args), 2, &["--client-ca", &ca_dir, "directory"]);
}

#[test]
fn key_file_given_as_certificate() {
    let pki = Pki::new();
    let key = pki.s("server.key");
    let args = server(&pki, &[("--cert", Some(&key))]);
    fails(&strs(&args), 2, &["--cert", &key, "no certificate"]);
}

#[test]
fn certificate_file_given_as_key() {
    let pki = Pki::new();
    let cert = pki.s("server.pem");
    let args = server(&pki, &[("--key", Some(&cert))]);
    fails(&strs(&args), 2, &["--key", &cert, "no private key"]);
}

#[test]
fn key_of_another_certificate() {
    let pki = Pki::new();
    let (key, cert) = (pki.s("client.key"), pki.s("server.pem"));
    let args = server(&pki, &[("--key", Some(&key))]);
    fails(
        &strs(&args),
        2,
        &["--key", &key, "does not match", "--cert", &cert],
    );
    // Client mode checks its identity the same way.
    let ca = pki.ca();
    #[rustfmt::skip]
    let client = [
        "client", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--ca", &ca,
        "--cert", &cert, "--key", &key,
    ];
    fails(&client, 2, &["--key", &key, "does not match", &cert]);
}

#[test]
fn garbage_pem() {
    let pki = Pki::new();
    let broken = pki.s("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nthis is not base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let args = server(&pki, &[("--cert", Some(&broken))]);
    fails(&strs(&args), 2, &["--cert", &broken, "malformed PEM"]);
    let args = server(&pki, &[("--client-ca", Some(&broken))]);
    fails(&strs(&args), 2, &["--client-ca", &broken, "malformed PEM"]);

    let noise = pki.s("noise.pem");
    std::fs::write(&noise, common::random_bytes(3000, 5)).unwrap();
    let args = server(&pki, &[("--key", Some(&noise))]);
    fails(&strs(&args), 2, &["--key", &noise]);
}

#[test]
fn bad_listen_address() {
    let pki = Pki::new();
    let args = server(&pki, &[("--listen", Some("nope"))]);
    fails(&strs(&args), 2, &["--listen", "'nope'", "IP:PORT"]);
    let args = server(&pki, &[("--target", Some("localhost"))]);
    fails(&strs(&args), 2, &["--target", "'localhost'", "IP:PORT"]);
}

#[test]
fn port_in_use_is_a_runtime_failure() {
    let pki = Pki::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let args = server(&pki, &[("--listen", Some(&addr))]);
    let line = fails(&strs(&args), 1, &[]);
    assert_eq!(
        line,
        format!("moat: cannot listen on {addr}: Address already in use")
    );
}

#[test]
fn bad_durations() {
    let pki = Pki::new();
    let args = server(&pki, &[("--idle-timeout", Some("5"))]);
    fails(&strs(&args), 2, &["--idle-timeout", "'5'", "unit"]);
    let args = server(&pki, &[("--handshake-timeout", Some("10x"))]);
    fails(&strs(&args), 2, &["--handshake-timeout", "'10x'", "unit"]);
    let args = server(&pki, &[("--close-timeout", Some("0s"))]);
    fails(&strs(&args), 2, &["--close-timeout", "'0s'"]);
}

#[test]
fn server_without_a_client_certificate_policy() {
    let pki = Pki::new();
    let args = server(&pki, &[("--client-ca", None)]);
    fails(&strs(&args), 2, &["--client-ca", "--no-client-auth"]);
    let mut args = server(&pki, &[]);
    args.push("--no-client-auth".into());
    fails(
        &strs(&args),
        2,
        &["--client-ca", "--no-client-auth", "contradict"],
    );
}

#[test]
fn unknown_flag_and_missing_value() {
    let pki = Pki::new();
    let mut args = server(&pki, &[]);
    args.push("--frobnicate".into());
    fails(
        &strs(&args),
        2,
        &["unknown flag --frobnicate", "moat --help"],
    );
    args.pop();
    args.push("--idle-timeout".into());
    fails(&strs(&args), 2, &["--idle-timeout needs a value"]);
}

#[test]
fn missing_or_unknown_mode() {
    fails(&[], 2, &["missing mode", "moat server"]);
    fails(&["--listen", "127.0.0.1:0"], 2, &["missing mode"]);
    fails(&["serve"], 2, &["'serve'", "moat server"]);
}

#[test]
fn client_mode_cert_without_key() {
    let pki = Pki::new();
    let (ca, cert) = (pki.ca(), pki.s("client.pem"));
    #[rustfmt::skip]
    let args = [
        "client", "--listen", "127.0.0.1:0", "--target", "localhost:9", "--ca", &ca,
        "--cert", &cert,
    ];
    fails(&args, 2, &["--cert", "--key"]);
}

#[test]
fn unresolvable_client_target() {
    let pki = Pki::new();
    let ca = pki.ca();
    // .invalid is reserved: it never resolves, wherever the test runs.
    let target = "no-such-host.invalid:443";
    #[rustfmt::skip]
    let args = ["client", "--listen", "127.0.0.1:0", "--target", target, "--ca", &ca];
    fails(&args, 2, &["cannot resolve", "--target", target]);
}

/// The help text's option list as (flag, description with whitespace collapsed).
fn options_in_help(help: &str) -> Vec<(String, String)> {
    let section = &help[help.find("\nOptions:\n").expect("an Options section")..];
    let mut options: Vec<(String, String)> = Vec::new();
    for line in section.lines().skip(2) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            let long = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .expect("a long flag");
            let rest = trimmed[trimmed.find(long).unwrap() + long.len()..].to_owned();
            options.push((long.to_owned(), rest));
        } else if let Some((_, text)) = options.last_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    for (_, text) in &mut options {
        *text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    options
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let (code, help, stderr) = run(&["--help"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    for usage in ["moat server", "moat client", "moat demo"] {
        assert!(help.contains(usage), "{usage} missing:\n{help}");
    }
    let options = options_in_help(&help);
    let d = moat::config::Timeouts::default();
    #[rustfmt::skip]
    let expected: [(&str, Option<&str>); 44] = [
        ("--listen", Some("127.0.0.1:7000")), ("--target", None), ("--cert", None),
        ("--key", None), ("--client-ca", None), ("--no-client-auth", None),
        ("--ca", Some("the system trust store")), ("--server-name", Some("host of --target")),
        ("--unsafe-target", None), ("--allow-cn", None), ("--allow-ou", None),
        ("--allow-dns", None), ("--allow-uri", None), ("--allow-spki", None), ("--crl", None),
        ("--alpn", Some("no ALPN")), ("--min-tls", Some("1.2")),
        ("--ciphers", Some("TLS13_AES_128_GCM_SHA256")), ("--groups", Some("X25519MLKEM768")),
        ("--max-conns", Some("descriptor limit")),
        ("--max-conns-per-ip", Some("no limit")), ("--max-handshakes", Some("1024")),
        ("--handshake-timeout", Some("10s")), ("--connect-timeout", Some("5s")),
        ("--idle-timeout", Some("5m")), ("--close-timeout", Some("30s")),
        ("--shutdown-timeout", Some("30s")), ("--log-level", Some("info")),
        ("--no-sandbox", None), ("--name", Some("server or client")), ("--unix-mode", None),
        ("--proxy-protocol", None), ("--accept-proxy", None), ("--proxy-timeout", Some("3s")),
        ("--log-format", Some("text")), ("--workers", Some("1")), ("--status", None),
        ("--reload-interval", Some("only on SIGHUP")), ("--trace", None), ("--trace-peer", None),
        ("--config", None), ("--check", None), ("--help", None), ("--version", None),
    ];
    let flags: Vec<&str> = options.iter().map(|(f, _)| f.as_str()).collect();
    let wanted: Vec<&str> = expected.iter().map(|(f, _)| *f).collect();
    assert_eq!(flags, wanted, "flags in --help");
    for ((flag, text), (_, default)) in options.iter().zip(expected) {
        if let Some(default) = default {
            assert!(
                text.contains(&format!("default {default}"))
                    || text.contains(&format!("default: {default}")),
                "{flag}: no default {default:?} in {text:?}"
            );
        }
    }
    // The durations the help promises are the ones moat uses.
    for (flag, actual) in [
        ("--handshake-timeout", d.handshake),
        ("--connect-timeout", d.connect),
        ("--idle-timeout", d.idle),
        ("--close-timeout", d.close),
        ("--shutdown-timeout", moat::config::DEFAULT_SHUTDOWN_TIMEOUT),
    ] {
        let text = &options.iter().find(|(f, _)| f == flag).unwrap().1;
        let shown = text
            .rsplit("default ")
            .next()
            .unwrap()
            .trim_end_matches(')');
        assert_eq!(
            moat::config::parse_duration("--x", shown).ok(),
            Some(actual),
            "{flag} says {shown}"
        );
    }
}

#[test]
fn version() {
    for flag in ["--version", "-V"] {
        let (code, stdout, stderr) = run(&[flag]);
        assert_eq!((code, stderr.as_str()), (0, ""));
        assert_eq!(stdout, format!("moat {}\n", env!("CARGO_PKG_VERSION")));
    }
}
