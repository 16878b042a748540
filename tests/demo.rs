//! `moat demo`: the printed guide tells the truth. Its addresses carry bytes through both
//! tunnels, its `openssl s_client` commands work (and refuse) as it says, and SIGTERM ends
//! it with exit code 0.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;

use common::{connect, echo_roundtrip, random_bytes, Moat, Tool};

/// The address after `label` on the guide line that starts with it.
fn guide_addr(moat: &Moat, label: &str) -> SocketAddr {
    let line = moat.wait_for_stdout(label);
    let rest = &line[line.find(label).unwrap() + label.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {label:?} in {line:?}"))
}

/// The guide's two `openssl s_client ...` commands (with, then without a client
/// certificate), each as the arguments after `openssl`.
fn guide_commands(moat: &Moat) -> [Vec<String>; 2] {
    let lines = moat.wait_for_stdout_count("openssl s_client", 2);
    let args = |line: &str| {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(words.first().map(String::as_str), Some("openssl"), "{line}");
        words[1..].to_vec()
    };
    [args(&lines[0]), args(&lines[1])]
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn guide_addresses_carry_bytes_through_both_tunnels() {
    let moat = Moat::start(&["demo", "--listen", "127.0.0.1:0"]);
    let client_leg = guide_addr(&moat, "client leg (plaintext):");
    let tls_leg = guide_addr(&moat, "TLS leg (mutual TLS):");
    let echo = guide_addr(&moat, "echo backend:");
    // The guide and the log agree on where each leg is.
    assert_eq!(client_leg, moat.addr_of("demo client leg"));
    assert_eq!(tls_leg, moat.addr_of("demo tls leg"));
    assert_eq!(echo, moat.addr_of("demo echo backend"));

    let data = random_bytes(1 << 20, 3);
    let got = echo_roundtrip(connect(client_leg), data.clone(), |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert!(
        got == data,
        "{} bytes back of {}, or different",
        got.len(),
        data.len()
    );
    // One tunnel on each of the three listeners carried every byte.
    for leg in ["demo client leg", "demo tls leg", "demo echo backend"] {
        let line = moat.wait_for(&format!("tunnel closed: {leg} "));
        assert!(line.contains("to_target=1048576B"), "{line}");
    }
    let tls_line = moat.wait_for("tunnel closed: demo tls leg");
    assert!(tls_line.contains("CN=moat-demo-client"), "{tls_line}");
}

#[test]
fn guide_s_client_command_echoes_with_the_repository_certificates() {
    let moat = Moat::start(&["demo", "--listen", "127.0.0.1:0"]);
    let tls_leg = guide_addr(&moat, "TLS leg (mutual TLS):");
    let [args, _] = guide_commands(&moat);
    let connect_to = args
        .iter()
        .position(|a| a == "-connect")
        .map(|i| &args[i + 1]);
    assert_eq!(connect_to, Some(&tls_leg.to_string()));
    for file in ["certs/ca.pem", "certs/client.pem", "certs/client.key"] {
        assert!(args.iter().any(|a| a == file), "{file} not in {args:?}");
        assert!(
            repository().join(file).is_file(),
            "{file} is not in the repository"
        );
    }

    // The command runs from the repository root, as the guide says.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s_client = Tool::spawn("openssl", &args, Some(repository()));
    let message = b"through the TLS leg and back\n";
    let mut stdin = s_client.take_stdin();
    stdin.write_all(message).expect("write to s_client");
    let got = s_client.read_stdout_until(|got| got.len() >= message.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(message)
    );
    drop(stdin);
    s_client.kill();
    let stderr = s_client.stderr();
    assert!(
        stderr.contains("verify return:1") && !stderr.contains("verify error"),
        "the TLS leg's certificate does not verify against certs/ca.pem:\n{stderr}"
    );
    let line = moat.wait_for("tunnel closed: demo tls leg");
    assert!(line.contains("CN=moat-demo-client"), "{line}");
}

#[test]
fn guide_s_client_without_a_certificate_is_refused() {
    let moat = Moat::start(&["demo", "--listen", "127.0.0.1:0"]);
    let line = moat.wait_for_stdout("Without a client certificate");
    assert!(line.contains("refuses"), "{line}");
    let [_, refused] = guide_commands(&moat);
    assert!(!refused.iter().any(|a| a == "-cert"), "{refused:?}");

    let args: Vec<&str> = refused.iter().map(String::as_str).collect();
    let mut s_client = Tool::spawn("openssl", &args, Some(repository()));
    drop(s_client.take_stdin());
    let status = s_client.wait();
    assert!(!status.success(), "s_client got in: {}", s_client.stderr());
    let line = moat.wait_for("tunnel closed: demo tls leg");
    assert!(line.contains("no certificates"), "{line}");

    // A good round trip afterwards is the only one the echo backend ever saw.
    one_round_trip(&moat);
    let echoed = moat.lines_with("tunnel closed: demo echo backend ");
    assert_eq!(echoed.len(), 1, "{echoed:#?}");
}

/// Sends `text` and expects it back.
fn ping(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, text);
}

#[test]
fn sigterm_lets_open_tunnels_finish_then_exits_zero() {
    let mut moat = Moat::start(&["demo", "--listen", "127.0.0.1:0"]);
    let client_leg = guide_addr(&moat, "client leg (plaintext):");
    let mut stream = connect(client_leg);
    ping(&mut stream, b"before\n");

    moat.terminate();
    moat.wait_for("SIGTERM: no longer accepting");
    // The open tunnel goes on working (which takes the loop past the signal's handling);
    // new connections find no listener.
    ping(&mut stream, b"after\n");
    assert!(TcpStream::connect(client_leg).is_err());
    stream.shutdown(Shutdown::Write).unwrap();
    common::wait_closed(&mut stream).unwrap();

    let status = moat.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", moat.dump());
    moat.wait_for("all tunnels finished; exiting");
    let line = moat.wait_for("tunnel closed: demo client leg");
    assert!(
        line.contains("to_target=13B") && line.contains("end=clean"),
        "{line}"
    );
}

/// Pushes one line through the client leg and waits until all three tunnels have ended.
fn one_round_trip(moat: &Moat) {
    let client_leg = guide_addr(moat, "client leg (plaintext):");
    let data = b"is anyone debugging?\n".to_vec();
    let got = echo_roundtrip(connect(client_leg), data.clone(), |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(got, data);
    for leg in ["demo client leg", "demo tls leg", "demo echo backend"] {
        moat.wait_for(&format!("tunnel closed: {leg} "));
    }
}

#[test]
fn log_level_debug_shows_debug_lines_and_info_does_not() {
    let debug = Moat::start(&["demo", "--listen", "127.0.0.1:0", "--log-level", "debug"]);
    one_round_trip(&debug);
    let line = debug.wait_for(" DEBUG ");
    assert!(line.contains("tunnel"), "{line}");
    debug.wait_for("finished TLS handshake as O=moat development,CN=moat-demo-client");

    let quiet = Moat::start(&["demo", "--listen", "127.0.0.1:0"]);
    one_round_trip(&quiet);
    // The tunnels have ended, so any debug line about them would be in the log by now.
    assert!(
        quiet.lines_with(" DEBUG ").is_empty(),
        "debug lines at the default level:\n{}",
        quiet.dump()
    );
}
