//! The command line, parsed.

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
