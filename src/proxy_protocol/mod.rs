//! The PROXY protocol, versions 1 and 2, as HAProxy's specification
//! (`doc/proxy-protocol.txt`, "The PROXY protocol, Versions 1 & 2") defines it.
//!
//! A proxy that relays a connection prepends one header that tells the receiver who the
//! connection really came from. moat plays both parts:
//!
//! - **Sender** (server mode, `--proxy-protocol`): before the first byte of the tunnel, the
//!   backend is told the client's address, and with version 2 what the TLS handshake
//!   established. [`encode_v1`], [`encode_v1_unknown`] and [`encode_v2`] append the header
//!   to the tunnel's first outgoing bytes.
//! - **Receiver** (`--accept-proxy`): a load balancer in front of moat sends the header
//!   first. [`parse`] looks at the bytes received so far and answers: not enough yet
//!   ([`Parsed::Incomplete`]), a whole header and how many bytes it took
//!   ([`Parsed::Complete`]), or a refusal ([`ProxyError`]) as soon as the bytes cannot begin a
//!   valid header.
//!
//! Nothing here does I/O: the loop feeds bytes in and takes bytes out, so a test or a
//! fuzzer drives this module with plain slices.

mod crc32c;
mod encode;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;

pub use encode::{
    cipher_name, encode_v1, encode_v1_unknown, encode_v2, tls_version_name, ClientCert, TlsFacts,
};
pub use parse::{parse, parse_with_limit};

/// The 12 bytes every version 2 header starts with (section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line, CRLF included: `PROXY UNKNOWN` with two full IPv6 addresses
/// and ports (section 2.1). A line without its CRLF within this many bytes is refused.
pub const V1_MAX_LEN: usize = 107;

/// Default cap on a version 2 header, its 16-byte fixed part included. The length field
/// alone would allow 65,551 bytes; real headers are well under a few hundred, and the
/// bytes are buffered before the tunnel starts, so moat refuses anything larger.
pub const MAX_V2_LEN: usize = 4096;

/// The most bytes [`parse_with_limit`] can ask for before it decides: once the buffer holds
/// this many, the answer is [`Parsed::Complete`] or an error, never [`Parsed::Incomplete`].
pub const fn max_header_len(max_v2_len: usize) -> usize {
    if max_v2_len > V1_MAX_LEN {
        max_v2_len
    } else {
        V1_MAX_LEN
    }
}

// TLV types (section 2.2), named as the specification names them.
/// Application-Layer Protocol Negotiation: the protocol the TLS handshake settled on.
pub const PP2_TYPE_ALPN: u8 = 0x01;
/// The host name the client asked for (TLS: the SNI), UTF-8.
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// CRC-32C of the whole header, computed with this field set to zero.
pub const PP2_TYPE_CRC32C: u8 = 0x03;
/// Padding, to be ignored.
pub const PP2_TYPE_NOOP: u8 = 0x04;
/// An opaque identifier of the connection, at most 128 bytes.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
/// TLS facts: a `client` bit field, a `verify` word, then sub-TLVs.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the TLS version, e.g. `TLSv1.3`.
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the Common Name of the client certificate's subject.
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the cipher, e.g. `TLS_AES_128_GCM_SHA256`.
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the signature algorithm of the receiving proxy's certificate.
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the key algorithm of the receiving proxy's certificate.
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the key exchange group.
pub const PP2_SUBTYPE_SSL_GROUP: u8 = 0x26;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the signature scheme of the handshake.
pub const PP2_SUBTYPE_SSL_SIG_SCHEME: u8 = 0x27;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the client certificate, DER.
pub const PP2_SUBTYPE_SSL_CLIENT_CERT: u8 = 0x28;
/// The network namespace's name.
pub const PP2_TYPE_NETNS: u8 = 0x30;

// Bits of the `client` field of PP2_TYPE_SSL (section 2.2.6).
/// The client connected over TLS.
pub const PP2_CLIENT_SSL: u8 = 0x01;
/// The client sent a certificate on this connection.
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// The client sent a certificate at least once in the TLS session of this connection.
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// The two ends of the relayed connection, as the header carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client: the peer of the connection the proxy accepted.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line, `PROXY TCP4 …\r\n`.
    V1,
    /// The binary header that starts with [`V2_SIGNATURE`].
    V2,
}

