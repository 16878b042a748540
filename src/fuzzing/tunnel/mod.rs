//! One tunnel driven through in-memory streams: moat's own endpoint and relay code
//! ([`Endpoint`], [`Relay`]) over [`pipe::MemStream`]s, with a real rustls peer facing its
//! TLS end and a plain peer facing its plain end, the fuzz input deciding what happens when.
//!
//! ```text
//! server mode:  rustls client ──TLS──▶ [moat: TLS end ─ relay ─ plain end] ──▶ plain backend
//! client mode:  plain client ──▶ [moat: plain end ─ relay ─ TLS end] ──TLS──▶ rustls server
//! ```
//!
//! The input starts with three bytes: the mode, the TLS versions the peer offers and
//! whether moat's allow-list admits it; and the capacity of each connection (so writes come
//! up short and block). Then a script of operations, one byte each plus arguments: a peer
//! writes N bytes of its pattern, flushes or reads at most K bytes (chunking), closes
//! (`close_notify`, FIN, reset, close), starts a key update, or puts raw bytes on the wire;
//! readiness is marked on one of moat's sockets, or the poll's pending events delivered;
//! moat is driven once (handshake, then one relay turn), or its deadline passes; or the
//! whole thing runs until nothing moves. The script always ends with that, then the
//! deadline, then a last check.
//!
//! Checked, after every operation: no panic; the buffer pool lends at most a TLS end's
//! three windows, and at most one large one; each peer receives the start of what the
//! other sent, in order, byte for byte; a plain peer reads a clean EOF only after the TLS
//! peer ended its stream (`close_notify`, or a FIN, passed on as one) and a TLS peer reads
//! `close_notify` only after the plain peer sent its FIN, each then with every byte sent
//! before it. When nothing moves any more: every byte sent is received unless something
//! broke on the way; a tunnel both of whose peers closed cleanly has ended cleanly; an open
//! tunnel with healthy peers holds no buffer. At the very end, every buffer is back.

mod fixture;
mod peers;
mod pipe;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::Input;
use crate::buffer::BufferPool;
use crate::endpoint::{Endpoint, LingerStep, Lingering, Readiness, Session, Socket};
use crate::timer::TimerClass;
use crate::tls::notes;
use crate::tunnel::{tls_failure, EndReason, Relay, Side};

use fixture::{fixture, Versions};
use peers::{PlainPeer, StreamEnd, TlsPeer};
use pipe::{MemStream, Probe};

/// Most operations run from one input.
const MAX_OPS: usize = 2000;

/// Rounds of "run until nothing moves" before it counts as a livelock.
const MAX_ROUNDS: usize = 100_000;

/// Buffers one tunnel with one TLS end may hold between calls: the TLS end's three
/// windows (incoming, plaintext, outgoing). The relay's transit buffer and a lingering
/// end's scratch buffer go back before the call that took them returns.
const MAX_BUFFERS: usize = 3;

/// Runs one input; panics if an invariant breaks.
pub fn run(input: &[u8]) {
    let mut input = Input::new(input);
    let mut world = World::new(&mut input);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        world.apply(Op::decode(&mut input));
        world.check();
    }
    world.finish();
}

/// One step of the script.
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    TlsWrite(u16),
    TlsFlush(u16),
    TlsReceive(u16),
    PlainWrite(u16),
    PlainFlush(u16),
    PlainReceive(u16),
    MarkTls(Readiness),
    MarkPlain(Readiness),
    Poll,
    Drive,
    CloseNotify,
    TlsShutWrite,
    TlsReset,
    TlsClose,
    PlainShutWrite,
    PlainReset,
    PlainClose,
    KeyUpdate,
    Inject(&'a [u8]),
    Deadline,
    Settle,
}

impl<'a> Op<'a> {
    fn decode(input: &mut Input<'a>) -> Self {
        match input.byte() % 21 {
            0 => Self::TlsWrite(input.u16()),
            1 => Self::TlsFlush(input.u16()),
            2 => Self::TlsReceive(input.u16()),
            3 => Self::PlainWrite(input.u16()),
            4 => Self::PlainFlush(input.u16()),
            5 => Self::PlainReceive(input.u16()),
            6 => Self::MarkTls(readiness(input.byte())),
            7 => Self::MarkPlain(readiness(input.byte())),
            8 => Self::Poll,
            9 => Self::Drive,
            10 => Self::CloseNotify,
            11 => Self::TlsShutWrite,
            12 => Self::TlsReset,
            13 => Self::TlsClose,
            14 => Self::PlainShutWrite,
            15 => Self::PlainReset,
            16 => Self::PlainClose,
            17 => Self::KeyUpdate,
            18 => {
                let len = usize::from(input.byte());
                Self::Inject(input.bytes(len))
            }
            19 => Self::Deadline,
            _ => Self::Settle,
        }
    }
}

