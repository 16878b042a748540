//! A TLS peer for fault injection, client or server, that follows a script: send data
//! (asking for key updates on the way), end its stream in a chosen way — `close_notify`,
//! a reset, a fatal alert, a record that does not decrypt — and read everything the other
//! side sends, telling `close_notify` from a truncation, a reset and an alert.
//!
//! It runs on one nonblocking socket, so both directions move at once. Alerts and bad
//! records are not something rustls sends on request: for those the peer takes the
//! session's traffic keys (`dangerous_extract_secrets`) and writes the record itself.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Instant;

use mio::{Events, Interest, Poll, Token};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, Connection, ConnectionTrafficSecrets,
    ContentType, ProtocolVersion, ServerConfig, ServerConnection, SupportedCipherSuite,
};

use super::fault::{Close, Ending, Received, Script, PAUSE_EVERY};
use super::{Pki, PATIENCE};

/// A client configuration that lets the peer take its traffic keys (for alerts and bad
/// records of its own making).
pub fn extractable(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// Connects to `addr` as a TLS client with `config` and runs `script`.
pub fn tls_client(addr: SocketAddr, config: Arc<ClientConfig>, script: Script) -> Received {
    let sock = super::connect(addr);
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .expect("client connection");
    TlsPeer::new(sock, conn.into(), script).run()
}

/// A TLS server on loopback (the test PKI's server certificate, no client authentication)
/// that runs a script on each connection and reports what it received.
pub struct TlsTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    reports: Mutex<mpsc::Receiver<Received>>,
}

impl TlsTarget {
    /// Starts a target that runs `script` on every connection.
    pub fn start(pki: &Pki, script: Script) -> Self {
        let config = server_config(pki);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS target");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { continue };
                let (config, script, tx) = (config.clone(), script.clone(), tx.clone());
                thread::spawn(move || {
                    let conn = ServerConnection::new(config).expect("server connection");
                    let _ = tx.send(TlsPeer::new(sock, conn.into(), script).run());
                });
            }
        });
        Self {
            addr,
            reports: Mutex::new(rx),
        }
    }

    /// This target's address, for `--target`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// What the next connection to end received, and how it ended.
    pub fn report(&self) -> Received {
        self.reports
            .lock()
            .unwrap()
            .recv_timeout(PATIENCE * 2)
            .expect("the TLS target's report")
    }
}

fn server_config(pki: &Pki) -> Arc<ServerConfig> {
    let id = pki.identity("server");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&id.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&id.key).unwrap();
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// One TLS peer running its script; see the module documentation.
struct TlsPeer {
    /// The same socket, blocking, for the end of a script that leaves rustls behind.
    raw: TcpStream,
    sock: mio::net::TcpStream,
    conn: Connection,
    script: Script,
    sent: usize,
    updates: usize,
    /// Our `close_notify` has been queued.
    closed: bool,
    /// Writing failed; what is left is to read.
    write_dead: bool,
    tcp_eof: bool,
    /// Bytes read from the socket, for the pauses of a slow reader.
    wire_read: usize,
    got: Vec<u8>,
    ending: Option<Ending>,
}

impl TlsPeer {
    fn new(sock: TcpStream, conn: Connection, script: Script) -> Self {
        let raw = sock.try_clone().expect("clone socket");
        sock.set_nonblocking(true).expect("nonblocking");
        Self {
            raw,
            sock: mio::net::TcpStream::from_std(sock),
            conn,
            script,
            sent: 0,
            updates: 0,
            closed: false,
            write_dead: false,
            tcp_eof: false,
            wire_read: 0,
            got: Vec::new(),
            ending: None,
        }
    }

