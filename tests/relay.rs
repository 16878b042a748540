//! Bytes arrive exactly: both modes, both directions at once, many tunnels through one loop.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use common::tls_client::{client_config, tls_transfer};
use common::{args, connect, echo_roundtrip, random_bytes, Backend, Moat, Pki};

#[test]
fn server_mode_relays_megabytes_both_ways_for_concurrent_clients() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let addr = moat.addr();
    let config = client_config(&pki, Some("client"));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let config = config.clone();
            thread::spawn(move || {
                let data = random_bytes(3 << 20, 1 + i);
                let got = tls_transfer(addr, config, &data).expect("transfer");
                assert!(
                    got == data,
                    "client {i}: {} bytes back of {}, or different",
                    got.len(),
                    data.len()
                );
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let lines = moat.wait_for_count("end=clean", 6);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("to_target=3145728B") && l.contains("to_client=3145728B")),
        "{lines:#?}"
    );
}

#[test]
fn client_to_server_chain_relays_both_ways_for_hundreds_of_tunnels() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let entry = client.addr();

    // Hundreds of tunnels open at the same time, each checked, then all closed.
    let mut open: Vec<_> = (0..300).map(|_| connect(entry)).collect();
    for (i, stream) in open.iter_mut().enumerate() {
        let msg = format!("tunnel {i} says hello\n");
        stream.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    assert_eq!(backend.accepted(), 300);
    drop(open);

    // A few large transfers in both directions at once through both modes.
    let big: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                let data = random_bytes(4 << 20, 100 + i);
                let got = echo_roundtrip(connect(entry), data.clone(), |s| {
                    s.shutdown(Shutdown::Write).unwrap()
                });
                assert!(
                    got == data,
                    "stream {i}: {} of {} bytes, or different",
                    got.len(),
                    data.len()
                );
            })
        })
        .collect();
    for t in big {
        t.join().unwrap();
    }
}
