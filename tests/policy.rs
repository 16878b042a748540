//! Who gets in: the allow-list on the peer's certificate, for each rule kind, in both modes.
//! A certificate that chains but matches no rule is refused with `access_denied`, never
//! reaches the backend, and the log line says which rules failed and what it had.

mod common;

use std::io::{Read, Write};

use common::pki::Spec;
use common::tls_client::{client_config, tls_echo};
use common::{args, connect, Backend, Moat, Pki};

/// Two client identities that differ in every field a rule can look at.
fn two_clients(pki: &Pki) -> (String, String) {
    let alice = pki.issue(
        "alice",
        &Spec {
            ou: Some("payments".into()),
            dns: vec!["alice.svc.example".into()],
            uris: vec!["spiffe://example.org/ns/prod/sa/alice".into()],
            ..Spec::client("alice.prod")
        },
    );
    let bob = pki.issue(
        "bob",
        &Spec {
            ou: Some("research".into()),
            dns: vec!["bob.other.example".into()],
            uris: vec!["spiffe://example.org/ns/dev/sa/bob".into()],
            ..Spec::client("bob.dev")
        },
    );
    (alice, bob)
}

/// For each rule kind, a rule that lets alice in and keeps bob out.
fn rules(alice_pin: &str) -> Vec<[String; 2]> {
    [
        ["--allow-cn", "*.prod"],
        ["--allow-ou", "payments"],
        ["--allow-dns", "*.SVC.example"],
        ["--allow-uri", "spiffe://example.org/ns/prod/sa/*"],
        ["--allow-spki", alice_pin],
    ]
    .iter()
    .map(|[flag, value]| [flag.to_string(), value.to_string()])
    .collect()
}

#[test]
fn server_mode_lets_in_only_client_certificates_a_rule_matches() {
    let pki = Pki::new();
    let (alice_pin, _) = two_clients(&pki);
    for rule in rules(&alice_pin) {
        let backend = Backend::echo();
        let mut argv = pki.server_args(&backend.target());
        argv.extend(rule.iter().cloned());
        let moat = Moat::start(&args(&argv));

        let refused = tls_echo(moat.addr(), client_config(&pki, Some("bob")), b"let me in");
        let err = refused.expect_err("bob got in").to_string();
        assert!(err.contains("AccessDenied"), "{rule:?}: bob heard {err}");
        let line = moat.wait_for("tunnel closed");
        assert!(
            line.contains("end=tls error with client: refused by policy")
                && line.contains(&format!("no {} rule matches", rule[0]))
                && line.contains("CN=\"bob.dev\"")
                && line.contains("DNS=\"bob.other.example\"")
                && line.contains("URI=\"spiffe://example.org/ns/dev/sa/bob\""),
            "{rule:?}: {line}"
        );
        assert_eq!(backend.accepted(), 0, "{rule:?}: bob reached the backend");

        let got = tls_echo(moat.addr(), client_config(&pki, Some("alice")), b"hello");
        assert_eq!(got.expect("alice gets in"), b"hello", "{rule:?}");
        let lines = moat.wait_for_count("tunnel closed", 2);
        assert!(lines[1].contains("CN=alice.prod"), "{}", lines[1]);
    }
}

#[test]
fn one_matching_rule_among_several_is_enough() {
    let pki = Pki::new();
    two_clients(&pki);
    let backend = Backend::echo();
    let mut argv = pki.server_args(&backend.target());
    for extra in ["--allow-cn", "nobody", "--allow-ou", "research"] {
        argv.push(extra.into());
    }
    let moat = Moat::start(&args(&argv));
    let got = tls_echo(moat.addr(), client_config(&pki, Some("bob")), b"ou");
    assert_eq!(got.expect("bob matches --allow-ou"), b"ou");
    let err = tls_echo(moat.addr(), client_config(&pki, Some("alice")), b"x");
    assert!(err.is_err(), "alice matches no rule");
    let line = moat.wait_for("refused by policy");
    assert!(
        line.contains("no --allow-cn/--allow-ou rule matches"),
        "{line}"
    );
}

/// A server-mode moat in front of an echo backend, presenting the certificate `name`.
fn server_presenting(pki: &Pki, backend: &Backend, name: &str) -> Moat {
    let mut argv = pki.server_args(&backend.target());
    for (flag, file) in [
        ("--cert", format!("{name}.pem")),
        ("--key", format!("{name}.key")),
    ] {
        let at = argv.iter().position(|a| a == flag).unwrap();
        argv[at + 1] = pki.s(&file);
    }
    Moat::start(&args(&argv))
}

/// Sends a line through a client-mode tunnel; `Some(answer)` if it came back, `None` if
/// the tunnel was closed first.
fn through(client: &Moat, line: &[u8]) -> Option<Vec<u8>> {
    let mut stream = connect(client.addr());
    stream.write_all(line).ok()?;
    let mut got = vec![0; line.len()];
    stream.read_exact(&mut got).ok().map(|()| got)
}

#[test]
fn client_mode_lets_through_only_server_certificates_a_rule_matches() {
    let pki = Pki::new();
    let good = Spec {
        ou: Some("payments".into()),
        uris: vec!["spiffe://example.org/ns/prod/sa/db".into()],
        cn: "db.prod".into(),
        ..Spec::server(&["db.svc.example"])
    };
    let good_pin = pki.issue("good-server", &good);
    let bad = Spec {
        ou: Some("research".into()),
        uris: vec!["spiffe://example.org/ns/dev/sa/db".into()],
        cn: "db.dev".into(),
        ..Spec::server(&["db.other.example"])
    };
    pki.issue("bad-server", &bad);
    let backend = Backend::echo();
    let good_server = server_presenting(&pki, &backend, "good-server");
    let bad_server = server_presenting(&pki, &backend, "bad-server");
    let rules = [
        ["--allow-cn", "*.prod"],
        ["--allow-ou", "payments"],
        ["--allow-dns", "db.svc.*"],
        ["--allow-uri", "spiffe://example.org/ns/prod/*/db"],
        ["--allow-spki", &good_pin],
    ];
    for (n, rule) in rules.iter().enumerate() {
        // Round robin: the first tunnel goes to the good server, the second to the bad one.
        let mut argv = pki.client_args(&good_server.addr().to_string());
        argv.extend(["--target".to_string(), bad_server.addr().to_string()]);
        argv.extend(["--server-name".to_string(), "localhost".to_string()]);
        argv.extend(rule.iter().map(|s| s.to_string()));
        let client = Moat::start(&args(&argv));
        assert_eq!(
            through(&client, b"good\n").as_deref(),
            Some(&b"good\n"[..]),
            "{rule:?}"
        );
        assert_eq!(
            through(&client, b"bad\n"),
            None,
            "{rule:?}: bad server let through"
        );
        let line = client.wait_for("end=tls error with target");
        assert!(
            line.contains("refused by policy")
                && line.contains(&format!("no {} rule matches", rule[0]))
                && line.contains("CN=\"db.dev\"")
                && line.contains("DNS=\"db.other.example,localhost\""),
            "{rule:?}: {line}"
        );
        // The bad server heard why.
        let lines = bad_server.wait_for_count("tunnel closed", n + 1);
        assert!(lines[n].contains("AccessDenied"), "{}", lines[n]);
    }
    assert_eq!(
        backend.accepted(),
        rules.len(),
        "only the good server's tunnels relay"
    );
}
