//! The fault matrix, part one: peers that abort, vanish, close early, stop reading, or break
//! their TLS session mid-stream. For each case the other side must learn what happened as
//! what it is — an abort as a reset (plain) or a missing `close_notify` (TLS), never as a
//! clean end — what arrives must be a prefix of what was sent, and moat must end with no
//! tunnel, no buffer and no descriptor left (see `common::fault::Watch`).
//!
//! docs/ROBUSTNESS.md ("Fault matrix") lists every case with its outcome on each side.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{mpsc, Mutex};

use common::fault::{plain_exchange, read_plain, reset, Close, Ending, Received, Script, Watch};
use common::matrix::{assert_ended, client, server, Reporting};
use common::tls_client::client_config;
use common::tls_peer::{extractable, tls_client, TlsTarget};
use common::{connect, random_bytes, Backend, Pki, PATIENCE};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};

const UP: usize = 256 * 1024;
const DOWN: usize = 1 << 20;

/// A backend that sends `down` while it reads, and ends as `close` says.
fn exchanging(down: Vec<u8>, close: Close) -> Reporting {
    Reporting::start(move |stream| plain_exchange(stream, Script::new(down.clone(), close)))
}

/// A port with nobody listening on it.
fn refused_target() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

// ---- server mode: TLS client → moat → plain backend ----

#[test]
fn server_client_reset_mid_transfer_reaches_the_backend_as_a_reset() {
    let pki = Pki::new();
    let backend = exchanging(random_bytes(DOWN, 101), Close::AfterPeerEnd);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let up = random_bytes(UP, 102);
    let config = client_config(&pki, Some("client"));
    let script = Script::new(up.clone(), Close::Reset).ending_after_receiving(64 * 1024);
    tls_client(moat.addr(), config, script);
    let at_backend = backend.report();
    assert_eq!(
        at_backend.ending,
        Ending::Reset,
        "the backend saw a clean end"
    );
    at_backend.assert_prefix_of(&up);
    assert_ended(&moat, &watch, "end=client");
}

#[test]
fn server_backend_reset_mid_transfer_reaches_the_client_without_close_notify() {
    let pki = Pki::new();
    let down = random_bytes(DOWN, 103);
    let backend = exchanging(down.clone(), Close::Reset);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let script = Script::new(random_bytes(UP, 104), Close::AfterPeerEnd);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    assert!(at_client.ending.is_tls_abort(), "{:?}", at_client.ending);
    at_client.assert_prefix_of(&down);
    assert_ended(&moat, &watch, "end=target");
}

/// A backend that accepts and closes before anything was sent to it ends its stream with a
/// FIN, which the client gets as `close_notify`; the client's own end then finishes the
/// tunnel cleanly.
#[test]
fn server_backend_closing_at_once_gives_the_client_close_notify() {
    let pki = Pki::new();
    let backend = Backend::start(drop);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let script = Script::new(Vec::new(), Close::AfterPeerEnd);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    at_client.assert_whole(b"", Ending::CloseNotify);
    assert_ended(&moat, &watch, "end=clean");
}

/// A backend that closes with the client's bytes unread resets the connection (that is
/// what the kernel does): the client must not get `close_notify`, since its bytes were lost.
#[test]
fn server_backend_closing_with_data_pending_reaches_the_client_as_an_abort() {
    let pki = Pki::new();
    let backend = Backend::start(|stream: TcpStream| {
        // Wait until the client's bytes are there, then close without reading them.
        let _ = stream.peek(&mut [0; 1]);
    });
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let script = Script::new(random_bytes(64 * 1024, 105), Close::AfterPeerEnd);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    assert!(at_client.ending.is_tls_abort(), "{:?}", at_client.ending);
    assert_ended(&moat, &watch, "end=target");
}