    fn run(mut self) -> Received {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(16);
        poll.registry()
            .register(
                &mut self.sock,
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        let deadline = Instant::now() + PATIENCE * 2;
        loop {
            while self.step() {}
            if let Some(ending) = self.finished() {
                return Received {
                    got: self.got,
                    ending,
                    sent: self.sent,
                };
            }
            if self.finale_due() {
                return self.finale();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let ending = Ending::Failed(format!("no end after {:?}", PATIENCE * 2));
                return Received {
                    got: self.got,
                    ending,
                    sent: self.sent,
                };
            }
            poll.poll(&mut events, Some(left)).expect("poll");
        }
    }

    /// One pass over everything that can move; returns whether anything did.
    fn step(&mut self) -> bool {
        let mut moved = self.feed();
        moved |= self.write_records();
        moved |= self.read_records();
        moved |= self.take_plaintext();
        moved && self.ending_is_final().is_none()
    }

    /// Hands rustls the next piece of the script: data, a key update, `close_notify`.
    fn feed(&mut self) -> bool {
        if self.conn.is_handshaking() || self.conn.wants_write() || self.write_dead || self.closed {
            return false;
        }
        let len = self.script.data.len();
        if self.sent < len {
            let wanted = self.script.key_updates;
            let next_update = (self.updates + 1) * len / (wanted + 1);
            if self.updates < wanted && self.sent >= next_update {
                self.conn
                    .refresh_traffic_keys()
                    .expect("ask for a key update");
                self.updates += 1;
                return true;
            }
            let mut end = (self.sent + 16 * 1024).min(len);
            if self.updates < wanted {
                end = end.min(next_update.max(self.sent + 1));
            }
            let n = self
                .conn
                .writer()
                .write(&self.script.data[self.sent..end])
                .expect("rustls takes plaintext");
            self.sent += n;
            return n > 0;
        }
        let close_now = match self.script.close {
            Close::AfterSending => true,
            Close::AfterPeerEnd => self.ending.is_some(),
            _ => false,
        };
        if close_now {
            self.conn.send_close_notify();
            self.closed = true;
        }
        close_now
    }

    fn write_records(&mut self) -> bool {
        let mut moved = false;
        while self.conn.wants_write() && !self.write_dead {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The kernel reports a reset once: if the write met it, it is the end.
                    if e.kind() == io::ErrorKind::ConnectionReset && self.ending.is_none() {
                        self.ending = Some(Ending::Reset);
                    }
                    self.write_dead = true;
                    moved = true;
                }
            }
        }
        moved
    }

    fn read_records(&mut self) -> bool {
        if self.tcp_eof || self.ending_is_final().is_some() || !self.conn.wants_read() {
            return false;
        }
        match self.conn.read_tls(&mut self.sock) {
            Ok(0) => self.tcp_eof = true,
            Ok(n) => {
                let before = self.wire_read;
                self.wire_read += n;
                let crossed = before / PAUSE_EVERY != self.wire_read / PAUSE_EVERY;
                if let Some(pause) = self.script.read_pause.filter(|_| crossed) {
                    thread::sleep(pause);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                self.tcp_eof = true;
                self.ending.get_or_insert(match e.kind() {
                    io::ErrorKind::ConnectionReset => Ending::Reset,
                    _ => Ending::Failed(e.to_string()),
                });
                return true;
            }
        }
        if let Err(e) = self.conn.process_new_packets() {
            self.ending.get_or_insert(match e {
                rustls::Error::AlertReceived(alert) => Ending::Alert(alert),
                other => Ending::Failed(other.to_string()),
            });
        }
        true
    }

    fn take_plaintext(&mut self) -> bool {
        let mut moved = false;
        let mut buf = [0u8; 16 * 1024];
        while !matches!(self.ending, Some(Ending::CloseNotify)) {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => {
                    self.ending.get_or_insert(Ending::CloseNotify);
                    moved = true;
                }
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        self.ending.get_or_insert(Ending::Truncated);
                    } else {
                        self.ending.get_or_insert(Ending::Failed(e.to_string()));
                    }
                    break;
                }
            }
        }
        moved
    }

    /// An ending after which nothing more will come or go.
    fn ending_is_final(&self) -> Option<&Ending> {
        self.ending
            .as_ref()
            .filter(|e| !matches!(e, Ending::CloseNotify))
    }

    /// How the script ended, once it has: an abort at once; `close_notify` once our own
    /// end is written out too.
    fn finished(&self) -> Option<Ending> {
        if let Some(ending) = self.ending_is_final() {
            return Some(ending.clone());
        }
        let ours_done = (self.closed && !self.conn.wants_write()) || self.write_dead;
        match &self.ending {
            Some(Ending::CloseNotify)
                if ours_done
                    || (self.finale_due()
                        && self.script.close != Close::CorruptRecordAfterPeerEnd) =>
            {
                Some(Ending::CloseNotify)
            }
            _ => None,
        }
    }

    /// Whether everything was sent and the script ends with something rustls does not do.
    fn finale_due(&self) -> bool {
        let due = match self.script.close {
            Close::Reset | Close::Alert(_) | Close::CorruptRecord => true,
            Close::CorruptRecordAfterPeerEnd => self.ending == Some(Ending::CloseNotify),
            Close::AfterSending | Close::AfterPeerEnd => false,
        };
        due && !self.conn.is_handshaking()
            && self.sent == self.script.data.len()
            && self.got.len() >= self.script.end_after_receiving
            && !self.conn.wants_write()
    }

    /// Ends the script without rustls: a reset, or a record written with the session's own
    /// keys; then reads what comes back on the raw socket, decrypting it with the same keys.
    ///
    /// Part of a record that rustls read but could not yet decrypt would be lost here; the
    /// cases that read moat's answer make sure nothing else is on its way by then.
    fn finale(mut self) -> Received {
        // Take what already arrived first: the keys' sequence numbers count it.
        while self.step() {}
        let close = self.script.close;
        if close == Close::Reset {
            super::fault::reset(self.raw);
            return Received {
                got: self.got,
                ending: Ending::Reset,
                sent: self.sent,
            };
        }
        let suite = match self.conn.negotiated_cipher_suite() {
            Some(SupportedCipherSuite::Tls13(suite)) => suite,
            other => panic!("alerts of our own need TLS 1.3, not {other:?}"),
        };
        let secrets = self
            .conn
            .dangerous_extract_secrets()
            .expect("the session's traffic keys");
        let (tx_seq, tx) = secrets.tx;
        let (key, iv) = key_and_iv(tx);
        let mut encrypter: Box<dyn MessageEncrypter> = suite.aead_alg.encrypter(key, iv);
        let (typ, payload) = match close {
            Close::Alert(alert) => (ContentType::Alert, vec![2, u8::from(alert)]),
            _ => (
                ContentType::ApplicationData,
                b"not what was sealed".to_vec(),
            ),
        };
        let message = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(&payload),
        };
        let mut record = encrypter
            .encrypt(message, tx_seq)
            .expect("encrypt a record")
            .encode();
        if matches!(
            close,
            Close::CorruptRecord | Close::CorruptRecordAfterPeerEnd
        ) {
            if let Some(last) = record.last_mut() {
                *last ^= 0x55; // the tag no longer matches
            }
        }
        let (rx_seq, rx) = secrets.rx;
        let (key, iv) = key_and_iv(rx);
        let decrypter = suite.aead_alg.decrypter(key, iv);
        let mut raw = self.raw;
        raw.set_nonblocking(false).expect("blocking");
        raw.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let mut got = self.got;
        let ending = match raw.write_all(&record) {
            Ok(()) => read_records_raw(&mut raw, decrypter, rx_seq, &mut got),
            Err(e) => Ending::Failed(format!("writing our own record: {e}")),
        };
        Received {
            got,
            ending,
            sent: self.sent,
        }
    }
}