fn readiness(bits: u8) -> Readiness {
    Readiness {
        readable: bits & 1 != 0,
        writable: bits & 2 != 0,
        read_closed: bits & 4 != 0,
        write_closed: bits & 8 != 0,
    }
}

/// A connection's capacity in each direction: 16 to 512 bytes in steps of 16, or up to
/// 112 KiB in steps of 512.
fn capacity(byte: u8) -> usize {
    match byte {
        0..32 => (usize::from(byte) + 1) * 16,
        _ => (usize::from(byte) - 31) * 512,
    }
}

/// Which of moat's modes the tunnel is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// TLS downstream (moat accepts TLS), plain upstream.
    Server,
    /// Plain downstream, TLS upstream (moat opens TLS).
    Client,
}

/// moat's side of the tunnel, as the loop holds it.
#[derive(Debug)]
enum Moat {
    Open {
        tls_end: Endpoint<MemStream>,
        /// Server mode: `None` until the client's handshake is done and moat "dials".
        plain_end: Option<Endpoint<MemStream>>,
        relay: Relay,
    },
    /// Its end was logged; the TLS end drains its peer after a fatal alert.
    Lingering(Lingering<MemStream>),
    Ended,
}

/// The tunnel, its two peers, and what happened so far.
#[derive(Debug)]
struct World {
    shape: Shape,
    refusing: bool,
    plain_capacity: usize,
    pool: BufferPool,
    moat: Moat,
    tls: TlsPeer,
    plain: PlainPeer,
    /// How the tunnel ended, once it has.
    reason: Option<EndReason>,
    /// The harness let a deadline pass: moat closed with FINs, on nobody's request.
    timed_out: bool,
    /// The plain peer's EOF was checked against how the TLS peer's stream stood then.
    plain_eof_checked: bool,
    /// Watches on the connections (the plain one once it exists), to see any progress.
    probes: Vec<Probe>,
}

impl World {
    fn new(input: &mut Input<'_>) -> Self {
        let setup = input.byte();
        let shape = if setup & 1 == 0 {
            Shape::Server
        } else {
            Shape::Client
        };
        let versions = [
            Versions::Both,
            Versions::Tls12,
            Versions::Tls13,
            Versions::Both,
        ][usize::from(setup >> 1 & 3)];
        let refusing = setup >> 3 & 7 == 7;
        let (tls_capacity, plain_capacity) = (capacity(input.byte()), capacity(input.byte()));
        let fixture = fixture();
        let (moat_half, peer_half, tls_probe) = pipe::pair(tls_capacity);
        let mut probes = vec![tls_probe];
        let seeds = (0xA5, 0x5A);
        let mut plain = PlainPeer::new((seeds.1, seeds.0));
        let localhost = || ServerName::try_from("localhost").unwrap_or_else(|_| unreachable!());
        let (session, conn, plain_end) = match shape {
            Shape::Server => {
                let config = fixture.moat_server[usize::from(refusing)].clone();
                let session = UnbufferedServerConnection::new(config).map(Session::Server);
                let peer = ClientConnection::new(
                    fixture.peer_client[versions.index()].clone(),
                    localhost(),
                )
                .map(Connection::Client);
                (session, peer, None)
            }
            Shape::Client => {
                let config = fixture.moat_client[usize::from(refusing)].clone();
                let session =
                    UnbufferedClientConnection::new(config, localhost()).map(Session::Client);
                let peer = ServerConnection::new(fixture.peer_server[versions.index()].clone())
                    .map(Connection::Server);
                // Client mode connects to the target as soon as the client is accepted.
                let (moat_plain, peer_plain, probe) = pipe::pair(plain_capacity);
                plain.connect(peer_plain);
                probes.push(probe);
                (
                    session,
                    peer,
                    Some(Endpoint::plain(Socket::new(moat_plain))),
                )
            }
        };
        let (Ok(session), Ok(conn)) = (session, conn) else {
            panic!("a TLS connection could not be made from the fixture");
        };
        Self {
            shape,
            refusing,
            plain_capacity,
            pool: BufferPool::default(),
            moat: Moat::Open {
                tls_end: Endpoint::tls(Socket::new(moat_half), session),
                plain_end,
                relay: Relay::default(),
            },
            tls: TlsPeer::new(conn, peer_half, seeds),
            plain,
            reason: None,
            timed_out: false,
            plain_eof_checked: false,
            probes,
        }
    }

