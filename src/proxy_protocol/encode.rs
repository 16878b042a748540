//! Writing headers: moat as the sender, telling the backend who connected
//! (`--proxy-protocol v1|v2`). Each function appends one whole header to `out`, so it can
//! go into the tunnel's first outgoing bytes.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::crc32c::crc32c;
use super::{
    Addresses, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL, PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_KEY_ALG, PP2_SUBTYPE_SSL_SIG_ALG, PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_SSL, V2_SIGNATURE,
};

/// The longest value moat puts in one TLV. Real values (a protocol name, a host name, a
/// Common Name, a cipher) are far shorter; a longer one is left out rather than cut, so a
/// backend never sees half a name, and the header stays below 2 KiB, inside any receiver's
/// cap. (HAProxy refuses a `PP2_TYPE_AUTHORITY` longer than 255 bytes.)
const MAX_SENT_VALUE_LEN: usize = 255;

/// `ver_cmd` (version 2 in the high nibble) and `fam` bytes of section 2.2.
const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;
const FAMILY_UNSPEC: u8 = 0x00;
const FAMILY_TCP4: u8 = 0x11;
const FAMILY_TCP6: u8 = 0x21;

/// What the TLS handshake with the client established, for the version 2 TLVs. Every field
/// is optional; what is `None` (or empty, or longer than 255 bytes) is not sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsFacts<'a> {
    /// The negotiated ALPN protocol, sent as `PP2_TYPE_ALPN`.
    pub alpn: Option<&'a [u8]>,
    /// The host name the client sent (SNI), sent as `PP2_TYPE_AUTHORITY`.
    pub sni: Option<&'a str>,
    /// The TLS version as HAProxy spells it (`TLSv1.3`, see [`tls_version_name`]), sent as
    /// `PP2_SUBTYPE_SSL_VERSION`.
    pub version: Option<&'a str>,
    /// The cipher suite as HAProxy (OpenSSL) spells it (see [`cipher_name`]), sent as
    /// `PP2_SUBTYPE_SSL_CIPHER`.
    pub cipher: Option<&'a str>,
    /// Whether, and when, the client presented a verified certificate.
    pub client_cert: ClientCert,
    /// The Common Name of the client certificate's subject, sent as `PP2_SUBTYPE_SSL_CN`
    /// when there is a client certificate.
    pub client_cn: Option<&'a str>,
    /// The signature algorithm of moat's own certificate (e.g. `ecdsa-with-SHA256`), sent as
    /// `PP2_SUBTYPE_SSL_SIG_ALG`.
    pub sig_alg: Option<&'a str>,
    /// The key algorithm of moat's own certificate (e.g. `EC256`, `RSA2048`), sent as
    /// `PP2_SUBTYPE_SSL_KEY_ALG`.
    pub key_alg: Option<&'a str>,
}

/// The client certificate, as the `client` bits and `verify` field of `PP2_TYPE_SSL` report
/// it. moat finishes a handshake only with a certificate that verified, so "presented" and
/// "verified" are the same here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCert {
    /// No certificate: `PP2_CLIENT_SSL` only, `verify` non-zero (1), as the specification
    /// says for a client without a verified certificate.
    #[default]
    None,
    /// A full handshake in which the client's certificate was verified:
    /// `PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS`, `verify` 0.
    Verified,
    /// A resumed session whose first handshake verified the client's certificate; none was
    /// sent on this connection: `PP2_CLIENT_CERT_SESS`, `verify` 0.
    VerifiedInSession,
}

/// The TLS version named as HAProxy writes it in `PP2_SUBTYPE_SSL_VERSION` (OpenSSL's
/// spelling), from its code point: `0x0304` is `TLSv1.3`, `0x0303` is `TLSv1.2`.
pub fn tls_version_name(code: u16) -> Option<&'static str> {
    match code {
        0x0304 => Some("TLSv1.3"),
        0x0303 => Some("TLSv1.2"),
        _ => None,
    }
}