/// The key and IV of one direction's traffic secrets.
fn key_and_iv(secrets: ConnectionTrafficSecrets) -> (AeadKey, Iv) {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => panic!("traffic secrets of an AEAD this test does not know"),
    }
}

/// Reads TLS 1.3 records from `raw` until the stream ends, decrypting each with the
/// session's keys: application data goes to `got`, an alert is the ending.
fn read_records_raw(
    raw: &mut TcpStream,
    mut decrypter: Box<dyn MessageDecrypter>,
    mut seq: u64,
    got: &mut Vec<u8>,
) -> Ending {
    let mut wire = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        while wire.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
            if wire.len() < 5 + len {
                break;
            }
            let mut record: Vec<u8> = wire.drain(..5 + len).collect();
            let typ = ContentType::from(record[0]);
            let message =
                InboundOpaqueMessage::new(typ, ProtocolVersion::TLSv1_2, &mut record[5..]);
            let plain = match decrypter.decrypt(message, seq) {
                Ok(plain) => plain,
                Err(e) => return Ending::Failed(format!("record {seq} does not decrypt: {e}")),
            };
            seq += 1;
            match plain.typ {
                ContentType::ApplicationData => got.extend_from_slice(plain.payload),
                ContentType::Alert if plain.payload.len() == 2 => {
                    return Ending::Alert(AlertDescription::from(plain.payload[1]));
                }
                // Tickets and key updates: not what this reader looks for.
                _ => {}
            }
        }
        match raw.read(&mut buf) {
            Ok(0) => return Ending::Truncated,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ending::Reset,
            Err(e) => return Ending::Failed(e.to_string()),
        }
    }
}
