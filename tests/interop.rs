//! moat against programs nobody here wrote: `openssl s_client`, `openssl s_server` and `curl`,
//! all on loopback, with certificates made fresh for the run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;

use common::tls_client::{client_config, tls_echo};
use common::{args, connect, echo_roundtrip, random_bytes, Backend, Moat, Pki, Tool};

/// `openssl s_client` towards `addr`, trusting the test CA, verifying the server's name and
/// failing on a bad server certificate; `identity` (e.g. `client`) adds `-cert/-key`.
fn s_client(pki: &Pki, addr: &str, identity: Option<&str>, extra: &[&str]) -> Tool {
    let (cert, key) = identity.map_or((None, None), |name| {
        let id = pki.identity(name);
        (
            Some(id.cert.to_string_lossy().into_owned()),
            Some(id.key.to_string_lossy().into_owned()),
        )
    });
    let ca = pki.ca();
    let mut a = vec!["s_client", "-connect", addr, "-CAfile", &ca];
    a.extend(["-verify_hostname", "localhost", "-verify_return_error"]);
    if let (Some(cert), Some(key)) = (&cert, &key) {
        a.extend(["-cert", cert, "-key", key]);
    }
    a.extend_from_slice(extra);
    // -quiet: no session dump, no command letters, and stdin EOF does not end the session.
    a.push("-quiet");
    Tool::spawn("openssl", &a, None)
}

#[test]
fn s_client_with_a_certificate_gets_its_bytes_back_exactly_tls13() {
    s_client_echo("-tls1_3");
}

#[test]
fn s_client_with_a_certificate_gets_its_bytes_back_exactly_tls12() {
    s_client_echo("-tls1_2");
}

fn s_client_echo(version: &str) {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let data = random_bytes(300 * 1024, 7);

    let mut client = s_client(&pki, &moat.addr().to_string(), Some("client"), &[version]);
    let mut stdin = client.take_stdin();
    let input = data.clone();
    let writer = thread::spawn(move || {
        stdin.write_all(&input).expect("write to s_client");
        stdin // kept open: with -quiet, s_client would go on anyway
    });
    let got = client.read_stdout_until(|got| got.len() >= data.len());
    assert!(
        got == data,
        "{} bytes back of {}, or different",
        got.len(),
        data.len()
    );
    drop(writer.join().expect("writer"));
    client.kill();

    let line = moat.wait_for("tunnel closed: server");
    assert!(
        line.contains("to_target=307200B")
            && line.contains("to_client=307200B")
            && line.contains("subject=\"O=moat tests,CN=test-client\""),
        "{line}"
    );
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn s_client_without_a_certificate_is_refused_before_the_backend() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));

    let mut client = s_client(&pki, &moat.addr().to_string(), None, &[]);
    drop(client.take_stdin());
    let status = client.wait();
    let stderr = client.stderr();
    assert!(!status.success(), "s_client got in; stderr:\n{stderr}");
    assert!(
        stderr.contains("alert certificate required"),
        "s_client did not hear why: {stderr}"
    );

    let line = moat.wait_for("tunnel closed: server");
    assert!(
        line.contains("end=tls error with client") && line.contains("no certificates"),
        "{line}"
    );
    // A good client afterwards is the first connection the backend ever sees.
    let good = tls_echo(moat.addr(), client_config(&pki, Some("client")), b"next\n");
    assert_eq!(good.expect("good client"), b"next\n");
    assert_eq!(
        backend.accepted(),
        1,
        "a refused client reached the backend"
    );
}

/// `openssl s_server -rev` on a free loopback port, requiring a client certificate from the
/// test CA and serving one connection. Returns it once it says ACCEPT, and its port.
fn s_server_rev(pki: &Pki, version: &str) -> (Tool, u16) {
    for _ in 0..10 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let accept = format!("127.0.0.1:{port}");
        let (cert, key, ca) = (pki.s("server.pem"), pki.s("server.key"), pki.ca());
        #[rustfmt::skip]
        let a = [
            "s_server", "-accept", &accept, "-cert", &cert, "-key", &key,
            "-CAfile", &ca, "-Verify", "1", "-verify_return_error", "-naccept", "1", "-rev",
            version,
        ];
        let mut server = Tool::spawn("openssl", &a, None);
        let out = server.read_stdout_until(|o| o.windows(6).any(|w| w == b"ACCEPT"));
        if out.windows(6).any(|w| w == b"ACCEPT") {
            return (server, port);
        }
        // It closed its output without listening: most likely someone took the port.
        server.wait();
        eprintln!("s_server on {accept} did not start:\n{}", server.stderr());
    }
    panic!("openssl s_server did not start on any free port");
}

#[test]
fn moat_client_talks_to_s_server_with_a_verified_certificate_tls13() {
    moat_client_to_s_server("-tls1_3", "TLSv1.3");
}

#[test]
fn moat_client_talks_to_s_server_with_a_verified_certificate_tls12() {
    moat_client_to_s_server("-tls1_2", "TLSv1.2");
}

