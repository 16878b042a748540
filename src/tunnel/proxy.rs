//! The PROXY protocol at a tunnel's two ends.
//!
//! - **In** (`--accept-proxy`): a load balancer in front of moat sends the client's
//!   address in a header before anything else. The tunnel reads it first, with the strict
//!   parser of [`crate::proxy_protocol`], under its own deadline: the bytes are *peeked*
//!   until a whole header is there, then exactly the header is read, so not one byte of
//!   the stream behind it is taken. The address it carries is then the tunnel's peer — the
//!   one logged, counted by `--max-conns-per-ip` and passed on.
//! - **Out** (`--proxy-protocol v1|v2`): the backend learns who connected, and over what
//!   TLS. The header is written ahead of the first bytes of the tunnel, in the same system
//!   call when there are any, or alone as soon as the connect completes when there are none
//!   (a server that speaks first, such as MySQL, needs it before it says anything).

use std::io::{self, Read};
use std::net::SocketAddr;

use rustls::ProtocolVersion;

use super::{EndReason, Side, Tunnel};
use crate::address::Peer;
use crate::config::ProxyVersion;
use crate::endpoint::Conn;
use crate::proxy_protocol::{
    self, cipher_name, encode_v1, encode_v1_unknown, encode_v2, max_header_len, Addresses,
    ClientCert, Parsed, TlsFacts, MAX_V2_LEN,
};

/// Where a tunnel that reads a PROXY header stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProxyIn {
    /// No header expected (or it has been read).
    Done,
    /// Waiting for the header.
    Waiting,
}

impl Tunnel {
    /// Peeks at what the load balancer sent; once a whole header is there, takes exactly
    /// it and makes its source the tunnel's peer. `Ok(false)`: not all there yet.
    pub(super) fn read_proxy_header(&mut self) -> Result<bool, EndReason> {
        let refuse = |why: String| EndReason::ProxyHeader(why);
        let Some(socket) = self.down.socket_mut() else {
            return Ok(false);
        };
        if !socket.is_readable() {
            return Ok(false);
        }
        let Conn::Tcp(stream) = socket.stream() else {
            return Err(refuse("a PROXY header comes over TCP only".into()));
        };
        let mut buf = [0u8; max_header_len(MAX_V2_LEN)];
        let seen = match stream.peek(&mut buf) {
            Ok(0) => return Err(refuse("the connection closed before a PROXY header".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                socket.mark_drained();
                return Ok(false);
            }
            Err(e) => return Err(EndReason::Io(Side::Client, e)),
        };
        let window = buf.get(..seen).unwrap_or_default();
        let (header, len) = match proxy_protocol::parse(window) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            Ok(Parsed::Incomplete) if seen >= buf.len() => {
                return Err(refuse("PROXY header too long".into()))
            }
            Ok(Parsed::Incomplete) => {
                socket.mark_drained();
                // A peek never sees the EOF behind bytes still queued, so a peer that sent
                // part of a header and closed would otherwise wait out the deadline. Only a
                // socket whose read half the poll reported closed stays readable after
                // `mark_drained`: nothing more will come.
                if socket.is_readable() {
                    return Err(refuse(
                        "the connection closed in the middle of a PROXY header".into(),
                    ));
                }
                // The rest comes with the next readiness edge.
                return Ok(false);
            }
            Err(e) => return Err(refuse(format!("bad PROXY header: {e}"))),
        };
        let mut header_bytes = [0u8; max_header_len(MAX_V2_LEN)];
        let take = header_bytes.get_mut(..len).unwrap_or_default();
        socket
            .read_exact(take)
            .map_err(|e| EndReason::Io(Side::Client, e))?;
        if let Some(source) = header.source() {
            log::debug!(
                tunnel = self.id;
                "tunnel {}: PROXY header from {} says the client is {source}",
                self.id,
                self.peer
            );
            self.peer = Peer::tcp(source);
            self.proxied_to = header.addresses.map(|a| a.destination);
        }
        self.proxy_in = ProxyIn::Done;
        Ok(true)
    }

    /// The PROXY header for the backend, when the route sends one: the client's address
    /// (as a load balancer told it, or as moat saw it), where it connected, and what TLS
    /// it spoke.
    pub(super) fn proxy_header(&self) -> Option<Vec<u8>> {
        let version = self.route.proxy_protocol?;
        let destination = self.proxied_to.or_else(|| self.local_addr());
        let addresses = match (self.peer, destination) {
            (Peer::Ip(source), Some(destination)) => Some(Addresses {
                source,
                destination,
            }),
            _ => None,
        };
        let mut out = Vec::with_capacity(128);
        match (version, addresses) {
            (ProxyVersion::V1, Some(a)) => encode_v1(a.source, a.destination, &mut out),
            (ProxyVersion::V1, None) => encode_v1_unknown(&mut out),
            (ProxyVersion::V2, addresses) => {
                let common = self.down.tls_common();
                let cn = self.client_cn();
                let cipher = common
                    .and_then(|c| c.negotiated_cipher_suite())
                    .and_then(|s| cipher_name(u16::from(s.suite())));
                let version = common.and_then(|c| match c.protocol_version() {
                    Some(ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                    Some(ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                    _ => None,
                });
                let resumed = common
                    .and_then(|c| c.handshake_kind())
                    .is_some_and(|k| k == rustls::HandshakeKind::Resumed);
                let client_cert = match (self.down.peer_certificates().is_some(), resumed) {
                    (false, _) => ClientCert::None,
                    (true, false) => ClientCert::Verified,
                    (true, true) => ClientCert::VerifiedInSession,
                };
                let facts = common.map(|c| TlsFacts {
                    alpn: c.alpn_protocol(),
                    sni: self.sni.as_deref(),
                    version,
                    cipher,
                    client_cert,
                    client_cn: cn.as_deref(),
                    ..TlsFacts::default()
                });
                encode_v2(addresses, facts.as_ref(), &mut out);
            }
        }
        Some(out)
    }

    /// Where the client connected: the accepted socket's own address.
    fn local_addr(&self) -> Option<SocketAddr> {
        self.down.socket().and_then(|s| s.stream().local_addr())
    }

    /// The client certificate's common name, for the PROXY v2 SSL TLV.
    fn client_cn(&self) -> Option<String> {
        let cert = self.down.peer_certificates()?.first()?;
        let identity = crate::tls::identity::PeerIdentity::from_der(cert)?;
        identity.common_names.into_iter().next()
    }
}
