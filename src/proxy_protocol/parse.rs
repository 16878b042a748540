//! Reading headers: moat as the receiver, behind a load balancer (`--accept-proxy`).
//!
//! The parser is strict and incremental. Called again on the same bytes with more behind
//! them, it answers [`Parsed::Incomplete`] while every byte so far can still begin a valid
//! header, and an error as soon as one cannot, so a malformed header is refused when its
//! first wrong byte arrives rather than when a deadline runs out.

use std::iter::Peekable;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::crc32c::Crc32c;
use super::{
    split_tlv, Addresses, Command, Parsed, ProxyError, ProxyHeader, V1Field, Version, MAX_V2_LEN,
    PP2_TYPE_CRC32C, PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, V1_MAX_LEN, V2_SIGNATURE,
};

/// Parses the bytes received so far, with the default cap [`MAX_V2_LEN`] on v2 headers.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    parse_with_limit(buf, MAX_V2_LEN)
}

/// Parses the bytes received so far. A version 2 header longer than `max_v2_len` bytes
/// (its 16-byte fixed part included) is refused as soon as its length field has arrived.
///
/// The version is told by the first byte: `P` for version 1, CR for version 2 (section
/// 2.2: the two formats cannot be confused). Once `buf` holds
/// [`max_header_len(max_v2_len)`](super::max_header_len) bytes, the answer is never
/// [`Parsed::Incomplete`].
pub fn parse_with_limit(buf: &[u8], max_v2_len: usize) -> Result<Parsed, ProxyError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf, max_v2_len),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

// ---- Version 1: one line of text (section 2.1) ----

const V1_PREFIX: &[u8] = b"PROXY ";

/// How far the end of a v1 line has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// Neither CR nor LF yet.
    NotYet,
    /// A CR that is the last byte so far.
    Cr,
    /// The CRLF.
    Crlf,
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let seen = window.len().min(V1_PREFIX.len());
    if window.get(..seen) != V1_PREFIX.get(..seen) {
        return Err(ProxyError::NotProxy);
    }
    let Some(text) = window.get(V1_PREFIX.len()..) else {
        return Ok(Parsed::Incomplete);
    };

    // The line ends at its first CR or LF, and only a CR followed by LF may end it.
    let (line, end) = match text.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => (text, LineEnd::NotYet),
        Some(at) => {
            let (line, rest) = text.split_at(at);
            match rest {
                [b'\r', b'\n', ..] => (line, LineEnd::Crlf),
                [b'\r'] => (line, LineEnd::Cr),
                _ => return Err(ProxyError::V1StrayLineBreak),
            }
        }
    };
    let addresses = v1_fields(line, end != LineEnd::NotYet)?;
    match end {
        LineEnd::Crlf => Ok(Parsed::Complete {
            header: ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                addresses,
                tlv_block: Vec::new(),
            },
            len: V1_PREFIX.len() + line.len() + 2,
        }),
        LineEnd::NotYet | LineEnd::Cr if buf.len() >= V1_MAX_LEN => Err(ProxyError::V1TooLong),
        LineEnd::NotYet | LineEnd::Cr => Ok(Parsed::Incomplete),
    }
}