    /// The tunnel side moat's TLS end is on.
    fn tls_side(&self) -> Side {
        match self.shape {
            Shape::Server => Side::Client,
            Shape::Client => Side::Target,
        }
    }

    fn apply(&mut self, op: Op<'_>) {
        match op {
            Op::TlsWrite(n) => self.tls.write(n),
            Op::TlsFlush(limit) => drop(self.tls.flush(limit)),
            Op::TlsReceive(limit) => drop(self.tls.receive(limit, self.plain.sent)),
            Op::PlainWrite(n) => self.plain.write(n),
            Op::PlainFlush(limit) => drop(self.plain.flush(limit)),
            Op::PlainReceive(limit) => drop(self.plain.receive(limit, self.tls.sent)),
            Op::MarkTls(ready) => self.mark(true, ready),
            Op::MarkPlain(ready) => self.mark(false, ready),
            Op::Poll => drop(self.poll()),
            Op::Drive => drop(self.drive()),
            Op::CloseNotify => self.tls.close_notify(),
            Op::TlsShutWrite => self.tls.shut_write(),
            Op::TlsReset => self.tls.close(true),
            Op::TlsClose => self.tls.close(false),
            // rustls 0.23 asserts, in builds with debug assertions (fuzz builds), that a
            // connection sends at most one closing alert; a malformed record reaching moat's
            // TLS end after moat sent close_notify (passing on the plain peer's FIN) is
            // answered with a fatal alert and trips it (rustls issue 959; found here, see
            // fuzz/regressions/tunnel/). moat's release build has no debug assertions: the
            // tunnel just ends with the TLS error. So raw bytes and that half-close never meet.
            Op::PlainShutWrite | Op::PlainClose if self.tls.injected => {}
            Op::Inject(_) if self.plain.end.is_some() => {}
            Op::PlainShutWrite => self.plain.shut_write(),
            Op::PlainReset => self.plain.close(true),
            Op::PlainClose => self.plain.close(false),
            Op::KeyUpdate => self.tls.key_update(),
            Op::Inject(bytes) => self.tls.inject(bytes),
            Op::Deadline => self.deadline(),
            Op::Settle => {
                self.settle();
                self.check_quiet();
            }
        }
    }

    /// moat's socket on one side, while it has one.
    fn socket(&mut self, tls: bool) -> Option<&mut Socket<MemStream>> {
        match &mut self.moat {
            Moat::Open { tls_end, .. } if tls => tls_end.socket_mut(),
            Moat::Open { plain_end, .. } => plain_end.as_mut().and_then(|e| e.socket_mut()),
            // Only a TLS end lingers (after the fatal alert it sent).
            Moat::Lingering(end) if tls => Some(end.socket_mut()),
            _ => None,
        }
    }

    /// Marks readiness the poll did not necessarily report (mio allows spurious events).
    fn mark(&mut self, tls: bool, ready: Readiness) {
        if let Some(socket) = self.socket(tls) {
            socket.mark(ready);
        }
    }

    /// Hands each of moat's sockets the events its poll has for it. Returns whether any.
    fn poll(&mut self) -> bool {
        let mut any = false;
        for tls in [true, false] {
            if let Some(socket) = self.socket(tls) {
                let events = socket.stream().take_events();
                if events != Readiness::default() {
                    socket.mark(events);
                    any = true;
                }
            }
        }
        any
    }

    /// One turn of the loop for the tunnel, as `Tunnel::drive` and `end_tunnel` take it.
    /// Returns whether anything happened.
    fn drive(&mut self) -> bool {
        match &mut self.moat {
            Moat::Open { .. } => match self.step() {
                Ok(moved) => {
                    let finished = match &self.moat {
                        Moat::Open { relay, .. } => relay.is_finished().then(|| relay.clean_end()),
                        _ => None,
                    };
                    if let Some(reason) = finished {
                        self.end(reason);
                        return true;
                    }
                    moved
                }
                Err(reason) => {
                    self.end(reason);
                    true
                }
            },
            Moat::Lingering(end) => {
                let done = end.drive(&mut self.pool) == LingerStep::Done;
                if done {
                    self.moat = Moat::Ended;
                }
                done
            }
            Moat::Ended => false,
        }
    }

