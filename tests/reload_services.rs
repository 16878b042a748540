//! Reloading the config file's services: added ones start listening, removed ones stop
//! accepting while their open tunnels finish; and a SIGHUP storm that neither stalls moat
//! nor leaks descriptors, tunnels or buffers.

mod common;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use common::files::{open_files, replace_file};
use common::tls_client::{client_config, tls_connect, tls_echo};
use common::{Backend, Moat, Pki};

/// A `[[server]]` table: `name` listening at `listen` in front of `target`, with the
/// test's certificates (relative paths: the file lies beside them), `extra` lines added.
fn server(name: &str, listen: &str, target: &str, extra: &str) -> String {
    format!(
        "[[server]]\nname = \"{name}\"\nlisten = \"{listen}\"\ntarget = \"{target}\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\nclient-ca = \"ca.pem\"\n{extra}\n"
    )
}

/// Writes `tables` as the config file `moat.toml` and returns its path.
fn write_config(pki: &Pki, tables: &[String]) -> String {
    replace_file(&pki.path("moat.toml"), tables.concat().as_bytes());
    pki.s("moat.toml")
}

/// Sends SIGUSR1 and returns the `stats:` line it brings. Workers take their orders in
/// turn, so once this line is in, every order sent before it (a reload's services) has
/// been carried out.
fn stats(moat: &Moat) -> String {
    let seen = moat.lines_with("stats: ").len();
    moat.signal("USR1");
    moat.wait_for_count("stats: ", seen + 1).pop().unwrap()
}

/// A round trip through `stream`.
fn echo(stream: &mut impl ReadWrite, message: &[u8]) {
    stream.write_all(message).unwrap();
    stream.flush().unwrap();
    let mut got = vec![0; message.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, message);
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// TLS to the unix socket at `path`.
fn tls_unix(pki: &Pki, path: &Path) -> StreamOwned<ClientConnection, UnixStream> {
    let conn = ClientConnection::new(
        client_config(pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    StreamOwned::new(conn, UnixStream::connect(path).expect("connect"))
}

#[test]
fn services_added_in_the_file_listen_and_removed_ones_drain() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = backend.target();
    let config = write_config(&pki, &[server("first", "127.0.0.1:0", &target, "")]);
    // New services bind new ports, which the sandbox (fixed at start-up) would refuse.
    let moat = Moat::start(&["--config", &config, "--no-sandbox"]);
    let first = moat.addr_of("first");
    let mut open = tls_connect(first, client_config(&pki, Some("client")));
    echo(&mut open, b"before the reload");

    let third = pki.path("third.sock");
    let third_listen = format!("unix:{}", third.display());
    write_config(
        &pki,
        &[
            server("second", "[::1]:0", &target, ""),
            server("third", &third_listen, &target, ""),
        ],
    );
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 0 service(s) kept, added: second, third, removed: first");
    let second = moat.addr_of("second");
    assert_eq!(second.ip().to_string(), "::1");
    moat.wait_for(&format!(
        "third: listening on {third_listen}, forwarding to {target}"
    ));
    assert!(
        stats(&moat).contains("stats: tunnels=1 "),
        "the open tunnel is gone"
    );

    // The removed service accepts no more; its open tunnel goes on; the new ones serve.
    let refused = std::net::TcpStream::connect(first).map(|_| ());
    assert_eq!(
        refused.as_ref().map_err(io::Error::kind),
        Err(io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(second, client, b"second").unwrap(), b"second");
    echo(&mut tls_unix(&pki, &third), b"third");
    echo(&mut open, b"after the reload, on the old route");
    open.conn.send_close_notify();
    open.flush().unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).unwrap();
    let closed = moat.wait_for("tunnel closed: first ");
    assert!(
        closed.contains("to_target=51B") && closed.contains("end=clean"),
        "{closed}"
    );

    // Removing the unix-socket service removes its socket file.
    write_config(&pki, &[server("second", "[::1]:0", &target, "")]);
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 1 service(s) kept, removed: third");
    stats(&moat);
    assert!(
        !third.exists(),
        "the removed service's socket file is still there"
    );
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(second, client, b"kept").unwrap(), b"kept");
}

#[test]
fn two_new_services_written_alike_get_a_listener_each() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = backend.target();
    let config = write_config(&pki, &[server("first", "127.0.0.1:0", &target, "")]);
    let moat = Moat::start(&["--config", &config, "--no-sandbox"]);
    let first = moat.addr_of("first");
    // Both written as the old one was: the first continues it (a rename keeps the
    // listener), the other gets a port of its own.
    write_config(
        &pki,
        &[
            server("a", "127.0.0.1:0", &target, ""),
            server("b", "127.0.0.1:0", &target, ""),
        ],
    );
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): 1 service(s) kept, added: b");
    let b = moat.addr_of("b");
    assert_ne!(b, first);
    stats(&moat);
    let client = client_config(&pki, Some("client"));
    for addr in [first, b] {
        assert_eq!(tls_echo(addr, client.clone(), b"own").unwrap(), b"own");
    }
    let lines = moat.wait_for_count("tunnel closed", 2);
    assert!(
        lines.iter().any(|l| l.contains("tunnel closed: a ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("tunnel closed: b ")),
        "{lines:?}"
    );
}

#[test]
fn a_sighup_storm_neither_stalls_nor_leaks() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = backend.target();
    let policy = |n: usize| match n % 2 {
        0 => "allow-cn = [\"test-client\"]".to_owned(),
        _ => "allow-cn = [\"test-client\", \"someone-else\"]".to_owned(),
    };
    let table = |n| server("storm", "127.0.0.1:0", &target, &policy(n));
    let config = write_config(&pki, &[table(0)]);
    // In the sandbox, as moat runs by default.
    let moat = Moat::start(&["--config", &config]);
    moat.wait_for("sandbox: ");
    let addr = moat.addr();
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(addr, client.clone(), b"warm").unwrap(), b"warm");
    moat.wait_for_count("tunnel closed", 1);
    let descriptors = open_files(moat.pid());

    let mut open = tls_connect(addr, client.clone());
    echo(&mut open, b"open through the storm");

    // 100 SIGHUPs from one shell, as fast as it can send them; pending ones merge.
    let started = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 100 ]; do kill -HUP \"$1\"; i=$((i+1)); done",
            "sh",
            &moat.pid().to_string(),
        ])
        .status()
        .expect("run sh");
    assert!(status.success());
    eprintln!("100 SIGHUPs sent in {:?}", started.elapsed());
    // No stall: a new tunnel right after, and the open one, both answer.
    assert_eq!(
        tls_echo(addr, client.clone(), b"right after").unwrap(),
        b"right after"
    );
    echo(&mut open, b"still open");
    // Two stats lines: the second is asked for after the first is in, so every SIGHUP
    // sent before has been handled by then.
    stats(&moat);
    stats(&moat);
    let storm = moat.lines_with("reload (SIGHUP): 1 service(s) kept").len();
    eprintln!("the storm made {storm} reload(s)");
    assert!(storm >= 1);

    // 100 reloads one after the other, each building a new TLS configuration (the
    // allow-list alternates).
    for n in 1..=100 {
        write_config(&pki, &[table(n)]);
        moat.signal("HUP");
        moat.wait_for_count("reload (SIGHUP): 1 service(s) kept", storm + n);
    }
    eprintln!("200 SIGHUPs handled in {:?}", started.elapsed());
    assert!(moat.lines_with("failed").is_empty(), "{}", moat.dump());
    echo(&mut open, b"after 100 reloads");
    open.conn.send_close_notify();
    open.flush().unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).unwrap();
    moat.wait_for_count("tunnel closed", 3);

    let after = stats(&moat);
    assert!(
        after.contains("stats: tunnels=0 buffers_in_use=0 "),
        "{after}"
    );
    assert_eq!(
        open_files(moat.pid()),
        descriptors,
        "descriptors before and after the reloads"
    );
}