/// Checks the fields after `PROXY `: the protocol, then (TCP4, TCP6) two addresses and two
/// ports, separated by exactly one space. `complete` says the line's end has been seen;
/// otherwise the last field may still grow. Returns the addresses of a complete TCP line.
fn v1_fields(line: &[u8], complete: bool) -> Result<Option<Addresses>, ProxyError> {
    let mut fields = line.split(|&b| b == b' ').peekable();
    let protocol = fields.next().unwrap_or_default();
    let protocol_complete = complete || fields.peek().is_some();
    let is_v6 = match protocol {
        b"TCP4" if protocol_complete => false,
        b"TCP6" if protocol_complete => true,
        // The receiver must ignore whatever follows UNKNOWN before the CRLF.
        b"UNKNOWN" if protocol_complete => return Ok(None),
        p if !protocol_complete
            && [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
                .iter()
                .any(|n| n.starts_with(p)) =>
        {
            return Ok(None)
        }
        _ => return Err(ProxyError::V1Protocol),
    };

    let ip = |text, complete| {
        if is_v6 {
            ipv6(text, complete).map(IpAddr::from)
        } else {
            ipv4(text, complete).map(IpAddr::from)
        }
    };
    let (Some(source), Some(destination), Some(source_port), Some(destination_port)) = (
        next_field(&mut fields, V1Field::SourceAddress, complete, ip)?,
        next_field(&mut fields, V1Field::DestinationAddress, complete, ip)?,
        next_field(&mut fields, V1Field::SourcePort, complete, port)?,
        next_field(&mut fields, V1Field::DestinationPort, complete, port)?,
    ) else {
        // Not all there yet; each field so far is a valid start.
        return Ok(None);
    };
    if fields.next().is_some() {
        return Err(ProxyError::V1TrailingField);
    }
    Ok(Some(Addresses {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    }))
}

/// Checks the next field with `check`. `Ok(None)`: the field, or one before it, is not
/// finished yet (or has not begun), and what is there is a valid start.
fn next_field<'a, T>(
    fields: &mut Peekable<impl Iterator<Item = &'a [u8]>>,
    field: V1Field,
    complete: bool,
    check: impl Fn(&'a [u8], bool) -> Check<T>,
) -> Result<Option<T>, ProxyError> {
    let Some(text) = fields.next() else {
        return if complete {
            Err(ProxyError::V1Field(field))
        } else {
            Ok(None)
        };
    };
    let field_complete = complete || fields.peek().is_some();
    match check(text, field_complete) {
        Check::Invalid => Err(ProxyError::V1Field(field)),
        Check::Prefix => Ok(None),
        Check::Value(value) => Ok(Some(value)),
    }
}

/// What a field's text is, so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check<T> {
    /// No continuation can make it valid.
    Invalid,
    /// Not finished, and still a prefix of some valid value.
    Prefix,
    /// Finished and valid.
    Value(T),
}

impl<T> Check<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Check<U> {
        match self {
            Self::Invalid => Check::Invalid,
            Self::Prefix => Check::Prefix,
            Self::Value(v) => Check::Value(f(v)),
        }
    }
}

/// A port: a decimal number in `0..=65535`.
fn port(text: &[u8], complete: bool) -> Check<u16> {
    decimal(text, u16::MAX, complete)
}

/// A decimal number in `0..=max` without leading zeros (they could be read as octal).
fn decimal(text: &[u8], max: u16, complete: bool) -> Check<u16> {
    if text.len() > 1 && text.first() == Some(&b'0') {
        return Check::Invalid;
    }
    let mut value: u32 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return Check::Invalid;
        }
        // `value <= max <= 65535` before each step, so this cannot overflow.
        value = value * 10 + u32::from(b - b'0');
        if value > u32::from(max) {
            return Check::Invalid;
        }
    }
    match (text.is_empty(), complete) {
        (true, true) => Check::Invalid,
        (_, false) => Check::Prefix,
        (false, true) => u16::try_from(value).map_or(Check::Invalid, Check::Value),
    }
}

/// Exactly four decimal numbers in `0..=255` separated by single dots.
fn ipv4(text: &[u8], complete: bool) -> Check<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.').peekable();
    let mut count = 0;
    while let Some(part) = parts.next() {
        let Some(octet) = octets.get_mut(count) else {
            return Check::Invalid;
        };
        match decimal(part, 255, complete || parts.peek().is_some()) {
            Check::Invalid => return Check::Invalid,
            Check::Prefix => return Check::Prefix,
            Check::Value(v) => match u8::try_from(v) {
                Ok(v) => *octet = v,
                Err(_) => return Check::Invalid,
            },
        }
        count += 1;
    }
    if count == 4 {
        Check::Value(Ipv4Addr::from(octets))
    } else {
        Check::Invalid
    }
}

/// The longest IPv6 text (INET6_ADDRSTRLEN less its NUL): six groups and a dotted IPv4.
const IPV6_MAX_TEXT: usize = 45;