/// A backend that accepts and never reads: the client's writes stop by backpressure, moat
/// does not grow, and the idle timeout ends the tunnel. Bytes the client was told were
/// taken never reached the backend, so neither side may see a clean end.
#[test]
fn server_backend_that_never_reads_is_cut_at_the_idle_timeout_as_an_abort() {
    let pki = Pki::new();
    let (streams_tx, streams) = mpsc::channel::<TcpStream>();
    let streams_tx = Mutex::new(streams_tx);
    let backend = Backend::start(move |stream| streams_tx.lock().unwrap().send(stream).unwrap());
    let moat = server(&pki, &backend.target(), &["--idle-timeout", "1s"]);
    let watch = Watch::new(&moat);
    let up = random_bytes(24 << 20, 106);
    let script = Script::new(up.clone(), Close::AfterSending);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    assert!(
        at_client.sent < up.len(),
        "the client sent all {} MiB to a backend that never reads: no backpressure",
        up.len() >> 20
    );
    assert!(at_client.ending.is_tls_abort(), "{:?}", at_client.ending);
    let grown = watch.peak_growth_kib();
    eprintln!(
        "the client sent {} KiB before backpressure stopped it; moat rose by {grown} KiB",
        at_client.sent >> 10
    );
    assert!(grown < 4 * 1024, "moat grew by {grown} KiB");
    let line = assert_ended(&moat, &watch, "end=idle timeout");
    // Only now does the backend look at what it was given.
    let mut stream = streams.recv_timeout(PATIENCE).expect("backend connection");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let at_backend = read_plain(&mut stream, None);
    at_backend.assert_prefix_of(&up);
    assert_eq!(
        at_backend.ending,
        Ending::Reset,
        "the backend saw a clean end after {} of the {} bytes the client sent; {line}",
        at_backend.got.len(),
        at_client.sent
    );
}

/// An idle tunnel cut at the idle timeout: neither peer ended its stream, so neither may
/// be told it did. (An upload that merely paused for longer must not pass for complete.)
#[test]
fn server_idle_tunnel_cut_at_the_idle_timeout_reaches_both_peers_as_an_abort() {
    let pki = Pki::new();
    let backend = exchanging(b"pong".to_vec(), Close::AfterPeerEnd);
    let moat = server(&pki, &backend.target(), &["--idle-timeout", "1s"]);
    let watch = Watch::new(&moat);
    let script = Script::new(b"ping".to_vec(), Close::AfterPeerEnd);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    assert!(at_client.ending.is_tls_abort(), "{:?}", at_client.ending);
    assert_eq!(at_client.got, b"pong");
    let at_backend = backend.report();
    at_backend.assert_whole(b"ping", Ending::Reset);
    assert_ended(&moat, &watch, "end=idle timeout");
}

/// The backend ended its stream (the client got it as `close_notify`) but the client never
/// ends its own: at the close timeout the backend learns that the client's stream was cut.
#[test]
fn server_close_timeout_after_the_backend_ended_resets_the_backend() {
    let pki = Pki::new();
    let down = random_bytes(64 * 1024, 113);
    let backend = exchanging(down.clone(), Close::AfterSending);
    let moat = server(&pki, &backend.target(), &["--close-timeout", "1s"]);
    let watch = Watch::new(&moat);
    let up = random_bytes(64 * 1024, 114);
    // The client reads the backend's whole stream and its end, and never ends its own.
    let (done_tx, done) = mpsc::channel();
    let config = client_config(&pki, Some("client"));
    let addr = moat.addr();
    let client_up = up.clone();
    std::thread::spawn(move || {
        let mut tls = common::tls_client::tls_connect(addr, config);
        tls.write_all(&client_up).unwrap();
        tls.flush().unwrap();
        let mut got = Vec::new();
        let read = std::io::Read::read_to_end(&mut tls, &mut got);
        let _ = done_tx.send((got, read.map_err(|e| e.kind())));
        // Hold the connection (and its unsent end) until the test is over.
        std::thread::sleep(PATIENCE);
    });
    let (got, read) = done.recv_timeout(PATIENCE).expect("the client's read");
    common::fault::assert_same(&got, &down);
    assert_eq!(read, Ok(got.len()), "the client did not get close_notify");
    let at_backend = backend.report();
    at_backend.assert_whole(&up, Ending::Reset);
    assert_ended(&moat, &watch, "end=close timeout");
}

