//! Unix sockets on both sides: server mode listening on one (a TLS client over a
//! `UnixStream`) and forwarding to one, client mode listening on one; a stale socket file
//! replaced at start, a live one refused, `--unix-mode`, the file removed at exit, and a
//! unix target counted as local for `--unsafe-target`.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use common::files::fails_with;
use common::tls_client::{client_config, tls_transfer};
use common::{args, echo_roundtrip, random_bytes, Backend, Moat, Pki, TryCloneStream, PATIENCE};

impl TryCloneStream for UnixStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().expect("clone stream")
    }
}

/// `args` with `flag`'s value replaced, or the flag and value appended.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_owned(),
        None => args.extend([flag.to_owned(), value.to_owned()]),
    }
    args
}

/// Connects to the unix socket at `path`, with the tests' patience on reads and writes.
fn connect_unix(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect to the unix socket");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// An echo backend listening on a unix socket at `path`.
fn unix_echo(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind the backend's unix socket");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut reader = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
}

#[test]
fn server_mode_listens_on_a_unix_socket_with_its_mode_and_removes_it_at_exit() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let socket = pki.path("moat.sock");
    let line = with(
        pki.server_args(&backend.target()),
        "--listen",
        &format!("unix:{}", socket.display()),
    );
    let mut moat = Moat::start(&args(&with(line, "--unix-mode", "0660")));
    let listening = moat.wait_for("listening on ");
    assert!(
        listening.contains(&format!("server: listening on unix:{}", socket.display())),
        "{listening}"
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);

    // TLS over the unix socket, byte-exact, a chunk at a time both ways.
    let conn = ClientConnection::new(
        client_config(&pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, connect_unix(&socket));
    let data = random_bytes(1 << 20, 3);
    for chunk in data.chunks(32 * 1024) {
        tls.write_all(chunk).unwrap();
        let mut got = vec![0; chunk.len()];
        tls.read_exact(&mut got).unwrap();
        assert!(got == chunk, "a chunk came back changed");
    }
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let closed = moat.wait_for("tunnel closed");
    assert!(
        closed.contains("server peer=unix ")
            && closed.contains("subject=\"O=moat tests,CN=test-client\"")
            && closed.contains("to_target=1048576B")
            && closed.contains("end=clean"),
        "{closed}"
    );

    moat.terminate();
    assert_eq!(moat.wait_exit().code(), Some(0), "{}", moat.dump());
    assert!(!socket.exists(), "the socket file outlived moat");
}

#[test]
fn server_mode_forwards_to_a_unix_socket_target_which_counts_as_local() {
    let pki = Pki::new();
    let backend = pki.path("backend.sock");
    unix_echo(&backend);
    // No --unsafe-target: a unix socket is on this host.
    let target = format!("unix:{}", backend.display());
    let moat = Moat::start(&args(&pki.server_args(&target)));
    let line = moat.wait_for("listening on ");
    assert!(line.ends_with(&format!("forwarding to {target}")), "{line}");
    let data = random_bytes(2 << 20, 11);
    let got = tls_transfer(moat.addr(), client_config(&pki, Some("client")), &data).unwrap();
    assert!(
        got == data,
        "{} bytes came back of {}",
        got.len(),
        data.len()
    );
    let closed = moat.wait_for("tunnel closed");
    assert!(
        closed.contains("to_target=2097152B") && closed.contains("to_client=2097152B"),
        "{closed}"
    );
}

#[test]
fn client_mode_listens_on_a_unix_socket() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let socket = pki.path("client.sock");
    let line = with(
        pki.client_args(&server.addr().to_string()),
        "--listen",
        &format!("unix:{}", socket.display()),
    );
    let client = Moat::start(&args(&line));
    let data = random_bytes(2 << 20, 5);
    let got = echo_roundtrip(connect_unix(&socket), data.clone(), |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert!(
        got == data,
        "{} bytes came back of {}",
        got.len(),
        data.len()
    );
    let closed = client.wait_for("tunnel closed");
    assert!(
        closed.contains("client peer=unix ") && closed.contains("end=clean"),
        "{closed}"
    );
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let socket = pki.path("moat.sock");
    let line = with(
        pki.server_args(&backend.target()),
        "--listen",
        &format!("unix:{}", socket.display()),
    );
    // A moat killed outright leaves its socket file behind.
    let dead = Moat::start(&args(&line));
    drop(dead); // SIGKILL
    assert!(socket.exists(), "no stale file to test with");

    let moat = Moat::start(&args(&line));
    moat.wait_for(&format!(
        "unix:{}: removing the socket file a previous process left",
        socket.display()
    ));
    let conn = ClientConnection::new(
        client_config(&pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, connect_unix(&socket));
    tls.write_all(b"fresh").unwrap();
    let mut got = [0u8; 5];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"fresh");

    // A second moat on the same path finds the first one answering, and leaves it be.
    let shown = socket.display();
    fails_with(
        &args(&line),
        1,
        &[&format!(
            "moat: cannot listen on unix:{shown}: a running process is listening on it"
        )],
    );
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "the live socket was disturbed"
    );

    // A file that is not a socket is not moat's to remove.
    let not_socket = pki.path("data.sock");
    std::fs::write(&not_socket, "keep me").unwrap();
    let line = with(line, "--listen", &format!("unix:{}", not_socket.display()));
    fails_with(&args(&line), 1, &["the path exists and is not a socket"]);
    assert_eq!(std::fs::read_to_string(&not_socket).unwrap(), "keep me");
}

#[test]
fn unix_mode_needs_a_unix_listener() {
    let pki = Pki::new();
    let line = with(pki.server_args("127.0.0.1:9"), "--unix-mode", "0660");
    fails_with(
        &args(&line),
        2,
        &["moat: --unix-mode applies to a unix socket: --listen unix:/path"],
    );
    let line = with(line, "--listen", &format!("unix:{}", pki.s("x.sock")));
    let line = with(line, "--unix-mode", "0999");
    fails_with(
        &args(&line),
        2,
        &["moat: invalid --unix-mode '0999': expected an octal file mode"],
    );
}