    /// The handshake, the "dial" (server mode), and one relay turn.
    fn step(&mut self) -> Result<bool, EndReason> {
        let tls_side = self.tls_side();
        let Moat::Open {
            tls_end,
            plain_end,
            relay,
        } = &mut self.moat
        else {
            return Ok(false);
        };
        let mut moved = false;
        if tls_end.is_handshaking() {
            let pool = &mut self.pool;
            let (stepped, notes) = notes::during(|| tls_end.handshake(pool));
            moved |= stepped.map_err(|e| tls_failure(tls_side, e, notes.refusal))?;
            if tls_end.is_handshaking() {
                return Ok(moved);
            }
        }
        let plain_end = match plain_end {
            Some(end) => end,
            None => {
                // Server mode dials the backend only once the client is authenticated.
                let (moat_half, peer_half, probe) = pipe::pair(self.plain_capacity);
                self.plain.connect(peer_half);
                self.probes.push(probe);
                moved = true;
                plain_end.insert(Endpoint::plain(Socket::new(moat_half)))
            }
        };
        let (down, up) = match self.shape {
            Shape::Server => (tls_end, plain_end),
            Shape::Client => (plain_end, tls_end),
        };
        let (ran, _budget_spent) = relay.run(down, up, &mut self.pool)?;
        Ok(moved || ran)
    }

    /// Closes moat's ends as `Tunnel::close` does for `reason`: a peer whose incoming
    /// stream did not end at its source is aborted (a reset towards a plain peer, no
    /// `close_notify` towards a TLS one), and a TLS end that sent a fatal alert lingers.
    fn end(&mut self, reason: EndReason) {
        let tls_side = self.tls_side();
        if let Moat::Open {
            tls_end,
            plain_end,
            relay,
        } = std::mem::replace(&mut self.moat, Moat::Ended)
        {
            let alerted = reason.alerted();
            let plain_side = match tls_side {
                Side::Client => Side::Target,
                Side::Target => Side::Client,
            };
            for (side, end) in [(tls_side, Some(tls_end)), (plain_side, plain_end)] {
                let Some(end) = end else { continue };
                let abort = !relay.towards(side).is_finished();
                if let Some(lingering) = end.close(&mut self.pool, alerted == Some(side), abort) {
                    self.moat = Moat::Lingering(lingering);
                }
            }
        }
        self.reason = Some(reason);
    }

    /// A deadline passes: an open tunnel ends (idle timeout), a lingering end is closed.
    fn deadline(&mut self) {
        match self.moat {
            Moat::Open { .. } => {
                self.timed_out = true;
                self.end(EndReason::Timeout(TimerClass::Idle));
            }
            Moat::Lingering(_) => self.moat = Moat::Ended,
            Moat::Ended => {}
        }
    }

