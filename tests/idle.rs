//! Idle tunnels hold no buffers: once the bytes in flight are delivered, every buffer a TLS
//! end borrowed is back in the pool. moat reports its pool on SIGUSR1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use common::{args, connect, Backend, Moat, Pki};

const TUNNELS: usize = 40;

fn stats(moat: &Moat, tunnels: usize) -> String {
    moat.signal("USR1");
    moat.wait_for(&format!("stats: tunnels={tunnels} buffers_in_use="))
}

fn assert_no_buffers(line: &str) {
    assert!(line.contains("buffers_in_use=0 "), "{line}");
}

#[test]
fn idle_tunnels_hold_no_buffers_in_either_mode() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));

    // Plain client → moat client mode → TLS → moat server mode → echo backend.
    let mut open: Vec<_> = (0..TUNNELS).map(|_| connect(client.addr())).collect();
    for (i, stream) in open.iter_mut().enumerate() {
        let message = format!("hello through tunnel {i}");
        stream.write_all(message.as_bytes()).unwrap();
        let mut got = vec![0; message.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, message.as_bytes());
    }
    assert_no_buffers(&stats(&client, TUNNELS));
    assert_no_buffers(&stats(&server, TUNNELS));

    drop(open);
    client.wait_for_count("end=clean", TUNNELS);
    server.wait_for_count("end=clean", TUNNELS);
    assert_no_buffers(&stats(&client, 0));
    assert_no_buffers(&stats(&server, 0));
}

#[test]
fn a_stalled_tunnel_gives_its_buffers_back_when_it_ends() {
    let pki = Pki::new();
    // A backend that never reads: what the client sends piles up in moat's buffers.
    let (keep_tx, keep_rx) = mpsc::channel::<TcpStream>();
    let keep_tx = Mutex::new(keep_tx);
    let backend = Backend::start(move |stream| keep_tx.lock().unwrap().send(stream).unwrap());
    let with_idle_timeout = |mut v: Vec<String>| {
        v.extend(["--idle-timeout".into(), "2s".into()]);
        v
    };
    let server = Moat::start(&args(&with_idle_timeout(
        pki.server_args(&backend.target()),
    )));
    let client = Moat::start(&args(&with_idle_timeout(
        pki.client_args(&server.addr().to_string()),
    )));

    // Write until the tunnel refuses more: every buffer on the way is full.
    let mut sender = connect(client.addr());
    sender
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let data = vec![7u8; 256 * 1024];
    while sender.write_all(&data).is_ok() {}
    let held = stats(&server, 1);
    assert!(!held.contains("buffers_in_use=0 "), "{held}");

    // The idle timeout ends the stalled tunnel, and its buffers go back.
    server.wait_for("end=idle timeout");
    client.wait_for("tunnel closed");
    assert_no_buffers(&stats(&server, 0));
    assert_no_buffers(&stats(&client, 0));
    drop(keep_rx);
}

/// A peer that sends the first byte of a record and goes quiet holds what it sent, not a
/// pooled buffer.
#[test]
fn a_started_record_does_not_pin_a_buffer() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let config = common::tls_client::client_config(&pki, Some("client"));
    let mut quiet = Vec::new();
    for _ in 0..10 {
        let mut tls = common::tls_client::tls_connect(server.addr(), config.clone());
        tls.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).unwrap();
        // The first byte of an application-data record header, and then nothing.
        tls.sock.write_all(&[0x17]).unwrap();
        quiet.push(tls);
    }
    backend.wait_accepted(10);
    // Stats are logged from the loop, after the bytes above were read.
    assert_no_buffers(&stats(&server, 10));
}