/// What a header says about the connection it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relayed on behalf of a client (v2 `PROXY`; every v1 line).
    Proxy,
    /// Opened by the proxy itself, e.g. a health check (v2 `LOCAL`): the connection's own
    /// endpoints are the real ones.
    Local,
}

/// A header that was received whole and is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The version it was written in.
    pub version: Version,
    /// Relayed or local.
    pub command: Command,
    /// The client's and the destination's addresses, when the header carries TCP over IPv4
    /// or IPv6. `None` for `LOCAL`, for v1 `UNKNOWN`, and for the families moat does not
    /// relay (unspecified, UDP, unix), which the specification lets a receiver treat as
    /// unspecified: the connection's own addresses are then the ones to use.
    pub addresses: Option<Addresses>,
    /// The TLV block (v2), checked to be well formed; empty for v1.
    tlv_block: Vec<u8>,
}

impl ProxyHeader {
    /// The client's address, if the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|a| a.source)
    }

    /// Every TLV of the header, in order.
    pub fn tlvs(&self) -> Tlvs<'_> {
        Tlvs::new(&self.tlv_block)
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|t| t.kind == kind).map(|t| t.value)
    }

    /// The [`PP2_TYPE_SSL`] TLV, if there is one.
    pub fn ssl(&self) -> Option<SslTlv<'_>> {
        self.tlv(PP2_TYPE_SSL).and_then(SslTlv::new)
    }
}

/// One type-length-value entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Its type (`PP2_TYPE_*` or, inside [`PP2_TYPE_SSL`], `PP2_SUBTYPE_SSL_*`).
    pub kind: u8,
    /// Its value, at most 65,535 bytes.
    pub value: &'a [u8],
}

/// The TLVs of a block, in order; stops at the first entry that does not fit whole
/// (blocks that [`parse`] accepted have none).
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Tlvs<'a> {
    fn new(block: &'a [u8]) -> Self {
        Self { rest: block }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let (tlv, rest) = split_tlv(self.rest)?;
        self.rest = rest;
        Some(tlv)
    }
}

/// The first TLV of `bytes` and what follows it, if it is there whole.
fn split_tlv(bytes: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&[kind, hi, lo], rest) = bytes.split_first_chunk::<3>()?;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let value = rest.get(..len)?;
    let rest = rest.get(len..)?;
    Some((Tlv { kind, value }, rest))
}

/// The value of a [`PP2_TYPE_SSL`] TLV: `client` bits, `verify`, and sub-TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslTlv<'a> {
    /// Bits [`PP2_CLIENT_SSL`], [`PP2_CLIENT_CERT_CONN`], [`PP2_CLIENT_CERT_SESS`].
    pub client: u8,
    /// Zero if the client presented a certificate and it was verified, non-zero otherwise.
    pub verify: u32,
    sub_tlvs: &'a [u8],
}

impl<'a> SslTlv<'a> {
    /// Reads the fixed part; `None` if `value` is shorter than its 5 bytes.
    fn new(value: &'a [u8]) -> Option<Self> {
        let (&[client, v0, v1, v2, v3], sub_tlvs) = value.split_first_chunk::<5>()?;
        Some(Self {
            client,
            verify: u32::from_be_bytes([v0, v1, v2, v3]),
            sub_tlvs,
        })
    }

    /// The sub-TLVs, in order.
    pub fn sub_tlvs(&self) -> Tlvs<'a> {
        Tlvs::new(self.sub_tlvs)
    }

    /// The value of the first sub-TLV of type `kind`.
    pub fn sub_tlv(&self, kind: u8) -> Option<&'a [u8]> {
        self.sub_tlvs().find(|t| t.kind == kind).map(|t| t.value)
    }
}

/// What [`parse`] made of the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far can begin a valid header, but it is not whole yet: read more
    /// (the caller bounds how long and how much, see [`max_header_len`]).
    Incomplete,
    /// A whole, valid header.
    Complete {
        /// What it says.
        header: ProxyHeader,
        /// How many bytes it took; the bytes after them belong to the tunnel.
        len: usize,
    },
}

