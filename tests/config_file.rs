//! `moat --config FILE`: several services from one TOML file serve side by side; every
//! mistake in the file is one `moat:` line naming the file, the service and the key, exit
//! code 2; `moat check` says the same without listening; flags given with the file win.

mod common;

use std::io::Write;

use common::files::{fails_with, replace_file, run_to_exit};
use common::tls_client::{client_config, tls_echo};
use common::{connect, echo_roundtrip, random_bytes, Backend, Moat, Pki};

/// A client-mode service `plain` on TCP in front of a server-mode service `tls` on a unix
/// socket in front of `backend`, both in one file. Paths are relative to the file, the
/// unix socket's too.
fn two_services(backend: &str) -> String {
    let socket = "tls.sock";
    format!(
        r#"
log-level = "info"
idle-timeout = "1m"

[[server]]
name = "tls"
listen = "unix:{socket}"
target = "{backend}"
cert = "server.pem"
key = "server.key"
client-ca = "ca.pem"

[[client]]
name = "plain"
listen = "127.0.0.1:0"
target = "unix:{socket}"
server-name = "localhost"
ca = "ca.pem"
cert = "client.pem"
key = "client.key"
"#
    )
}

/// Writes `text` as `name` in the test's directory and returns the file's path.
fn write_config(pki: &Pki, name: &str, text: &str) -> String {
    replace_file(&pki.path(name), text.as_bytes());
    pki.s(name)
}

/// Starts moat on the config file at `path` and waits for `services` listening lines.
fn start(args: &[&str], services: usize) -> Moat {
    let moat = Moat::spawn(args);
    moat.wait_for_count("listening on ", services);
    moat
}

#[test]
fn two_services_from_one_file_carry_bytes_exactly_through_both() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let config = write_config(&pki, "moat.toml", &two_services(&backend.target()));
    let moat = start(&["--config", &config], 2);
    let tls_line = moat.wait_for("tls: listening on ");
    assert!(
        tls_line.contains(&format!("listening on unix:{}", pki.s("tls.sock"))),
        "{tls_line}"
    );

    // Plaintext in, through the client service, TLS over the unix socket, the server
    // service, plaintext to the backend and all the way back.
    let data = random_bytes(3 << 20, 7);
    let stream = connect(moat.addr_of("plain"));
    let got = echo_roundtrip(stream, data.clone(), |s| {
        s.shutdown(std::net::Shutdown::Write).unwrap()
    });
    assert!(
        got == data,
        "{} bytes came back, not the {} sent",
        got.len(),
        data.len()
    );
    for name in ["plain", "tls"] {
        let line = moat.wait_for(&format!("tunnel closed: {name} "));
        assert!(
            line.contains("to_target=3145728B")
                && line.contains("to_client=3145728B")
                && line.contains("end=clean"),
            "{line}"
        );
    }
}

#[test]
fn check_accepts_a_good_file_without_listening() {
    let pki = Pki::new();
    let config = write_config(&pki, "moat.toml", &two_services("127.0.0.1:9"));
    let (code, stdout, stderr) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout,
        format!("moat: {config}: ok, 2 service(s): tls, plain\n")
    );
    assert_eq!(stderr, "");
    assert!(
        !pki.path("tls.sock").exists(),
        "check made the listening socket"
    );

    // `--check` after a mode's flags checks the command line the same way.
    let mut line = pki.server_args("127.0.0.1:9");
    line.push("--check".into());
    let (code, stdout, _) = run_to_exit(&common::args(&line));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout, "moat: the command line: ok, 1 service(s): server\n");
}

/// `two_services` with `edit` applied: `(old, new)` replaces the first line equal to
/// `old`; an empty `old` appends `new` at the top of the file.
fn edited(pki: &Pki, edit: (&str, &str)) -> String {
    let good = two_services("127.0.0.1:9");
    let text = match edit {
        ("", new) => format!("{new}\n{good}"),
        (old, new) => {
            assert!(good.lines().any(|l| l == old), "no line {old:?}");
            good.replacen(&format!("\n{old}\n"), &format!("\n{new}\n"), 1)
        }
    };
    write_config(pki, "bad.toml", &text)
}

/// The same mistake fails `moat check` and `moat --config` alike, exit code 2, one line.
fn both_refuse(config: &str, needles: &[&str]) -> String {
    let checked = fails_with(&["check", "--config", config], 2, needles);
    let run = fails_with(&["--config", config], 2, needles);
    assert_eq!(checked, run, "check and run disagree");
    run
}

#[test]
fn a_bad_value_names_the_file_the_service_and_the_key() {
    let pki = Pki::new();
    let config = edited(
        &pki,
        (
            "key = \"server.key\"",
            "key = \"server.key\"\nidle-timeout = \"10\"",
        ),
    );
    let line = both_refuse(&config, &[]);
    assert_eq!(
        line,
        format!(
            "moat: {config}: [[server]] \"tls\": idle-timeout: invalid value '10': missing \
             unit: write 250ms, 10s, 5m or 1h"
        )
    );

    let config = edited(&pki, ("log-level = \"info\"", "log-level = \"loud\""));
    let line = both_refuse(&config, &[]);
    assert_eq!(
        line,
        format!(
            "moat: {config}: log-level: invalid value 'loud': expected error, warn, info, \
             debug or trace"
        )
    );

    // A service without a name is named by its place in the file.
    let text = two_services("127.0.0.1:9").replacen("name = \"tls\"\n", "", 1);
    let text = text.replacen("listen = \"unix:", "max-conns = 3\nlisten = \"unix:", 1);
    let config = write_config(&pki, "bad.toml", &text);
    both_refuse(
        &config,
        &[
            &format!("moat: {config}: [[server]] #1: unknown key 'max-conns'"),
            "write it at the top of the file",
        ],
    );
}