/// IPv6 text: groups of one to four hexadecimal digits separated by colons, at most one
/// `::`, optionally an IPv4 address in the last 32 bits (which `inet_ntop`, and so HAProxy,
/// writes for IPv4-mapped addresses). While the address is unfinished, only what can be
/// judged on a prefix is checked; the finished text must also parse as 128 bits.
fn ipv6(text: &[u8], complete: bool) -> Check<Ipv6Addr> {
    if text.len() > IPV6_MAX_TEXT || text.windows(2).filter(|w| w == b"::").count() > 1 {
        return Check::Invalid;
    }
    let mut groups = text.split(|&b| b == b':').peekable();
    let mut count = 0;
    while let Some(group) = groups.next() {
        count += 1;
        let last = groups.peek().is_none();
        let valid = if group.contains(&b'.') {
            // Only after a colon, and only at the end.
            count > 1 && last && ipv4(group, complete) != Check::Invalid
        } else {
            group.len() <= 4 && group.iter().all(u8::is_ascii_hexdigit)
        };
        // Eight groups, plus the empty pieces a `::` at either end leaves.
        if !valid || count > 9 {
            return Check::Invalid;
        }
    }
    if !complete {
        return Check::Prefix;
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Check::Invalid, Check::Value)
}

// ---- Version 2: binary (section 2.2) ----

/// The address family and transport byte, for the values section 2.2 lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Unspec,
    Tcp4,
    Udp4,
    Tcp6,
    Udp6,
    UnixStream,
    UnixDgram,
}

impl Family {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x00 => Self::Unspec,
            0x11 => Self::Tcp4,
            0x12 => Self::Udp4,
            0x21 => Self::Tcp6,
            0x22 => Self::Udp6,
            0x31 => Self::UnixStream,
            0x32 => Self::UnixDgram,
            _ => return None,
        })
    }

    /// The size of the address block this family needs.
    fn address_len(self) -> usize {
        match self {
            Self::Unspec => 0,
            Self::Tcp4 | Self::Udp4 => 2 * 4 + 2 * 2,
            Self::Tcp6 | Self::Udp6 => 2 * 16 + 2 * 2,
            Self::UnixStream | Self::UnixDgram => 2 * 108,
        }
    }

    /// The addresses of a TCP family. moat relays TCP only, so the other families fall back
    /// to "unspecified", as section 2.2 lets a receiver do.
    fn tcp_addresses(self, block: &[u8]) -> Option<Addresses> {
        match self {
            Self::Tcp4 => {
                let (src, rest) = block.split_first_chunk::<4>()?;
                let (dst, rest) = rest.split_first_chunk::<4>()?;
                let (ports, _) = rest.split_first_chunk::<4>()?;
                Some(with_ports(
                    Ipv4Addr::from(*src).into(),
                    Ipv4Addr::from(*dst).into(),
                    ports,
                ))
            }
            Self::Tcp6 => {
                let (src, rest) = block.split_first_chunk::<16>()?;
                let (dst, rest) = rest.split_first_chunk::<16>()?;
                let (ports, _) = rest.split_first_chunk::<4>()?;
                Some(with_ports(
                    Ipv6Addr::from(*src).into(),
                    Ipv6Addr::from(*dst).into(),
                    ports,
                ))
            }
            _ => None,
        }
    }
}

fn with_ports(source: IpAddr, destination: IpAddr, ports: &[u8; 4]) -> Addresses {
    let [s0, s1, d0, d1] = *ports;
    Addresses {
        source: SocketAddr::new(source, u16::from_be_bytes([s0, s1])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([d0, d1])),
    }
}

/// The fixed part: signature, version and command, family, length.
const V2_FIXED_LEN: usize = 16;