/// Half a ClientHello, then `end`: moat gives up on the handshake, never dials the
/// backend, and closes without a reset.
fn vanish_mid_handshake(end: Close) {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let mut conn = ClientConnection::new(
        client_config(&pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut sock = connect(moat.addr());
    sock.write_all(&hello[..hello.len() / 2]).unwrap();
    let expected_end = match end {
        Close::AfterSending => {
            sock.shutdown(std::net::Shutdown::Write).unwrap();
            let at_client = read_plain(&mut sock, None);
            at_client.assert_whole(b"", Ending::Fin);
            "end=client closed during the TLS handshake"
        }
        _ => {
            reset(sock);
            "end=client Connection reset"
        }
    };
    assert_ended(&moat, &watch, expected_end);
    assert_eq!(backend.accepted(), 0);
}

#[test]
fn server_client_vanishing_mid_handshake_with_a_fin() {
    vanish_mid_handshake(Close::AfterSending);
}

#[test]
fn server_client_vanishing_mid_handshake_with_a_reset() {
    vanish_mid_handshake(Close::Reset);
}

/// Every target refuses: the client, whose handshake is done, gets no `close_notify`.
#[test]
fn server_refusing_target_reaches_the_client_without_close_notify() {
    let pki = Pki::new();
    let moat = server(&pki, &refused_target(), &[]);
    let watch = Watch::new(&moat);
    let script = Script::new(b"hello".to_vec(), Close::AfterPeerEnd);
    let at_client = tls_client(moat.addr(), client_config(&pki, Some("client")), script);
    assert!(at_client.ending.is_tls_abort(), "{:?}", at_client.ending);
    assert_ended(&moat, &watch, "end=cannot connect to target");
}

/// The client sends data, then a fatal alert: an aborted session, which the backend must
/// see as a reset, not as the end of a complete upload.
#[test]
fn server_client_alert_mid_stream_reaches_the_backend_as_a_reset() {
    let pki = Pki::new();
    // The backend speaks first, so the client knows the tunnel is through.
    let backend = exchanging(b"ready".to_vec(), Close::AfterPeerEnd);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let up = random_bytes(UP, 107);
    let config = extractable(client_config(&pki, Some("client")));
    let script = Script::new(up.clone(), Close::Alert(AlertDescription::InternalError))
        .ending_after_receiving(5);
    tls_client(moat.addr(), config, script);
    let at_backend = backend.report();
    assert_eq!(
        at_backend.ending,
        Ending::Reset,
        "the backend saw a clean end"
    );
    at_backend.assert_prefix_of(&up);
    assert_ended(
        &moat,
        &watch,
        "end=tls error with client: received fatal alert",
    );
}

/// A record that does not decrypt, mid-stream: moat answers with its own fatal alert, which
/// reaches the client (a lingering close keeps a reset from destroying it), and the backend
/// sees a reset.
#[test]
fn server_corrupt_record_mid_stream_gets_the_client_an_alert_and_the_backend_a_reset() {
    let pki = Pki::new();
    let backend = exchanging(b"ready".to_vec(), Close::AfterPeerEnd);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let up = random_bytes(UP, 108);
    let config = extractable(client_config(&pki, Some("client")));
    let script = Script::new(up.clone(), Close::CorruptRecord).ending_after_receiving(5);
    let at_client = tls_client(moat.addr(), config, script);
    assert_eq!(
        at_client.ending,
        Ending::Alert(AlertDescription::BadRecordMac)
    );
    let at_backend = backend.report();
    assert_eq!(
        at_backend.ending,
        Ending::Reset,
        "the backend saw a clean end"
    );
    at_backend.assert_prefix_of(&up);
    assert_ended(&moat, &watch, "end=tls error with client");
}

/// The backend ends first, so moat passes its FIN on as `close_notify`; the client, still
/// sending into the half-closed session, then sends a record that does not decrypt. rustls
/// answers a connection that already sent `close_notify` with a fatal alert, and debug-asserts
/// that it never does (rustls issue 959): a peer must not be able to stop moat's loop that
/// way, not even in a debug build. The tunnel ends as a TLS error, the backend sees a reset,
/// the client EOF (moat's write side is already shut), and moat goes on serving.
#[test]
fn server_corrupt_record_after_moat_sent_close_notify_ends_only_that_tunnel() {
    let pki = Pki::new();
    let backend = exchanging(b"ready".to_vec(), Close::AfterSending);
    let moat = server(&pki, &backend.target(), &[]);
    let watch = Watch::new(&moat);
    let up = random_bytes(UP, 111);
    let config = extractable(client_config(&pki, Some("client")));
    let script = Script::new(up.clone(), Close::CorruptRecordAfterPeerEnd);
    let at_client = tls_client(moat.addr(), config, script);
    assert_eq!(at_client.got, b"ready");
    let at_backend = backend.report();
    assert_eq!(
        at_backend.ending,
        Ending::Reset,
        "the backend saw a clean end"
    );
    at_backend.assert_prefix_of(&up);
    assert_ended(&moat, &watch, "end=tls error with client");
    // moat's write side was already shut after its close_notify: the client reads EOF,
    // never a reset that could destroy what it was sent.
    assert_ne!(at_client.ending, Ending::Reset);
    // Still serving: the next tunnel goes through whole.
    let config = client_config(&pki, Some("client"));
    let next = tls_client(
        moat.addr(),
        config,
        Script::new(b"hi".to_vec(), Close::AfterPeerEnd),
    );
    assert_eq!(
        (next.got.as_slice(), next.ending),
        (&b"ready"[..], Ending::CloseNotify)
    );
}

// ---- client mode: plain client → moat → TLS target ----

#[test]
fn client_plain_reset_mid_transfer_reaches_the_target_without_close_notify() {
    let pki = Pki::new();
    let target = TlsTarget::start(
        &pki,
        Script::new(random_bytes(DOWN, 109), Close::AfterPeerEnd),
    );
    let moat = client(&pki, &target.target(), &[]);
    let watch = Watch::new(&moat);
    let up = random_bytes(UP, 110);
    let script = Script::new(up.clone(), Close::Reset).ending_after_receiving(64 * 1024);
    plain_exchange(connect(moat.addr()), script);
    let at_target = target.report();
    assert!(at_target.ending.is_tls_abort(), "{:?}", at_target.ending);
    at_target.assert_prefix_of(&up);
    assert_ended(&moat, &watch, "end=client");
}

/// A TLS target that accepts and closes at once never completes the handshake: the plain
/// client must see a reset, not a FIN that would pass for an empty answer.
#[test]
fn client_target_closing_at_once_reaches_the_plain_client_as_a_reset() {
    let pki = Pki::new();
    let target = Backend::start(drop);
    let moat = client(&pki, &target.target(), &[]);
    let watch = Watch::new(&moat);
    let at_client = plain_exchange(
        connect(moat.addr()),
        Script::new(Vec::new(), Close::AfterPeerEnd),
    );
    assert_eq!(at_client.ending, Ending::Reset, "{at_client:?}");
    assert_ended(&moat, &watch, "end=target closed during the TLS handshake");
}

/// A target that accepts and never answers the TLS handshake: at the handshake timeout the
/// plain client is reset, not told that the server had nothing to say.
#[test]
fn client_target_silent_in_its_handshake_reaches_the_plain_client_as_a_reset() {
    let pki = Pki::new();
    let (held_tx, held) = mpsc::channel::<TcpStream>();
    let held_tx = Mutex::new(held_tx);
    let target = Backend::start(move |stream| held_tx.lock().unwrap().send(stream).unwrap());
    let moat = client(&pki, &target.target(), &["--handshake-timeout", "300ms"]);
    let watch = Watch::new(&moat);
    let script = Script::new(Vec::new(), Close::AfterPeerEnd);
    let at_client = plain_exchange(connect(moat.addr()), script);
    assert_eq!(at_client.ending, Ending::Reset, "{at_client:?}");
    assert_ended(&moat, &watch, "end=handshake timeout");
    drop(held);
}

#[test]
fn client_refusing_target_reaches_the_plain_client_as_a_reset() {
    let pki = Pki::new();
    let moat = client(&pki, &refused_target(), &[]);
    let watch = Watch::new(&moat);
    let at_client = plain_exchange(
        connect(moat.addr()),
        Script::new(Vec::new(), Close::AfterPeerEnd),
    );
    assert_eq!(at_client.ending, Ending::Reset, "{at_client:?}");
    assert_ended(&moat, &watch, "end=cannot connect to target");
}

#[test]
fn client_target_alert_mid_stream_reaches_the_plain_client_as_a_reset() {
    let pki = Pki::new();
    let down = random_bytes(DOWN, 111);
    let alert = Close::Alert(AlertDescription::InternalError);
    let target = TlsTarget::start(&pki, Script::new(down.clone(), alert));
    let moat = client(&pki, &target.target(), &[]);
    let watch = Watch::new(&moat);
    let at_client = plain_exchange(
        connect(moat.addr()),
        Script::new(Vec::new(), Close::AfterPeerEnd),
    );
    assert_eq!(
        at_client.ending,
        Ending::Reset,
        "the plain client saw a clean end"
    );
    at_client.assert_prefix_of(&down);
    target.report();
    assert_ended(
        &moat,
        &watch,
        "end=tls error with target: received fatal alert",
    );
}

#[test]
fn client_target_corrupt_record_gets_the_target_an_alert_and_the_plain_client_a_reset() {
    let pki = Pki::new();
    let down = random_bytes(UP, 112);
    let target = TlsTarget::start(&pki, Script::new(down.clone(), Close::CorruptRecord));
    let moat = client(&pki, &target.target(), &[]);
    let watch = Watch::new(&moat);
    let at_client = plain_exchange(
        connect(moat.addr()),
        Script::new(Vec::new(), Close::AfterPeerEnd),
    );
    assert_eq!(
        at_client.ending,
        Ending::Reset,
        "the plain client saw a clean end"
    );
    at_client.assert_prefix_of(&down);
    let at_target: Received = target.report();
    assert_eq!(
        at_target.ending,
        Ending::Alert(AlertDescription::BadRecordMac)
    );
    assert_ended(&moat, &watch, "end=tls error with target");
}