#[test]
fn an_unknown_key_at_the_top_or_in_a_service_is_an_error() {
    let pki = Pki::new();
    let config = edited(&pki, ("log-level = \"info\"", "lgo-level = \"info\""));
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: unknown key 'lgo-level': not a setting moat knows (a typo?)"
        )],
    );

    let config = edited(
        &pki,
        ("name = \"plain\"", "name = \"plain\"\nallow-cnn = \"x\""),
    );
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: [[client]] \"plain\": unknown key 'allow-cnn': not a setting moat \
             knows (a typo?)"
        )],
    );

    let config = edited(&pki, ("", "client-ca = \"ca.pem\""));
    both_refuse(
        &config,
        &[
            &format!("moat: {config}: unknown key 'client-ca'"),
            "it belongs in a [[server]] or [[client]] table",
        ],
    );
}

#[test]
fn a_missing_file_names_the_file_the_service_and_the_key() {
    let pki = Pki::new();
    let config = edited(&pki, ("cert = \"server.pem\"", "cert = \"missing.pem\""));
    let missing = pki.s("missing.pem");
    let line = both_refuse(&config, &[]);
    assert_eq!(
        line,
        format!(
            "moat: {config}: [[server]] \"tls\": cert: cannot read {missing}: No such file or \
             directory"
        )
    );

    let config = edited(&pki, ("ca = \"ca.pem\"", "ca = \"no-ca.pem\""));
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: [[client]] \"plain\": ca: cannot read "
        )],
    );

    let nowhere = pki.s("nowhere.toml");
    fails_with(
        &["--config", &nowhere],
        2,
        &[&format!(
            "moat: cannot read --config {nowhere}: No such file or directory"
        )],
    );
}

#[test]
fn bad_toml_duplicate_names_and_duplicate_places_are_refused() {
    let pki = Pki::new();
    let config = edited(&pki, ("[[client]]", "[[client]"));
    let line = both_refuse(
        &config,
        &[
            &config,
            "TOML parse error at line 13, column 10: unclosed array table",
        ],
    );
    assert!(!line.contains('|'), "the quoted line leaked in: {line}");

    let config = edited(&pki, ("name = \"plain\"", "name = \"tls\""));
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: [[client]] \"tls\": another service is named \"tls\": give each a \
             name of its own"
        )],
    );

    let socket = pki.s("tls.sock");
    let config = edited(
        &pki,
        (
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"unix:{socket}\""),
        ),
    );
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: [[client]] \"plain\": listen: \"tls\" listens on unix:{socket} \
             already: give each service a place of its own"
        )],
    );

    let config = write_config(&pki, "bad.toml", "log-level = \"info\"\n");
    both_refuse(
        &config,
        &[&format!(
            "moat: {config}: no service: add a [[server]] or [[client]] table"
        )],
    );
}

#[test]
fn flags_given_with_the_file_override_its_process_settings() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let text = two_services(&backend.target()).replacen(
        "log-level = \"info\"",
        "log-level = \"error\"",
        1,
    );
    let config = write_config(&pki, "moat.toml", &text);
    // The file says error; the flag says info, so the listening lines show, and keep
    // showing after a reload reads the file again.
    let moat = start(&["--config", &config, "--log-level", "info"], 2);
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 2 service(s) kept");
    let mut moat = moat;
    moat.terminate();
    assert_eq!(moat.wait_exit().code(), Some(0));

    // The other way round: the file says info, the flag warn.
    let text = two_services(&backend.target());
    let config = write_config(&pki, "quiet.toml", &text);
    let quiet = Moat::spawn(&["--config", &config, "--log-level", "warn"]);
    wait_until_catching_sighup(quiet.pid());
    // Nothing at info shows; a failed reload (a warning) does.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap()
        .write_all(b"[[server\n")
        .unwrap();
    quiet.signal("HUP");
    quiet.wait_for("reload (SIGHUP) failed, keeping the running configuration: ");
    assert!(quiet.lines_with(" INFO ").is_empty(), "{}", quiet.dump());

    // A service's flag with --config is a mistake, not an override.
    fails_with(
        &["--config", &config, "--listen", "127.0.0.1:0"],
        2,
        &["moat: --listen belongs to a service: with --config, write it in the file's"],
    );
}

/// Waits until process `pid` catches SIGHUP (bit 0 of `SigCgt` in its status), for a
/// moat whose log is too quiet to say it is ready.
fn wait_until_catching_sighup(pid: u32) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & 1 != 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "moat never caught SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_server_service_from_a_file_is_reached_by_a_tls_client() {
    // Relative paths are taken from the file's directory, not from where moat runs: this
    // test's working directory is the crate's.
    let pki = Pki::new();
    let backend = Backend::echo();
    let text = format!(
        "[[server]]\nlisten = \"127.0.0.1:0\"\ntarget = \"{}\"\ncert = \"server.pem\"\n\
         key = \"server.key\"\nclient-ca = \"ca.pem\"\n",
        backend.target()
    );
    let config = write_config(&pki, "one.toml", &text);
    let moat = start(&["--config", &config], 1);
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(moat.addr(), client, b"filed").unwrap(), b"filed");
    moat.wait_for("tunnel closed: server peer=127.0.0.1:");
}
