//! Reload and trust: a session resumes across a reload that changes nothing (the TLS
//! configuration is kept, ticket key and all) and never across one that changes the CA or
//! the allow-list; and under the sandbox a reload cannot reach files moat could not read
//! at start-up, and says why.

mod common;

use std::io::{Read, Write};

use common::files::{certificate, replace_file, served_certificate, TempDir};
use common::pki::Spec;
use common::tls_client::client_config;
use common::{args, connect, Backend, Moat, Pki, Tool};

/// `openssl s_client` (TLS 1.3, the test's client certificate) sending one line and
/// waiting for its echo, with `-sess_out FILE` or `-sess_in FILE`; returns its output.
fn s_client_line(pki: &Pki, moat: &Moat, session: (&str, &str)) -> String {
    let (addr, ca) = (moat.addr().to_string(), pki.ca());
    let (cert, key) = (pki.s("client.pem"), pki.s("client.key"));
    #[rustfmt::skip]
    let a = [
        "s_client", "-connect", &addr, "-CAfile", &ca, "-cert", &cert, "-key", &key,
        session.0, session.1, "-tls1_3",
    ];
    let mut tool = Tool::spawn("openssl", &a, None);
    let mut stdin = tool.take_stdin();
    stdin.write_all(b"ping\n").unwrap();
    // The ticket comes right behind the handshake, ahead of the echo.
    let out = tool.read_stdout_until(|got| got.ends_with(b"ping\n"));
    drop(stdin);
    tool.kill();
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends SIGHUP and waits for the `n`-th successful reload.
fn reload(moat: &Moat, n: usize) {
    moat.signal("HUP");
    moat.wait_for_count("reload (SIGHUP): 1 service(s) kept", n);
}

/// A server service in front of `target` that lets in the common names `allow_cn` (a
/// TOML list); paths relative to the file, which lies beside the certificates.
fn server_config(target: &str, allow_cn: &str) -> String {
    format!(
        "[[server]]\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\ncert = \"server.pem\"\n\
         key = \"server.key\"\nclient-ca = \"ca.pem\"\nallow-cn = {allow_cn}\n"
    )
}

#[test]
fn server_sessions_resume_across_a_reload_that_changes_nothing_and_not_across_a_new_allow_list() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let config = pki.path("moat.toml");
    let write =
        |allow: &str| replace_file(&config, server_config(&backend.target(), allow).as_bytes());
    write("[\"test-client\"]");
    let moat = Moat::start(&["--config", &config.to_string_lossy()]);
    let session = pki.s("session.pem");

    let first = s_client_line(&pki, &moat, ("-sess_out", &session));
    assert!(first.contains("New, TLSv1.3"), "{first}");
    reload(&moat, 1);
    let again = s_client_line(&pki, &moat, ("-sess_in", &session));
    assert!(
        again.contains("Reused, TLSv1.3"),
        "a reload that changed nothing ended resumption:\n{again}"
    );

    // Same CA, a wider allow-list that still lets the client in: a new configuration.
    write("[\"test-client\", \"someone-else\"]");
    reload(&moat, 2);
    let after = s_client_line(&pki, &moat, ("-sess_in", &session));
    assert!(
        after.contains("New, TLSv1.3"),
        "a session resumed across a new allow-list:\n{after}"
    );
    let lines = moat.wait_for_count("tunnel closed", 3);
    let resumed: Vec<bool> = lines.iter().map(|l| l.contains("resumed=yes")).collect();
    assert_eq!(resumed, [false, true, false], "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("to_client=5B")),
        "{lines:#?}"
    );
}

#[test]
fn client_sessions_resume_across_a_reload_that_changes_nothing_and_not_across_a_new_ca() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    // A bundle with one more CA in it: the same trust for this server, a new configuration.
    let both = [
        std::fs::read_to_string(pki.path("ca.pem")).unwrap(),
        std::fs::read_to_string(pki.path("other-ca.pem")).unwrap(),
    ]
    .concat();
    replace_file(&pki.path("both-cas.pem"), both.as_bytes());
    let config = pki.path("front.toml");
    let write = |ca: &str| {
        let text = format!(
            "[[client]]\nname = \"front\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{}\"\n\
             server-name = \"localhost\"\nca = \"{ca}\"\ncert = \"client.pem\"\n\
             key = \"client.key\"\nallow-dns = [\"localhost\"]\n",
            server.addr()
        );
        replace_file(&config, text.as_bytes());
    };
    write("ca.pem");
    let front = Moat::start(&["--config", &config.to_string_lossy()]);
    let round_trip = |n: usize| {
        let mut stream = connect(front.addr());
        stream.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 6];
        stream.read_exact(&mut got).unwrap();
        drop(stream);
        front.wait_for_count("tunnel closed", n).pop().unwrap()
    };
    assert!(round_trip(1).contains("resumed=no"));
    reload(&front, 1);
    let kept = round_trip(2);
    assert!(kept.contains("resumed=yes"), "{kept}");
    write("both-cas.pem");
    reload(&front, 2);
    let renewed = round_trip(3);
    assert!(
        renewed.contains("resumed=no"),
        "a session resumed across a new CA bundle: {renewed}"
    );
    let seen = server.wait_for_count("tunnel closed", 3);
    assert!(seen[2].contains("resumed=no"), "{seen:#?}");
}