/// A field of a version 1 line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Field {
    /// The source address.
    SourceAddress,
    /// The destination address.
    DestinationAddress,
    /// The source port.
    SourcePort,
    /// The destination port.
    DestinationPort,
}

impl fmt::Display for V1Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SourceAddress => "source address",
            Self::DestinationAddress => "destination address",
            Self::SourcePort => "source port",
            Self::DestinationPort => "destination port",
        })
    }
}

/// Why bytes were refused as a PROXY protocol header. A header that is merely not whole yet
/// is not an error ([`Parsed::Incomplete`]): the caller decides when to give up waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The bytes begin neither `PROXY ` (v1) nor the v2 signature.
    NotProxy,
    /// The v1 protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    V1Protocol,
    /// A v1 field is missing or malformed (leading zero, out of range, wrong family).
    V1Field(V1Field),
    /// Something follows the destination port of a v1 line.
    V1TrailingField,
    /// A v1 line holds a CR or LF that is not part of its final CRLF.
    V1StrayLineBreak,
    /// No CRLF within the first [`V1_MAX_LEN`] bytes.
    V1TooLong,
    /// The v2 version nibble is not 2.
    V2Version(u8),
    /// The v2 command is neither LOCAL nor PROXY.
    V2Command(u8),
    /// The v2 family and transport byte is not one the specification defines.
    V2Family(u8),
    /// The v2 header is longer than the receiver's cap.
    V2TooLong {
        /// Its length, fixed part included.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The v2 address block is shorter than the family needs.
    V2AddressBlock {
        /// The length field.
        len: usize,
        /// What the family needs.
        needed: usize,
    },
    /// A v2 TLV runs past the end of the header, or bytes too few for a TLV are left over.
    V2TlvOverrun,
    /// A TLV's length is not allowed for its type.
    V2TlvLength {
        /// The TLV type.
        kind: u8,
        /// Its length.
        len: usize,
    },
    /// The sub-TLVs of a [`PP2_TYPE_SSL`] TLV do not fit it exactly.
    V2SslSubTlvs,
    /// More than one [`PP2_TYPE_CRC32C`] TLV.
    V2DuplicateChecksum,
    /// The [`PP2_TYPE_CRC32C`] value does not match the header.
    V2Checksum {
        /// The value the header carries.
        carried: u32,
        /// The value computed over the header.
        computed: u32,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProxy => f.write_str("the connection did not start with a PROXY protocol header"),
            Self::V1Protocol => f.write_str(
                "PROXY v1 header: unknown protocol (the specification allows TCP4, TCP6 and UNKNOWN)",
            ),
            Self::V1Field(field) => write!(f, "PROXY v1 header: missing or malformed {field}"),
            Self::V1TrailingField => f.write_str("PROXY v1 header: unexpected text after the destination port"),
            Self::V1StrayLineBreak => f.write_str("PROXY v1 header: a CR or LF that is not the closing CRLF"),
            Self::V1TooLong => write!(f, "PROXY v1 header: no CRLF within {V1_MAX_LEN} bytes"),
            Self::V2Version(v) => write!(f, "PROXY v2 header: version {v}, not 2"),
            Self::V2Command(c) => write!(f, "PROXY v2 header: unknown command {c:#x}"),
            Self::V2Family(b) => write!(f, "PROXY v2 header: unknown address family and transport {b:#04x}"),
            Self::V2TooLong { len, max } => {
                write!(f, "PROXY v2 header: {len} bytes, more than the {max} accepted")
            }
            Self::V2AddressBlock { len, needed } => write!(
                f,
                "PROXY v2 header: {len} bytes of addresses, the family needs {needed}"
            ),
            Self::V2TlvOverrun => f.write_str("PROXY v2 header: a TLV runs past the end of the header"),
            Self::V2TlvLength { kind, len } => {
                write!(f, "PROXY v2 header: TLV type {kind:#04x} cannot be {len} bytes long")
            }
            Self::V2SslSubTlvs => f.write_str("PROXY v2 header: malformed sub-TLVs in the SSL TLV"),
            Self::V2DuplicateChecksum => f.write_str("PROXY v2 header: more than one CRC32C TLV"),
            Self::V2Checksum { carried, computed } => write!(
                f,
                "PROXY v2 header: CRC32C mismatch (header says {carried:#010x}, bytes give {computed:#010x})"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}
