//! Backpressure: a fast sender facing a receiver that stops reading fills bounded buffers
//! and is then not read from; moat's memory does not grow with what the sender offers.
//! Nothing is lost once the receiver reads again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{args, connect, random_bytes, Backend, Moat, Pki};

const CHUNK: usize = 256 * 1024;

#[test]
fn a_stalled_receiver_stops_the_sender_without_growing_moat() {
    let pki = Pki::new();
    // The backend hands its connection to the test and reads only when told.
    let (conn_tx, conn_rx) = mpsc::channel::<TcpStream>();
    let conn_tx = std::sync::Mutex::new(conn_tx);
    let backend = Backend::start(move |stream| conn_tx.lock().unwrap().send(stream).unwrap());
    let server_args = pki.server_args(&backend.target());
    let server = Moat::start(&args(&server_args));
    let client_args = pki.client_args(&server.addr().to_string());
    let client = Moat::start(&args(&client_args));
    let rss_before = [server.rss_kib(), client.rss_kib()];

    // Write until the tunnel refuses more for a whole second: every buffer on the way is full.
    let mut sender = connect(client.addr());
    sender
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let data = random_bytes(CHUNK, 3);
    let mut sent = 0usize;
    loop {
        match sender.write(&data[sent % CHUNK..]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
        assert!(
            sent < 512 << 20,
            "the tunnel took 512 MiB without anyone reading: no backpressure"
        );
    }
    // What is in flight is bounded by kernel socket buffers (three TCP connections) plus
    // moat's fixed buffers; it does not depend on how much the sender has to offer.
    assert!(sent < 96 << 20, "{} MiB in flight", sent >> 20);
    for (moat, before) in [(&server, rss_before[0]), (&client, rss_before[1])] {
        let grown = moat.rss_kib().saturating_sub(before);
        eprintln!("{} KiB in flight; moat grew by {grown} KiB", sent >> 10);
        assert!(
            grown < 4 * 1024,
            "moat grew by {grown} KiB while the receiver was stalled"
        );
    }

    // The receiver wakes up: every byte sent arrives, in order.
    let mut receiver = conn_rx
        .recv_timeout(common::PATIENCE)
        .expect("backend connection");
    receiver.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; sent];
        receiver.read_exact(&mut got).unwrap();
        got
    });
    let got = reader.join().unwrap();
    // The stream is `data` over and over.
    for (i, chunk) in got.chunks(CHUNK).enumerate() {
        assert!(
            chunk == &data[..chunk.len()],
            "chunk {i} of {} differs",
            sent.div_ceil(CHUNK)
        );
    }
}
