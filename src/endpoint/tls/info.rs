//! What a TLS end's handshake negotiated, read from rustls for the tunnel's log line.

use std::fmt;

use rustls::{HandshakeKind, ProtocolVersion};

use super::TlsEnd;

/// The outcome of a finished handshake: version, suite, key exchange group, resumption,
/// application protocol.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated<'a> {
    /// `1.3` or `1.2`.
    pub version: Option<ProtocolVersion>,
    /// rustls' name of the cipher suite, such as `TLS13_AES_128_GCM_SHA256`.
    pub suite: Option<&'static str>,
    /// The key exchange group, such as `X25519MLKEM768` (none for a TLS 1.2 resumption).
    pub group: Option<&'static str>,
    /// Whether the session was resumed from a ticket or session ID.
    pub resumed: bool,
    /// The application protocol agreed by ALPN.
    pub alpn: Option<&'a [u8]>,
}

impl<S: super::Stream> TlsEnd<S> {
    /// What the handshake negotiated (fields are `None` while it is under way).
    pub(in crate::endpoint) fn negotiated(&self) -> Negotiated<'_> {
        let common = self.session.common();
        Negotiated {
            version: common.protocol_version(),
            suite: common
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str()),
            group: common
                .negotiated_key_exchange_group()
                .and_then(|g| g.name().as_str()),
            resumed: common.handshake_kind() == Some(HandshakeKind::Resumed),
            alpn: common.alpn_protocol(),
        }
    }
}

/// ` tls_version=1.3 suite=... group=... resumed=no alpn=h2`, `-` for what is not known.
impl fmt::Display for Negotiated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.version {
            Some(ProtocolVersion::TLSv1_3) => "1.3",
            Some(ProtocolVersion::TLSv1_2) => "1.2",
            Some(_) => "other",
            None => "-",
        };
        write!(
            f,
            " tls_version={version} suite={} group={} resumed={}",
            self.suite.unwrap_or("-"),
            self.group.unwrap_or("-"),
            if self.resumed { "yes" } else { "no" },
        )?;
        match self.alpn {
            // ALPN names are bytes; only printable ASCII goes into the log as it is.
            Some(alpn) if alpn.iter().all(|b| b.is_ascii_graphic()) => {
                write!(f, " alpn={}", String::from_utf8_lossy(alpn))
            }
            Some(alpn) => write!(f, " alpn=0x{}", hex(alpn)),
            None => f.write_str(" alpn=-"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
