//! The connection cap: at `--max-conns` moat stops accepting (clients wait in the backlog,
//! not refused) and resumes as soon as a tunnel ends.

mod common;

use std::io::{Read, Write};
use std::thread;

use common::tls_client::{client_config, tls_connect, tls_echo};
use common::{args, Backend, Moat, Pki};

#[test]
fn at_the_cap_new_clients_wait_and_are_served_once_a_tunnel_ends() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--max-conns".to_string(), "2".to_string()]);
    let moat = Moat::start(&args(&argv));
    let addr = moat.addr();
    let config = client_config(&pki, Some("client"));

    let mut open: Vec<_> = (0..2)
        .map(|_| {
            let mut tls = tls_connect(addr, config.clone());
            tls.write_all(b"in").unwrap();
            let mut back = [0u8; 2];
            tls.read_exact(&mut back).unwrap();
            tls
        })
        .collect();
    backend.wait_accepted(2);

    // The third client connects (the kernel completes TCP for it) but is not accepted.
    let waiting = {
        let config = config.clone();
        thread::spawn(move || tls_echo(addr, config, b"third"))
    };
    moat.wait_for("connection cap reached (2 tunnels)");
    assert_eq!(
        backend.accepted(),
        2,
        "a third tunnel was opened past the cap"
    );
    assert!(
        !waiting.is_finished(),
        "the third client was served past the cap"
    );

    // One tunnel ends: the waiting client is accepted and served.
    let mut first = open.remove(0);
    first.conn.send_close_notify();
    first.flush().unwrap();
    assert_eq!(
        waiting.join().unwrap().expect("third client served"),
        b"third"
    );
    moat.wait_for("below the connection cap again");
    assert_eq!(backend.accepted(), 3);
}

/// Out of descriptors, moat pauses accepting instead of spinning on EMFILE, and serves
/// again by itself once descriptors are free.
#[test]
fn running_out_of_descriptors_pauses_accepting_without_spinning() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let argv = pki.server_args(&backend.target()).join(" ");
    // `ulimit -n` sets the hard limit too, so moat cannot raise it back.
    let moat = Moat::start(&[
        "--sh",
        &format!(
            "ulimit -n 40 && exec {} {argv} --max-conns 100",
            env!("CARGO_BIN_EXE_moat")
        ),
    ]);
    let addr = moat.addr();
    moat.wait_for("--max-conns 100 needs about");

    // More silent connections than moat has descriptors: the rest wait in the backlog.
    let hogs: Vec<_> = (0..60).map(|_| common::connect(addr)).collect();
    moat.wait_for("accept failed: Too many open files; pausing accepts");
    let ticks_before = moat.cpu_ticks();
    thread::sleep(std::time::Duration::from_secs(2));
    let used = moat.cpu_ticks() - ticks_before;
    // A loop spinning on accept would burn ~200 ticks (2 s at 100 Hz) here.
    assert!(
        used < 40,
        "moat used {used} clock ticks in 2 s while out of descriptors"
    );

    drop(hogs);
    let config = client_config(&pki, Some("client"));
    assert_eq!(
        tls_echo(addr, config, b"served again").unwrap(),
        b"served again"
    );
}