fn parse_v2(buf: &[u8], max_len: usize) -> Result<Parsed, ProxyError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..seen) != V2_SIGNATURE.get(..seen) {
        return Err(ProxyError::NotProxy);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2Version(version_command >> 4));
    }
    let command = match version_command & 0x0F {
        0x0 => Command::Local,
        0x1 => Command::Proxy,
        other => return Err(ProxyError::V2Command(other)),
    };
    let Some(&family_byte) = buf.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    let family = Family::from_byte(family_byte).ok_or(ProxyError::V2Family(family_byte))?;
    let Some(&[hi, lo]) = buf.get(14..V2_FIXED_LEN) else {
        return Ok(Parsed::Incomplete);
    };

    let block_len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + block_len;
    if total > max_len {
        return Err(ProxyError::V2TooLong {
            len: total,
            max: max_len,
        });
    }
    // Checked for LOCAL too: the TLVs start after the family's address block either way.
    let needed = family.address_len();
    if block_len < needed {
        return Err(ProxyError::V2AddressBlock {
            len: block_len,
            needed,
        });
    }

    // TLVs are checked as far as they have arrived, so a bad one is refused at once.
    let tlv_start = V2_FIXED_LEN + needed;
    let tlvs_seen = buf.get(tlv_start..total.min(buf.len())).unwrap_or_default();
    let checksum_at = check_tlvs(tlvs_seen, total - tlv_start)?;
    let Some(header) = buf.get(..total) else {
        return Ok(Parsed::Incomplete);
    };
    if let Some(at) = checksum_at {
        verify_checksum(header, tlv_start + at)?;
    }

    let addresses = match command {
        Command::Proxy => {
            family.tcp_addresses(header.get(V2_FIXED_LEN..tlv_start).unwrap_or_default())
        }
        Command::Local => None,
    };
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version: Version::V2,
            command,
            addresses,
            tlv_block: header.get(tlv_start..).unwrap_or_default().to_vec(),
        },
        len: total,
    })
}

/// Walks the TLVs of a block of `block_len` bytes, of which `seen` have arrived. Returns
/// where the CRC-32C value is, relative to the block.
fn check_tlvs(seen: &[u8], block_len: usize) -> Result<Option<usize>, ProxyError> {
    let mut at = 0;
    let mut checksum_at = None;
    while at < block_len {
        let left = block_len - at;
        if left < 3 {
            return Err(ProxyError::V2TlvOverrun);
        }
        let Some(&[kind, hi, lo]) = seen.get(at..at + 3) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > left - 3 {
            return Err(ProxyError::V2TlvOverrun);
        }
        let length_allowed = match kind {
            PP2_TYPE_CRC32C => len == 4,
            // "an opaque byte sequence of up to 128 bytes" (section 2.2.5)
            PP2_TYPE_UNIQUE_ID => len <= 128,
            // `client` and `verify` come before any sub-TLV (section 2.2.6).
            PP2_TYPE_SSL => len >= 5,
            _ => true,
        };
        if !length_allowed {
            return Err(ProxyError::V2TlvLength { kind, len });
        }
        let value_at = at + 3;
        if kind == PP2_TYPE_CRC32C && checksum_at.replace(value_at).is_some() {
            return Err(ProxyError::V2DuplicateChecksum);
        }
        let Some(value) = seen.get(value_at..value_at + len) else {
            break;
        };
        if kind == PP2_TYPE_SSL {
            check_ssl_sub_tlvs(value.get(5..).unwrap_or_default())?;
        }
        at = value_at + len;
    }
    Ok(checksum_at)
}

/// The sub-TLVs of `PP2_TYPE_SSL` must fill its value exactly.
fn check_ssl_sub_tlvs(mut subs: &[u8]) -> Result<(), ProxyError> {
    while !subs.is_empty() {
        let (_, rest) = split_tlv(subs).ok_or(ProxyError::V2SslSubTlvs)?;
        subs = rest;
    }
    Ok(())
}

/// Section 2.2.3: the CRC-32C of the whole header with the checksum field taken as zero.
fn verify_checksum(header: &[u8], at: usize) -> Result<(), ProxyError> {
    let (before, field) = header.split_at_checked(at).unwrap_or_default();
    let (carried, after) = field.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
    let carried = u32::from_be_bytes(*carried);
    let computed = Crc32c::new()
        .update(before)
        .update(&[0; 4])
        .update(after)
        .finish();
    if carried == computed {
        Ok(())
    } else {
        Err(ProxyError::V2Checksum { carried, computed })
    }
}
