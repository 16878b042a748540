//! The fault matrix, part two: streams that end cleanly under stress — both sides
//! half-closing in every order with data in flight each way, a reader slow on either side
//! (under one-second idle and close timeouts), and a storm of TLS key updates. Every byte
//! must arrive, in order, followed by the right end: FIN at a plain peer, `close_notify` at a
//! TLS one; the tunnel ends `clean`, and moat keeps no tunnel, buffer or descriptor (see
//! `common::fault::Watch`).
//!
//! docs/ROBUSTNESS.md ("Fault matrix") lists every case with its outcome on each side.

mod common;

use std::time::Duration;

use common::fault::{plain_exchange, Close, Ending, Script, Watch};
use common::matrix::{assert_ended, client, server, Reporting};
use common::tls_client::client_config;
use common::tls_peer::{tls_client, TlsTarget};
use common::{connect, random_bytes, Pki};

const FLOW: usize = 1 << 20;
/// More than the kernel buffers on the way (a send buffer grows to 4 MiB here), so moat
/// itself must hold back the fast side.
const SLOW_FLOW: usize = 8 << 20;
const TIMEOUTS: [&str; 4] = ["--idle-timeout", "1s", "--close-timeout", "1s"];

/// A plain backend that follows `script` on each connection.
fn backend(script: Script) -> Reporting {
    Reporting::start(move |stream| plain_exchange(stream, script.clone()))
}

/// Server mode: the TLS client follows `at_client`, the backend `at_backend`; each must
/// receive all the other sent, then its clean end.
fn server_flow(at_client: Script, at_backend: Script, flags: &[&str]) {
    let pki = Pki::new();
    let (up, down) = (at_client.data.clone(), at_backend.data.clone());
    let backend = backend(at_backend);
    let moat = server(&pki, &backend.target(), flags);
    let watch = Watch::new(&moat);
    let client = tls_client(moat.addr(), client_config(&pki, Some("client")), at_client);
    client.assert_whole(&down, Ending::CloseNotify);
    backend.report().assert_whole(&up, Ending::Fin);
    let grown = watch.peak_growth_kib();
    eprintln!("moat's resident memory rose by {grown} KiB at its peak");
    assert!(grown < 4 * 1024, "moat grew by {grown} KiB");
    assert_ended(&moat, &watch, "end=clean");
}

/// Client mode: the plain client follows `at_client`, the TLS target `at_target`.
fn client_flow(at_client: Script, at_target: Script, flags: &[&str]) {
    let pki = Pki::new();
    let (up, down) = (at_client.data.clone(), at_target.data.clone());
    let target = TlsTarget::start(&pki, at_target);
    let moat = client(&pki, &target.target(), flags);
    let watch = Watch::new(&moat);
    let client = plain_exchange(connect(moat.addr()), at_client);
    client.assert_whole(&down, Ending::Fin);
    target.report().assert_whole(&up, Ending::CloseNotify);
    let grown = watch.peak_growth_kib();
    eprintln!("moat's resident memory rose by {grown} KiB at its peak");
    assert!(grown < 4 * 1024, "moat grew by {grown} KiB");
    assert_ended(&moat, &watch, "end=clean");
}

fn flows(seed: u64) -> (Vec<u8>, Vec<u8>) {
    (random_bytes(FLOW, seed), random_bytes(FLOW, seed + 1))
}

// ---- half-close in every order, with data in flight each way ----

#[test]
fn server_half_close_client_first() {
    let (up, down) = flows(201);
    server_flow(
        Script::new(up, Close::AfterSending),
        Script::new(down, Close::AfterPeerEnd),
        &[],
    );
}

#[test]
fn server_half_close_backend_first() {
    let (up, down) = flows(203);
    server_flow(
        Script::new(up, Close::AfterPeerEnd),
        Script::new(down, Close::AfterSending),
        &[],
    );
}

#[test]
fn server_half_close_both_at_once() {
    let (up, down) = flows(205);
    server_flow(
        Script::new(up, Close::AfterSending),
        Script::new(down, Close::AfterSending),
        &[],
    );
}

#[test]
fn client_half_close_plain_client_first() {
    let (up, down) = flows(207);
    client_flow(
        Script::new(up, Close::AfterSending),
        Script::new(down, Close::AfterPeerEnd),
        &[],
    );
}

#[test]
fn client_half_close_target_first() {
    let (up, down) = flows(209);
    client_flow(
        Script::new(up, Close::AfterPeerEnd),
        Script::new(down, Close::AfterSending),
        &[],
    );
}

#[test]
fn client_half_close_both_at_once() {
    let (up, down) = flows(211);
    client_flow(
        Script::new(up, Close::AfterSending),
        Script::new(down, Close::AfterSending),
        &[],
    );
}

// ---- a slow reader on either side, under one-second idle and close timeouts ----
//
// moat hands the kernel all it can at once, so while a slow reader works through what the
// kernel holds for it, moat itself sees no traffic for longer than the timeouts: they must
// see that the reader is still taking bytes.

#[test]
fn server_client_reading_slowly_from_a_fast_backend() {
    server_flow(
        Script::new(b"send me everything".to_vec(), Close::AfterSending)
            .reading_slowly(Duration::from_millis(1)),
        Script::new(random_bytes(SLOW_FLOW, 213), Close::AfterSending),
        &TIMEOUTS,
    );
}

#[test]
fn server_backend_reading_slowly_from_a_fast_client() {
    server_flow(
        Script::new(random_bytes(SLOW_FLOW, 214), Close::AfterSending),
        Script::new(b"all of it, thanks".to_vec(), Close::AfterPeerEnd)
            .reading_slowly(Duration::from_millis(1)),
        &TIMEOUTS,
    );
}

#[test]
fn client_plain_client_reading_slowly_from_a_fast_target() {
    client_flow(
        Script::new(b"send me everything".to_vec(), Close::AfterSending)
            .reading_slowly(Duration::from_millis(1)),
        Script::new(random_bytes(SLOW_FLOW, 215), Close::AfterSending),
        &TIMEOUTS,
    );
}

#[test]
fn client_target_reading_slowly_from_a_fast_plain_client() {
    client_flow(
        Script::new(random_bytes(SLOW_FLOW, 216), Close::AfterSending),
        Script::new(b"all of it, thanks".to_vec(), Close::AfterPeerEnd)
            .reading_slowly(Duration::from_millis(1)),
        &TIMEOUTS,
    );
}

// ---- key update storms: hundreds of KeyUpdate requests while data flows both ways ----
//
// rustls refuses more than 32 key updates in a row without application data between them
// (as BoringSSL does), so the storm is spread over the data: one request every few KiB.

const KEY_UPDATES: usize = 300;

#[test]
fn server_client_key_update_storm() {
    let (up, down) = flows(217);
    server_flow(
        Script::new(up, Close::AfterSending).with_key_updates(KEY_UPDATES),
        Script::new(down, Close::AfterPeerEnd),
        &[],
    );
}

#[test]
fn client_target_key_update_storm() {
    let (up, down) = flows(219);
    client_flow(
        Script::new(up, Close::AfterSending),
        Script::new(down, Close::AfterPeerEnd).with_key_updates(KEY_UPDATES),
        &[],
    );
}