    /// Everyone does all they can, events are delivered and moat driven, until nothing
    /// moves.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = self.tls.flush(0);
            moved |= self.tls.receive(0, self.plain.sent);
            moved |= self.plain.flush(0);
            moved |= self.plain.receive(0, self.tls.sent);
            moved |= self.poll();
            // Bytes moat took in count as progress even when no plaintext came of them yet:
            // they make room for the peer.
            let before: u64 = self.probes.iter().map(Probe::activity).sum();
            moved |= self.drive();
            moved |= self.probes.iter().map(Probe::activity).sum::<u64>() != before;
            self.check();
            if !moved {
                return;
            }
        }
        panic!("the tunnel still moves after {MAX_ROUNDS} rounds: a livelock");
    }

    /// The checks that hold after every operation.
    fn check(&mut self) {
        let (in_use, large) = (self.pool.in_use(), self.pool.large_in_use());
        assert!(in_use <= MAX_BUFFERS, "{in_use} buffers in use");
        assert!(large <= 1, "{large} large buffers in use");
        let (tls, plain) = (&self.tls, &self.plain);
        if self.timed_out {
            return;
        }
        // The EOF is judged against the TLS stream as it stood when the EOF came: a reset
        // the TLS peer sends later, with records still held behind a `close_notify` that
        // rustls put ahead of them, does not unsay an end moat had already passed on.
        if plain.saw_eof && !self.plain_eof_checked {
            self.plain_eof_checked = true;
            assert!(
                matches!(tls.end, Some(StreamEnd::Clean | StreamEnd::Truncated)),
                "the plain peer read EOF, but the TLS peer's stream ended {:?}",
                tls.end
            );
            if let (Some(StreamEnd::Clean), Some(at), false) =
                (tls.end, tls.close_notify_at, tls.injected)
            {
                assert_eq!(plain.received, at, "EOF before all the TLS peer sent");
            }
        }
        if tls.saw_close_notify {
            assert_eq!(
                plain.end,
                Some(StreamEnd::Clean),
                "close_notify, but the plain peer's stream did not end cleanly"
            );
            assert_eq!(tls.received, plain.sent, "close_notify before all of it");
        }
    }

    /// The checks that hold once nothing moves.
    fn check_quiet(&self) {
        let (tls, plain) = (&self.tls, &self.plain);
        let unbroken = !self.timed_out && matches!(self.reason, None | Some(EndReason::Clean));
        let tls_sound = !tls.failed && !tls.injected && !tls.is_handshaking();
        let plain_reads = !plain.closed && !plain.saw_reset;
        // A close_notify sent during the handshake goes out ahead of plaintext rustls
        // holds until the handshake ends, so only one sent after it is behind all of it.
        let tls_stream_whole = match tls.end {
            None => true,
            Some(StreamEnd::Clean) => tls.close_notify_at.is_some(),
            Some(_) => false,
        };
        if unbroken && tls_sound && tls_stream_whole && plain_reads {
            assert!(
                plain.is_connected(),
                "a sound handshake, but moat did not dial"
            );
            assert_eq!(plain.received, tls.sent, "bytes from the TLS peer stuck");
        }
        let tls_reads = !tls.deaf && !tls.failed && !tls.injected;
        if unbroken && tls_reads && matches!(plain.end, None | Some(StreamEnd::Clean)) {
            assert_eq!(tls.received, plain.sent, "bytes from the plain peer stuck");
        }
        let both_closed_cleanly = tls.end == Some(StreamEnd::Clean)
            && tls.close_notify_at.is_some()
            && plain.end == Some(StreamEnd::Clean)
            && tls_sound
            && !tls.deaf_by_closing()
            && !plain.closed
            && !self.timed_out
            && !self.refusing
            && !tls.stormed_key_updates();
        if both_closed_cleanly {
            assert!(
                matches!(self.reason, Some(EndReason::Clean)),
                "both peers closed cleanly, and the tunnel ended {:?}",
                self.reason
            );
            assert!(
                tls.saw_close_notify && plain.saw_eof,
                "an end not passed on"
            );
        }
        if let (Moat::Open { .. }, true, true) = (&self.moat, tls_sound && !tls.deaf, plain_reads) {
            // A record cut short by a FIN is parked like one whose sender went quiet, and
            // holds no buffer; only past 4 KiB (moat's `PARK_MAX`) may it keep one.
            let allowed = usize::from(tls.cut_record > 4096);
            let in_use = self.pool.in_use();
            assert!(in_use <= allowed, "a quiet tunnel holds {in_use} buffers");
        }
    }

    /// Runs out the script: until nothing moves, the last checks, then the deadlines, and
    /// every buffer must be back.
    fn finish(mut self) {
        self.settle();
        self.check_quiet();
        self.deadline();
        self.settle();
        self.deadline();
        assert_eq!(self.pool.in_use(), 0, "buffers not given back");
        assert_eq!(self.pool.large_in_use(), 0, "large buffers not given back");
    }
}

#[cfg(test)]
mod tests {
    /// Found by this target: a TLS peer that ended its stream with a FIN in the middle of
    /// a record left that record's start in a whole pooled buffer for the rest of the
    /// tunnel's life; it is now parked like the start of a record whose sender went quiet.
    #[test]
    fn a_record_cut_short_by_a_fin_holds_no_buffer() {
        super::run(include_bytes!(
            "../../../fuzz/regressions/tunnel/record-cut-short-by-fin"
        ));
    }

    /// Found by this target: see the note on raw bytes in `World::apply`.
    #[test]
    fn malformed_bytes_after_moat_sent_close_notify_are_kept_out() {
        super::run(include_bytes!(
            "../../../fuzz/regressions/tunnel/malformed-record-after-close-notify"
        ));
    }
}