/// A server service named `edge` from a config file in the test's directory, with the
/// certificate pair `cert`/`key` (paths as the file writes them).
fn edge_config(target: &str, cert: &str, key: &str) -> String {
    format!(
        "[[server]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\n\
         cert = \"{cert}\"\nkey = \"{key}\"\nclient-ca = \"ca.pem\"\n"
    )
}

/// Runs moat (with `extra` flags) on a config file, then reloads it naming a certificate
/// in a directory it did not read at start-up, `elsewhere`.
fn reload_from_elsewhere(pki: &Pki, elsewhere: &TempDir, extra: &[&str]) -> Moat {
    let backend = Backend::echo();
    let config = pki.path("moat.toml");
    let text = edge_config(&backend.target(), "server.pem", "server.key");
    replace_file(&config, text.as_bytes());
    let mut line = vec!["--config".to_owned(), config.to_string_lossy().into_owned()];
    line.extend(extra.iter().map(|s| s.to_string()));
    let moat = Moat::start(&args(&line));
    pki.issue("renewed", &Spec::server(&["renewed.example"]));
    for file in ["renewed.pem", "renewed.key"] {
        std::fs::copy(pki.path(file), elsewhere.join(file)).unwrap();
    }
    let text = edge_config(
        &backend.target(),
        &elsewhere.s("renewed.pem"),
        &elsewhere.s("renewed.key"),
    );
    replace_file(&config, text.as_bytes());
    moat.signal("HUP");
    moat
}

#[test]
fn in_the_sandbox_a_reload_cannot_reach_a_new_directory_and_says_so() {
    let pki = Pki::new();
    let elsewhere = TempDir::new("elsewhere");
    let moat = reload_from_elsewhere(&pki, &elsewhere, &[]);
    let line = moat.wait_for("reload (SIGHUP) failed, keeping the running configuration: ");
    let (config, cert) = (pki.s("moat.toml"), elsewhere.s("renewed.pem"));
    assert!(
        line.ends_with(&format!(
            "{config}: [[server]] \"edge\": cert: cannot read {cert}: Permission denied (the \
             sandbox allows only the files, directories and ports moat had at start-up: \
             restart moat to use new ones, or run it with --no-sandbox)"
        )),
        "{line}"
    );
    let client = client_config(&pki, Some("client"));
    let served = served_certificate(moat.addr(), client, b"still").unwrap();
    assert_eq!(served, certificate(&pki.path("server.pem")));

    // A port it did not have at start-up is out of reach the same way.
    let backend = Backend::echo();
    let two = [
        edge_config(&backend.target(), "server.pem", "server.key"),
        edge_config(&backend.target(), "server.pem", "server.key")
            .replace("name = \"edge\"", "name = \"more\""),
    ]
    .concat();
    replace_file(&pki.path("moat.toml"), two.as_bytes());
    moat.signal("HUP");
    let line = moat
        .wait_for_count("reload (SIGHUP) failed", 2)
        .pop()
        .unwrap();
    assert!(
        line.contains("[[server]] \"more\": cannot listen on 127.0.0.1:0: Permission denied (the sandbox allows only"),
        "{line}"
    );
}

#[test]
fn outside_the_sandbox_the_same_reload_takes_the_new_certificate() {
    let pki = Pki::new();
    let elsewhere = TempDir::new("elsewhere");
    let moat = reload_from_elsewhere(&pki, &elsewhere, &["--no-sandbox"]);
    moat.wait_for("reload (SIGHUP): 1 service(s) kept");
    let client = client_config(&pki, Some("client"));
    let served = served_certificate(moat.addr(), client, b"new").unwrap();
    assert_eq!(served, certificate(&pki.path("renewed.pem")));
}