fn moat_client_to_s_server(version: &str, protocol: &str) {
    let pki = Pki::new();
    let (mut server, port) = s_server_rev(&pki, version);
    // A host name as target: moat resolves it, and verifies it in s_server's certificate.
    let moat = Moat::start(&args(&pki.client_args(&format!("localhost:{port}"))));

    // Many lines, sent while the answers are read: s_server reverses each one.
    let lines: Vec<String> = random_bytes(128 * 1024, 11)
        .chunks(32)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let sent: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let expected: String = lines
        .iter()
        .map(|l| format!("{}\n", l.chars().rev().collect::<String>()))
        .collect();
    let got = echo_roundtrip(connect(moat.addr()), sent.into_bytes(), |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert!(
        got == expected.as_bytes(),
        "{} bytes back of {}, or not reversed line by line",
        got.len(),
        expected.len()
    );

    assert!(server.wait().success());
    let stderr = server.stderr();
    assert!(
        stderr.contains("Peer certificate: O = moat tests, CN = test-client")
            && stderr.contains("Verification: OK")
            && stderr.contains(&format!("Protocol version: {protocol}")),
        "s_server did not see moat's verified client certificate:\n{stderr}"
    );
    let line = moat.wait_for("tunnel closed: client");
    assert!(line.contains("end=clean"), "{line}");
}

#[test]
fn moat_client_without_a_certificate_is_refused_by_s_server() {
    let pki = Pki::new();
    let (mut server, port) = s_server_rev(&pki, "-tls1_3");
    let mut no_identity = pki.client_args(&format!("localhost:{port}"));
    no_identity.truncate(no_identity.iter().position(|a| a == "--cert").unwrap());
    let moat = Moat::start(&args(&no_identity));

    let mut stream = connect(moat.addr());
    stream.write_all(b"let me in\n").unwrap();
    common::wait_closed(&mut stream).expect("moat closes the plaintext side");
    let line = moat.wait_for("tunnel closed: client");
    assert!(
        line.contains("tls error with target") && line.contains("CertificateRequired"),
        "{line}"
    );
    server.wait(); // -naccept 1: it exits after the failed connection (with status 0)
    let stderr = server.stderr();
    assert!(stderr.contains("did not return a certificate"), "{stderr}");
}

/// A tiny HTTP/1.1 server: reads one request head, answers `body` with Content-Length and
/// closes. Remembers each request line.
fn http_backend(body: &'static str) -> (Backend, Arc<Mutex<Vec<String>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let backend = Backend::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push(line.trim_end().to_owned()),
            }
        }
        seen.lock()
            .unwrap()
            .push(head.first().cloned().unwrap_or_default());
        let mut stream = stream;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        // Wait for the client's close before dropping, so no unread byte turns it into a reset.
        let _ = reader.read_to_end(&mut Vec::new());
    });
    (backend, requests)
}

const BODY: &str = "moat carried this body through TLS to curl\n";

fn curl(extra: &[&str], url: &str) -> Vec<u8> {
    let mut a = vec!["--silent", "--show-error", "--fail", "--max-time", "20"];
    a.extend_from_slice(extra);
    a.push(url);
    let mut tool = Tool::spawn("curl", &a, None);
    drop(tool.take_stdin());
    let out = tool.read_stdout_to_end();
    let status = tool.wait();
    assert!(status.success(), "curl {status}: {}", tool.stderr());
    out
}

#[test]
fn curl_https_with_a_client_certificate_reaches_the_http_backend() {
    curl_https("127.0.0.1:0");
}

#[test]
fn curl_https_over_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: nothing to test");
        return;
    }
    curl_https("[::1]:0");
}

fn curl_https(listen: &str) {
    let pki = Pki::new();
    let (backend, requests) = http_backend(BODY);
    let mut server_args = pki.server_args(&backend.target());
    let at = server_args.iter().position(|a| a == "--listen").unwrap();
    server_args[at + 1] = listen.to_owned();
    let moat = Moat::start(&args(&server_args));
    let (ca, cert, key) = (pki.ca(), pki.s("client.pem"), pki.s("client.key"));
    // The address as moat logged it, e.g. https://[::1]:41333/: curl checks it against the
    // certificate's IP addresses.
    let url = format!("https://{}/over-tls", moat.addr());
    let out = curl(
        &["--cacert", &ca, "--cert", &cert, "--key", &key, "--http1.1"],
        &url,
    );
    assert_eq!(String::from_utf8_lossy(&out), BODY);
    assert_eq!(*requests.lock().unwrap(), ["GET /over-tls HTTP/1.1"]);
    let line = moat.wait_for("tunnel closed: server");
    assert!(
        line.contains("CN=test-client") && line.contains("end=clean"),
        "{line}"
    );
}

#[test]
fn curl_plain_http_through_moat_client_and_moat_server() {
    let pki = Pki::new();
    let (backend, requests) = http_backend(BODY);
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let out = curl(&[], &format!("http://{}/through-both", client.addr()));
    assert_eq!(String::from_utf8_lossy(&out), BODY);
    assert_eq!(*requests.lock().unwrap(), ["GET /through-both HTTP/1.1"]);
    let line = server.wait_for("tunnel closed: server");
    assert!(line.contains("CN=test-client"), "{line}");
}

#[test]
fn curl_without_a_client_certificate_gets_nothing() {
    let pki = Pki::new();
    let (backend, _) = http_backend(BODY);
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let ca = pki.ca();
    let url = format!("https://{}/", moat.addr());
    let mut tool = Tool::spawn(
        "curl",
        &["-sS", "--max-time", "20", "--cacert", &ca, &url],
        None,
    );
    drop(tool.take_stdin());
    let out = tool.read_stdout_to_end();
    assert!(!tool.wait().success(), "curl got in without a certificate");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let line = moat.wait_for("tunnel closed: server");
    assert!(line.contains("no certificates"), "{line}");
    let good = tls_echo(
        moat.addr(),
        client_config(&pki, Some("client")),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(good.is_ok(), "{good:?}");
    assert_eq!(
        backend.accepted(),
        1,
        "a refused client reached the backend"
    );
}