/// The cipher suite named as HAProxy writes it in `PP2_SUBTYPE_SSL_CIPHER` (OpenSSL's
/// spelling), from its IANA code point, for the suites rustls offers.
pub fn cipher_name(code: u16) -> Option<&'static str> {
    Some(match code {
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B => "ECDHE-ECDSA-AES128-GCM-SHA256",
        0xC02C => "ECDHE-ECDSA-AES256-GCM-SHA384",
        0xC02F => "ECDHE-RSA-AES128-GCM-SHA256",
        0xC030 => "ECDHE-RSA-AES256-GCM-SHA384",
        0xCCA8 => "ECDHE-RSA-CHACHA20-POLY1305",
        0xCCA9 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// Appends a version 1 line: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` when both
/// addresses are IPv4 (an IPv4-mapped IPv6 address counts as the IPv4 address it maps),
/// else `PROXY TCP6 …` with any IPv4 address written IPv4-mapped, as HAProxy does for mixed
/// families, since one line has one family.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (sport, dport) = (source.port(), destination.port());
    // Writing into a Vec cannot fail.
    let _ = match (as_ipv4(source.ip()), as_ipv4(destination.ip())) {
        (Some(src), Some(dst)) => write!(out, "PROXY TCP4 {src} {dst} {sport} {dport}\r\n"),
        _ => {
            let (src, dst) = (as_ipv6(source.ip()), as_ipv6(destination.ip()));
            write!(out, "PROXY TCP6 {src} {dst} {sport} {dport}\r\n")
        }
    };
}

/// Appends the version 1 line for a connection without IP addresses (accepted on a unix
/// socket): `PROXY UNKNOWN\r\n`, the short form.
pub fn encode_v1_unknown(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PROXY UNKNOWN\r\n");
}

/// Appends a version 2 header.
///
/// With `addresses`, the command is PROXY and the family TCP over IPv4 (`0x11`) or, if
/// either address is IPv6, TCP over IPv6 (`0x21`, IPv4 written IPv4-mapped). Without (a
/// connection accepted on a unix socket), it is LOCAL with family `AF_UNSPEC` (`0x00`) and
/// no address block, as HAProxy sends it: a receiver must accept LOCAL and keep the
/// connection's own addresses.
///
/// TLVs follow in HAProxy's order: `PP2_TYPE_CRC32C` (always), then, with `tls`,
/// `PP2_TYPE_ALPN`, `PP2_TYPE_AUTHORITY` and `PP2_TYPE_SSL` with sub-TLVs
/// `PP2_SUBTYPE_SSL_VERSION`, `_CN`, `_KEY_ALG`, `_SIG_ALG`, `_CIPHER`.
pub fn encode_v2(addresses: Option<Addresses>, tls: Option<&TlsFacts<'_>>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&V2_SIGNATURE);
    match addresses {
        None => out.extend_from_slice(&[V2_LOCAL, FAMILY_UNSPEC, 0, 0]),
        Some(Addresses {
            source,
            destination,
        }) => {
            match (as_ipv4(source.ip()), as_ipv4(destination.ip())) {
                (Some(src), Some(dst)) => {
                    out.extend_from_slice(&[V2_PROXY, FAMILY_TCP4, 0, 0]);
                    out.extend_from_slice(&src.octets());
                    out.extend_from_slice(&dst.octets());
                }
                _ => {
                    out.extend_from_slice(&[V2_PROXY, FAMILY_TCP6, 0, 0]);
                    out.extend_from_slice(&as_ipv6(source.ip()).octets());
                    out.extend_from_slice(&as_ipv6(destination.ip()).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }

    // The checksum field is zero while the CRC is computed (section 2.2.3).
    let checksum_at = out.len() + 3;
    push_tlv(out, PP2_TYPE_CRC32C, &[0; 4]);
    if let Some(tls) = tls {
        push_tls_tlvs(out, tls);
    }

    let header_len = out.len() - start - 16;
    put_u16(out, start + 14, header_len);
    let checksum = out.get(start..).map_or(0, crc32c);
    if let Some(field) = out.get_mut(checksum_at..checksum_at + 4) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
}

/// Appends ALPN, AUTHORITY and the SSL TLV with its sub-TLVs.
fn push_tls_tlvs(out: &mut Vec<u8>, tls: &TlsFacts<'_>) {
    if let Some(alpn) = tls.alpn {
        push_tlv(out, PP2_TYPE_ALPN, alpn);
    }
    if let Some(sni) = tls.sni {
        push_tlv(out, PP2_TYPE_AUTHORITY, sni.as_bytes());
    }

    let (client, verify) = match tls.client_cert {
        ClientCert::None => (PP2_CLIENT_SSL, 1u32),
        ClientCert::Verified => (
            PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            0,
        ),
        ClientCert::VerifiedInSession => (PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 0),
    };
    out.push(PP2_TYPE_SSL);
    let length_at = out.len();
    out.extend_from_slice(&[0, 0, client]);
    out.extend_from_slice(&verify.to_be_bytes());
    let cn = match tls.client_cert {
        ClientCert::None => None,
        ClientCert::Verified | ClientCert::VerifiedInSession => tls.client_cn,
    };
    let subs = [
        (PP2_SUBTYPE_SSL_VERSION, tls.version),
        (PP2_SUBTYPE_SSL_CN, cn),
        (PP2_SUBTYPE_SSL_KEY_ALG, tls.key_alg),
        (PP2_SUBTYPE_SSL_SIG_ALG, tls.sig_alg),
        (PP2_SUBTYPE_SSL_CIPHER, tls.cipher),
    ];
    for (kind, value) in subs {
        if let Some(value) = value {
            push_tlv(out, kind, value.as_bytes());
        }
    }
    // At most 5 + 5 × (3 + 255) bytes, so the length always fits its two bytes.
    let value_len = out.len() - length_at - 2;
    put_u16(out, length_at, value_len);
}

/// Appends one TLV, unless its value is empty or longer than [`MAX_SENT_VALUE_LEN`].
fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let Ok(len) = u16::try_from(value.len()) else {
        return;
    };
    if value.is_empty() || value.len() > MAX_SENT_VALUE_LEN {
        return;
    }
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// Writes a big-endian length into two bytes already reserved at `at`. Lengths here are
/// bounded by construction (at most a few KiB); the saturation can never happen.
fn put_u16(out: &mut [u8], at: usize, len: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(at..at + 2) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

fn as_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn as_ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
