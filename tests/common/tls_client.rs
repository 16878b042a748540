//! TLS clients for tests, built on rustls directly (independent of moat's own code paths).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Pki, PATIENCE};

/// A client configuration trusting the test CA and presenting `identity` (e.g. `client`,
/// `stranger`, `expired`) if given.
pub fn client_config(pki: &Pki, identity: Option<&str>) -> Arc<ClientConfig> {
    client_config_with(pki, identity, rustls::crypto::aws_lc_rs::default_provider())
}

/// [`client_config`] with a crypto provider of the test's choosing (its suites and key
/// exchange groups, in its order).
pub fn client_config_with(
    pki: &Pki,
    identity: Option<&str>,
    provider: rustls::crypto::CryptoProvider,
) -> Arc<ClientConfig> {
    let provider = Arc::new(provider);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(name) => {
            let id = pki.identity(name);
            let chain = CertificateDer::pem_file_iter(&id.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(&id.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A blocking TLS connection to `addr` as `localhost`. The handshake runs on first use.
pub fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = super::connect(addr);
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

/// Sends `message` over TLS and reads back as many bytes. With TLS 1.3 a refused client
/// certificate shows only here, after the client's side of the handshake: as an alert
/// (an `InvalidData` error) or a closed connection.
pub fn tls_echo(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    message: &[u8],
) -> io::Result<Vec<u8>> {
    let mut tls = tls_connect(addr, config);
    tls.write_all(message)?;
    tls.flush()?;
    let mut got = vec![0; message.len()];
    tls.read_exact(&mut got)?;
    Ok(got)
}

/// Sends `data` over TLS while reading whatever comes back, then sends `close_notify` and
/// reads until the server closes. Both directions run at once (one nonblocking socket).
pub fn tls_transfer(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut sock = mio::net::TcpStream::connect(addr)?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)?;
    let mut conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .map_err(io::Error::other)?;
    let mut sent = 0;
    let mut closing = false;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let mut progress = true;
        while progress {
            progress = false;
            if !conn.is_handshaking() && !conn.wants_write() {
                if sent < data.len() {
                    let end = (sent + 16 * 1024).min(data.len());
                    sent += conn.writer().write(&data[sent..end])?;
                    progress = true;
                } else if !closing {
                    conn.send_close_notify();
                    closing = true;
                    progress = true;
                }
            }
            while conn.wants_write() {
                match conn.write_tls(&mut sock) {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) => return Err(e),
                }
            }
            if conn.wants_read() {
                match conn.read_tls(&mut sock) {
                    Ok(0) => {}
                    Ok(_) => {
                        conn.process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(e),
                }
            }
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => return Ok(got),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "transfer took too long",
            ));
        }
        poll.poll(&mut events, Some(left))?;
    }
}
