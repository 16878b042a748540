//! Reloading certificates: SIGHUP swaps them in for new handshakes while an open tunnel
//! keeps flowing, byte-exact, with the one it began with; a reload that fails keeps the
//! whole running configuration and says why in one line; `--reload-interval` notices a
//! replaced file by itself.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use common::files::{certificate, replace_file, replace_with_copy, served_certificate};
use common::pki::Spec;
use common::tls_client::client_config;
use common::{args, connect, random_bytes, Backend, Moat, Pki, Tool};

/// The line a failed SIGHUP reload logs, up to the reason.
const FAILED: &str = "reload (SIGHUP) failed, keeping the running configuration: ";

/// A server-mode moat whose certificate and key are `live.pem` and `live.key`, copies of
/// the test's server pair that the test replaces; and `renewed.pem`/`.key`, the pair it
/// replaces them with (CN `renewed.example`).
fn live_server(pki: &Pki, target: &str, extra: &[&str]) -> Moat {
    live_files(pki);
    let mut line = pki.server_args(target);
    for (flag, file) in [("--cert", "live.pem"), ("--key", "live.key")] {
        let at = line.iter().position(|a| a == flag).unwrap() + 1;
        line[at] = pki.s(file);
    }
    line.extend(extra.iter().map(|s| s.to_string()));
    Moat::start(&args(&line))
}

/// Writes the live pair and the renewed one.
fn live_files(pki: &Pki) {
    replace_with_copy(&pki.path("server.pem"), &pki.path("live.pem"));
    replace_with_copy(&pki.path("server.key"), &pki.path("live.key"));
    pki.issue("renewed", &Spec::server(&["renewed.example"]));
}

/// Puts the renewed pair in place of the live one, key first.
fn renew(pki: &Pki) {
    replace_with_copy(&pki.path("renewed.key"), &pki.path("live.key"));
    replace_with_copy(&pki.path("renewed.pem"), &pki.path("live.pem"));
}

/// The certificate a new tunnel to `moat` is served, after a round trip through it.
fn served(pki: &Pki, moat: &Moat) -> CertificateDer<'static> {
    served_certificate(moat.addr(), client_config(pki, Some("client")), b"which?")
        .expect("a round trip through moat")
}

/// What `openssl s_client -showcerts` is shown: its output, and the first certificate.
fn s_client_showcerts(pki: &Pki, moat: &Moat) -> (String, CertificateDer<'static>) {
    let (addr, ca) = (moat.addr().to_string(), pki.ca());
    let (cert, key) = (pki.s("client.pem"), pki.s("client.key"));
    #[rustfmt::skip]
    let a = [
        "s_client", "-connect", &addr, "-servername", "localhost", "-CAfile", &ca,
        "-cert", &cert, "-key", &key, "-showcerts",
    ];
    let mut tool = Tool::spawn("openssl", &a, None);
    drop(tool.take_stdin()); // EOF: s_client hangs up once the handshake is done
    let out = String::from_utf8_lossy(&tool.read_stdout_to_end()).into_owned();
    tool.wait();
    let first = CertificateDer::pem_slice_iter(out.as_bytes())
        .next()
        .unwrap_or_else(|| panic!("no certificate in s_client's output:\n{out}"))
        .expect("PEM");
    (out, first)
}

#[test]
fn an_open_tunnel_flows_across_a_reload_while_new_handshakes_get_the_new_certificate() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = live_server(&pki, &backend.target(), &[]);
    let new = certificate(&pki.path("renewed.pem"));
    assert_ne!(certificate(&pki.path("server.pem")), new);
    // The tunnel under test is a client-mode moat's TLS connection to the server: bulk
    // data flows both ways at once, from a plaintext socket the test can split.
    let front = Moat::start(&args(&pki.client_args(&moat.addr().to_string())));
    let stream = connect(front.addr());
    let data = random_bytes(8 << 20, 17);
    let writer = {
        let (mut stream, data) = (stream.try_clone().unwrap(), data.clone());
        thread::spawn(move || {
            for chunk in data.chunks(64 * 1024) {
                stream.write_all(chunk).expect("write to the tunnel");
            }
            stream.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut reader = stream;
    let mut got = vec![0; 2 << 20];
    reader.read_exact(&mut got).unwrap();

    // Mid-stream, with the writer held back by the paused reader: renew and reload.
    renew(&pki);
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 1 service(s) kept");
    assert_eq!(
        served(&pki, &moat),
        new,
        "a new handshake got the old certificate"
    );
    let (shown, first) = s_client_showcerts(&pki, &moat);
    assert_eq!(
        first, new,
        "openssl was shown the old certificate:\n{shown}"
    );
    assert!(shown.contains("CN = renewed.example"), "{shown}");

    reader.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(
        got == data,
        "{} bytes came back of {}",
        got.len(),
        data.len()
    );
    let closed = moat.wait_for_count("tunnel closed", 3);
    assert!(
        closed.iter().any(|l| l.contains("to_target=8388608B")
            && l.contains("to_client=8388608B")
            && l.contains("end=clean")),
        "{closed:#?}"
    );
}

/// Sends SIGHUP, waits for the failure line, checks it is the only line the reload wrote
/// and holds `reason`, and that moat still serves its first certificate.
fn reload_fails(pki: &Pki, moat: &Moat, reason: &str) -> String {
    let before = moat.lines_with("reload").len();
    moat.signal("HUP");
    let line = moat.wait_for(FAILED);
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains(reason), "{reason:?} missing: {line}");
    assert_eq!(
        moat.lines_with("reload").len(),
        before + 1,
        "{}",
        moat.dump()
    );
    assert_eq!(
        served(pki, moat),
        certificate(&pki.path("server.pem")),
        "a failed reload changed the certificate"
    );
    line
}

#[test]
fn a_reload_with_an_unreadable_certificate_keeps_serving_then_recovers() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = live_server(&pki, &backend.target(), &[]);
    std::fs::remove_file(pki.path("live.pem")).unwrap();
    let live = pki.s("live.pem");
    let line = reload_fails(
        &pki,
        &moat,
        &format!("cannot read --cert {live}: No such file or directory"),
    );
    assert!(line.ends_with("No such file or directory"), "{line}");

    // Once the file is back, the next reload takes it.
    renew(&pki);
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 1 service(s) kept");
    assert_eq!(served(&pki, &moat), certificate(&pki.path("renewed.pem")));
}

