//! SNI and ALPN, checked with `openssl s_client`: the certificate is chosen by the name the
//! client asks for (exact, then wildcard, else the first pair); ALPN offers moat's protocols
//! in its order, refuses a client with none in common, and lets one that offers none in.

mod common;

use common::pki::Spec;
use common::{args, Backend, Moat, Pki, Tool};

/// Runs `openssl s_client -connect addr EXTRA...` with standard input closed, so it ends
/// right after the handshake. Returns (whether it succeeded, stdout, stderr).
fn s_client(addr: &str, extra: &[&str]) -> (bool, String, String) {
    let mut a = vec!["s_client", "-connect", addr];
    a.extend_from_slice(extra);
    let mut tool = Tool::spawn("openssl", &a, None);
    drop(tool.take_stdin());
    let stdout = String::from_utf8_lossy(&tool.read_stdout_to_end()).into_owned();
    let status = tool.wait();
    (status.success(), stdout, tool.stderr())
}

/// A server-mode moat without client certificates, with three certificate pairs: `a.test`
/// (the default), `b.test` and `*.wild.test`.
fn sni_server(pki: &Pki, backend: &Backend) -> Moat {
    pki.issue("a", &Spec::server(&["a.test"]));
    pki.issue("b", &Spec::server(&["b.test"]));
    pki.issue("wild", &Spec::server(&["*.wild.test"]));
    let mut argv = vec!["server", "--listen", "127.0.0.1:0", "--no-client-auth"];
    let target = backend.target();
    argv.extend(["--target", &target]);
    let files: Vec<String> = ["a", "b", "wild"]
        .iter()
        .flat_map(|n| [pki.s(&format!("{n}.pem")), pki.s(&format!("{n}.key"))])
        .collect();
    for pair in files.chunks(2) {
        argv.extend(["--cert", &pair[0], "--key", &pair[1]]);
    }
    Moat::start(&argv)
}

#[test]
fn the_certificate_follows_the_server_name_and_the_first_is_the_default() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = sni_server(&pki, &backend);
    let addr = moat.addr().to_string();
    let cases: [(&[&str], &str, Option<&str>); 5] = [
        (
            &["-servername", "a.test"],
            "CN = a.test",
            Some("sni=a.test"),
        ),
        (
            &["-servername", "b.test"],
            "CN = b.test",
            Some("sni=b.test"),
        ),
        (
            &["-servername", "x.wild.test"],
            "CN = *.wild.test",
            Some("sni=x.wild.test"),
        ),
        (
            &["-servername", "unknown.test"],
            "CN = a.test",
            Some("sni=unknown.test"),
        ),
        (&["-noservername"], "CN = a.test", None),
    ];
    for (n, (flags, subject, sni)) in cases.iter().enumerate() {
        let (_, stdout, stderr) = s_client(&addr, flags);
        assert!(
            stdout.contains(&format!(
                "subject={}",
                subject.replace("CN", "O = moat tests, CN")
            )),
            "{flags:?}: no {subject}\nstdout: {stdout}\nstderr: {stderr}"
        );
        let line = &moat.wait_for_count("tunnel closed", n + 1)[n];
        match sni {
            Some(sni) => assert!(line.contains(sni), "{flags:?}: {line}"),
            None => assert!(!line.contains("sni="), "{flags:?}: {line}"),
        }
    }
}

#[test]
fn cert_and_key_must_come_in_pairs() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = backend.target();
    let (cert, key) = (pki.s("server.pem"), pki.s("server.key"));
    let mut moat = Moat::spawn(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--no-client-auth",
        "--cert",
        &cert,
        "--key",
        &key,
        "--cert",
        &cert,
    ]);
    assert_eq!(moat.wait_exit().code(), Some(2));
    let line = moat.wait_for("moat: ");
    assert!(line.contains("got 2 --cert and 1 --key"), "{line}");
}

/// A server-mode moat offering `h2,http/1.1`.
fn alpn_server(pki: &Pki, backend: &Backend) -> Moat {
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--alpn".into(), "h2,http/1.1".into()]);
    Moat::start(&args(&argv))
}

fn s_client_with_cert(pki: &Pki, addr: &str, extra: &[&str]) -> (bool, String, String) {
    let (cert, key, ca) = (pki.s("client.pem"), pki.s("client.key"), pki.ca());
    let mut a = vec!["-CAfile", &ca, "-cert", &cert, "-key", &key];
    a.extend_from_slice(extra);
    s_client(addr, &a)
}

#[test]
fn alpn_takes_moats_preference_among_what_the_client_offers() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = alpn_server(&pki, &backend);
    let addr = moat.addr().to_string();
    let cases = [
        ("http/1.1", "ALPN protocol: http/1.1", "alpn=http/1.1"),
        ("http/1.1,h2", "ALPN protocol: h2", "alpn=h2"),
        ("spdy/3,h2", "ALPN protocol: h2", "alpn=h2"),
    ];
    for (n, (offer, shown, logged)) in cases.iter().enumerate() {
        let (_, stdout, stderr) = s_client_with_cert(&pki, &addr, &["-alpn", offer]);
        assert!(stdout.contains(shown), "{offer}: {stdout}\n{stderr}");
        let line = &moat.wait_for_count("tunnel closed", n + 1)[n];
        assert!(line.contains(logged), "{offer}: {line}");
    }
}

#[test]
fn a_client_offering_alpn_without_a_common_protocol_is_refused() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = alpn_server(&pki, &backend);
    let addr = moat.addr().to_string();
    let (ok, _, stderr) = s_client_with_cert(&pki, &addr, &["-alpn", "imap,pop3"]);
    assert!(!ok, "s_client got in");
    assert!(stderr.contains("no application protocol"), "{stderr}");
    let line = moat.wait_for("tunnel closed");
    assert!(line.contains("end=tls error with client"), "{line}");
    assert_eq!(backend.accepted(), 0);
}

#[test]
fn a_client_offering_no_alpn_is_let_in() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = alpn_server(&pki, &backend);
    let (_, stdout, stderr) = s_client_with_cert(&pki, &moat.addr().to_string(), &[]);
    assert!(stdout.contains("No ALPN negotiated"), "{stdout}\n{stderr}");
    let line = moat.wait_for("tunnel closed");
    assert!(
        line.contains("alpn=-") && line.contains("tls_version=1.3"),
        "{line}"
    );
}

#[test]
fn client_mode_sends_its_alpn_protocols() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = alpn_server(&pki, &backend);
    let mut argv = pki.client_args(&server.addr().to_string());
    argv.extend(["--alpn".into(), "http/1.1".into()]);
    let client = Moat::start(&args(&argv));
    let mut stream = common::connect(client.addr());
    let got = common::echo_roundtrip(stream.try_clone().unwrap(), b"GET /\n".to_vec(), |s| {
        let _ = s.shutdown(std::net::Shutdown::Write);
    });
    assert_eq!(got, b"GET /\n");
    let _ = std::io::Read::read(&mut stream, &mut [0u8; 1]);
    for moat in [&client, &server] {
        let line = moat.wait_for("tunnel closed");
        assert!(line.contains("alpn=http/1.1"), "{line}");
    }
}