/// A reload that opens a unix socket beside one moat listened on at start-up: in the
/// sandbox it may (the directory is moat's), but not with `--unix-mode`, which the sandbox
/// cannot allow once moat serves — refused in one line, moat serving on. Outside it, both.
#[test]
fn a_reload_opens_a_unix_socket_beside_the_first_and_unix_mode_only_outside_the_sandbox() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let target = backend.target();
    let (a, b) = (pki.path("a.sock"), pki.path("b.sock"));
    let listen = |p: &Path| format!("unix:{}", p.display());
    let first = server("a", &listen(&a), &target, "");
    for sandbox in [true, false] {
        let config = write_config(&pki, std::slice::from_ref(&first));
        let mut line = vec!["--config", &config];
        if !sandbox {
            line.push("--no-sandbox");
        }
        let mut moat = Moat::start(&line);
        let second = server("b", &listen(&b), &target, "unix-mode = \"0660\"");
        write_config(&pki, &[first.clone(), second]);
        moat.signal("HUP");
        if sandbox {
            let failed = moat.wait_for("reload (SIGHUP) failed");
            let shown = b.display();
            assert!(
                failed.contains(&format!(
                    "[[server]] \"b\": cannot listen on unix:{shown}: --unix-mode cannot be set on \
                     a socket opened after start-up (the sandbox allows only"
                )),
                "{failed}"
            );
            assert!(!b.exists());
            echo(&mut tls_unix(&pki, &a), b"a lives");
            write_config(
                &pki,
                &[first.clone(), server("b", &listen(&b), &target, "")],
            );
            moat.signal("HUP");
        }
        moat.wait_for("reload (SIGHUP): 1 service(s) kept, added: b");
        moat.wait_for(&format!("b: listening on {}", listen(&b)));
        echo(&mut tls_unix(&pki, &b), b"b serves");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&b).unwrap().permissions());
        if !sandbox {
            assert_eq!(mode & 0o777, 0o660);
        }
        moat.terminate();
        assert_eq!(moat.wait_exit().code(), Some(0), "{}", moat.dump());
        assert!(!a.exists() && !b.exists(), "socket files left at exit");
    }
}

/// A reload that changes `--unix-mode` of a socket moat keeps: applied outside the
/// sandbox; inside, the socket keeps its mode and a warning says why.
#[test]
fn a_reload_changes_the_mode_of_a_kept_unix_socket_outside_the_sandbox() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let backend = Backend::echo();
    let socket = pki.path("kept.sock");
    let listen = format!("unix:{}", socket.display());
    let table = |mode: &str| {
        server(
            "kept",
            &listen,
            &backend.target(),
            &format!("unix-mode = \"{mode}\""),
        )
    };
    let mode = || std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    for sandbox in [false, true] {
        let config = write_config(&pki, &[table("0600")]);
        let mut line = vec!["--config", &config];
        if !sandbox {
            line.push("--no-sandbox");
        }
        let mut moat = Moat::start(&line);
        assert_eq!(mode(), 0o600);
        write_config(&pki, &[table("0660")]);
        moat.signal("HUP");
        moat.wait_for("reload (SIGHUP): 1 service(s) kept");
        if sandbox {
            moat.wait_for("reload: kept: its unix socket keeps its mode: the sandbox");
            assert_eq!(mode(), 0o600);
        } else {
            assert_eq!(mode(), 0o660);
        }
        echo(&mut tls_unix(&pki, &socket), b"same socket");
        moat.terminate();
        assert_eq!(moat.wait_exit().code(), Some(0));
    }
}