#[test]
fn a_reload_with_a_key_that_does_not_match_keeps_serving() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = live_server(&pki, &backend.target(), &[]);
    // The renewed key beside the old certificate: half a renewal.
    replace_with_copy(&pki.path("renewed.key"), &pki.path("live.key"));
    let (cert, key) = (pki.s("live.pem"), pki.s("live.key"));
    reload_fails(
        &pki,
        &moat,
        &format!("--key {key} does not match the certificate in --cert {cert}"),
    );
}

/// A config file for one server service named `edge` listening at `listen`, with the
/// live pair.
fn config_text(pki: &Pki, listen: &str, target: &str) -> String {
    format!(
        "[[server]]\nname = \"edge\"\nlisten = \"{listen}\"\ntarget = \"{target}\"\n\
         cert = \"live.pem\"\nkey = \"live.key\"\nclient-ca = \"{}\"\n",
        pki.ca()
    )
}

#[test]
fn a_reload_with_bad_toml_keeps_serving() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let config = pki.path("moat.toml");
    replace_file(
        &config,
        config_text(&pki, "127.0.0.1:0", &backend.target()).as_bytes(),
    );
    live_files(&pki);
    let moat = Moat::start(&["--config", &config.to_string_lossy()]);
    replace_file(&config, b"[[server]]\nname = \"edge\nlisten = 1\n");
    let shown = config.display();
    reload_fails(
        &pki,
        &moat,
        &format!("--config {shown}: TOML parse error at line 2, column "),
    );
}

#[test]
fn a_reload_whose_new_listen_address_is_taken_keeps_serving() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let config = pki.path("moat.toml");
    replace_file(
        &config,
        config_text(&pki, "127.0.0.1:0", &backend.target()).as_bytes(),
    );
    live_files(&pki);
    // Outside the sandbox, so that the bind fails for the reason under test (inside it,
    // a port moat did not have at start-up is refused first).
    let moat = Moat::start(&["--config", &config.to_string_lossy(), "--no-sandbox"]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    replace_file(
        &config,
        config_text(&pki, &at.to_string(), &backend.target()).as_bytes(),
    );
    let shown = config.display();
    reload_fails(
        &pki,
        &moat,
        &format!("{shown}: [[server]] \"edge\": cannot listen on {at}: Address already in use"),
    );
}

#[test]
fn reload_interval_picks_up_a_replaced_certificate_without_a_signal() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = live_server(&pki, &backend.target(), &["--reload-interval", "200ms"]);
    assert_eq!(served(&pki, &moat), certificate(&pki.path("server.pem")));
    renew(&pki);
    // Between the two renames a check may find a key that does not match its
    // certificate yet (a failed reload, logged); the next one finds both.
    moat.wait_for("reload (a file changed): 1 service(s) kept");
    assert_eq!(served(&pki, &moat), certificate(&pki.path("renewed.pem")));
}

#[test]
fn reload_interval_watches_the_files_a_failed_reload_was_missing() {
    let pki = Pki::new();
    let backend = Backend::echo();
    live_files(&pki);
    let config = pki.path("moat.toml");
    replace_file(
        &config,
        config_text(&pki, "127.0.0.1:0", &backend.target()).as_bytes(),
    );
    let shown = config.to_string_lossy();
    let moat = Moat::start(&["--config", &shown, "--reload-interval", "200ms"]);
    // The operator points the file at a pair that is not there yet...
    let text = config_text(&pki, "127.0.0.1:0", &backend.target())
        .replace("live.pem", "next.pem")
        .replace("live.key", "next.key");
    replace_file(&config, text.as_bytes());
    let next = pki.s("next.pem");
    let failed = moat.wait_for("reload (a file changed) failed");
    assert!(
        failed.contains(&format!(
            "cert: cannot read {next}: No such file or directory"
        )),
        "{failed}"
    );
    // ...and puts it there: that is a change too.
    replace_with_copy(&pki.path("renewed.key"), &pki.path("next.key"));
    replace_with_copy(&pki.path("renewed.pem"), &pki.path("next.pem"));
    moat.wait_for("reload (a file changed): 1 service(s) kept");
    assert_eq!(served(&pki, &moat), certificate(&pki.path("renewed.pem")));
}
