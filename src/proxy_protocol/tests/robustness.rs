//! The parser on inputs nobody wrote by hand: every prefix and one-byte mutation of valid
//! headers, and pseudo-random bytes. Besides "never panics", each input is checked for the
//! properties the loop relies on:
//!
//! - a refusal is final: once a prefix is refused, every longer one is;
//! - a header does not depend on the bytes after it: once a prefix is complete, every
//!   longer one gives the same header and length, and the length is where it became whole;
//! - waiting is bounded: `Incomplete` only below `max_header_len(MAX_V2_LEN)` bytes.

use std::net::SocketAddr;

use super::super::*;

fn addresses(source: &str, destination: &str) -> Option<Addresses> {
    let parse = |s: &str| s.parse::<SocketAddr>().ok();
    Some(Addresses {
        source: parse(source)?,
        destination: parse(destination)?,
    })
}

/// Valid headers of every kind the module writes, and a few it only reads.
fn valid_headers() -> Vec<Vec<u8>> {
    let tls = TlsFacts {
        alpn: Some(b"postgresql"),
        sni: Some("db.example"),
        version: tls_version_name(0x0304),
        cipher: cipher_name(0x1303),
        client_cert: ClientCert::Verified,
        client_cn: Some("billing"),
        sig_alg: Some("ecdsa-with-SHA256"),
        key_alg: Some("EC256"),
    };
    let mut headers = Vec::new();
    let mut push = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        headers.push(out);
    };
    let a4 = addresses("203.0.113.7:51234", "10.0.0.1:6380");
    let a6 = addresses("[2001:db8::7]:51234", "[2001:db8::1]:443");
    let mixed = addresses("203.0.113.7:51234", "[2001:db8::1]:443");
    for a in [a4, a6, mixed] {
        let a = a.unwrap_or_else(|| unreachable!());
        push(&|out| encode_v1(a.source, a.destination, out));
        push(&|out| encode_v2(Some(a), None, out));
        push(&|out| encode_v2(Some(a), Some(&tls), out));
    }
    push(&|out| encode_v1_unknown(out));
    push(&|out| encode_v2(None, Some(&tls), out));
    push(&|out| {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        out.extend_from_slice(format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n").as_bytes());
    });
    push(&|out| out.extend_from_slice(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 0 65535\r\n"));
    // A unix-stream v2 header: 216 address bytes and a TLV, no checksum.
    push(&|out| {
        out.extend_from_slice(&V2_SIGNATURE);
        out.extend_from_slice(&[0x21, 0x31, 0, 216 + 5]);
        out.extend_from_slice(&[b'/'; 216]);
        out.extend_from_slice(&[PP2_TYPE_AUTHORITY, 0, 2, b'h', b'i']);
    });
    headers
}

/// What `parse` said about each prefix of `bytes`, checked against the properties above.
fn check_every_prefix(bytes: &[u8]) {
    let mut refused = None;
    let mut completed: Option<(ProxyHeader, usize)> = None;
    for end in 0..=bytes.len() {
        let prefix = &bytes[..end];
        let result = parse(prefix);
        match (&result, &refused, &completed) {
            (Err(_), _, None) => refused = Some(end),
            (Ok(Parsed::Incomplete), None, None) => {
                assert!(end < max_header_len(MAX_V2_LEN), "Incomplete at {end} bytes");
            }
            (Ok(Parsed::Complete { header, len }), None, None) => {
                assert_eq!(*len, end, "became complete at {end} but claims {len}: {bytes:02x?}");
                completed = Some((header.clone(), *len));
            }
            (Ok(Parsed::Complete { header, len }), None, Some((first, first_len))) => {
                assert_eq!((header, len), (first, first_len), "header changed with bytes after it");
            }
            _ => panic!(
                "inconsistent at {end} bytes: {result:?} after refused={refused:?} complete={completed:?}: {bytes:02x?}"
            ),
        }
    }
}

/// Bytes the tunnel might send right behind a header.
const TAIL: &[u8] = b"\r\n\r\nPROXY \0\x16\x03\x01 *1\r\n$4\r\nPING\r\n";

#[test]
fn every_prefix_of_a_valid_header_is_incomplete_and_the_whole_is_complete() {
    for header in valid_headers() {
        let with_tail = [&header[..], TAIL].concat();
        check_every_prefix(&with_tail);
        for end in 0..header.len() {
            assert_eq!(
                parse(&header[..end]),
                Ok(Parsed::Incomplete),
                "{header:02x?} at {end}"
            );
        }
        match parse(&with_tail) {
            Ok(Parsed::Complete { len, .. }) => assert_eq!(len, header.len()),
            other => panic!("{other:?} for {header:02x?}"),
        }
    }
}

#[test]
fn every_one_byte_mutation_is_handled_consistently() {
    for header in valid_headers() {
        // A short tail keeps the run short; the prefix test above uses all of it.
        let with_tail = [&header[..], &TAIL[..8]].concat();
        for at in 0..header.len() {
            let original = with_tail[at];
            let mut mutated = with_tail.clone();
            // Every value at every position, whole buffer only: no panic.
            for value in 0..=255u8 {
                mutated[at] = value;
                let _ = parse(&mutated);
            }
            // Values that tend to matter, every prefix: the properties hold.
            let telling = [
                0x00,
                0xFF,
                b' ',
                b'\r',
                b'\n',
                b'0',
                b'9',
                b':',
                b'.',
                original ^ 0x01,
                original ^ 0x80,
                original.wrapping_add(1),
            ];
            for value in telling {
                mutated[at] = value;
                check_every_prefix(&mutated);
            }
        }
        // Cut short at every length: a header never claims bytes it does not have.
        for end in 0..header.len() {
            check_every_prefix(&header[..end]);
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }

    fn pick(&mut self, from: &[u8]) -> u8 {
        from[self.below(from.len())]
    }
}

#[test]
fn random_inputs_never_panic_and_keep_the_properties() {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let v1_alphabet = b"PROXY TCP46UNKNOW0123456789abcdefABCDEF:. \r\n";
    for round in 0..20_000 {
        let mut bytes = match round % 4 {
            0 => Vec::new(),
            1 => b"PROXY ".to_vec(),
            2 => V2_SIGNATURE.to_vec(),
            _ => {
                let mut v2 = V2_SIGNATURE.to_vec();
                v2.extend_from_slice(&[0x21, [0x00, 0x11, 0x21, 0x31][random.below(4)]]);
                v2
            }
        };
        let len = random.below(300);
        while bytes.len() < len {
            let byte = match round % 4 {
                1 => random.pick(v1_alphabet),
                _ => random.next().to_le_bytes()[0],
            };
            bytes.push(byte);
        }
        // A length field kept small, so v2 headers can complete within the buffer.
        if round % 4 == 3 && bytes.len() >= 16 {
            bytes[14] = 0;
            bytes[15] = u8::try_from(random.below(200)).unwrap_or(0);
        }
        check_every_prefix(&bytes);
    }
}

#[test]
fn the_largest_header_moat_sends_fits_the_default_cap() {
    let long = "x".repeat(255);
    let tls = TlsFacts {
        alpn: Some(long.as_bytes()),
        sni: Some(&long),
        version: Some(&long),
        cipher: Some(&long),
        client_cert: ClientCert::Verified,
        client_cn: Some(&long),
        sig_alg: Some(&long),
        key_alg: Some(&long),
    };
    let mut out = Vec::new();
    encode_v2(
        addresses("[2001:db8::7]:1", "[2001:db8::1]:2"),
        Some(&tls),
        &mut out,
    );
    assert!(out.len() <= 2048, "{} bytes", out.len());
    assert!(matches!(parse(&out), Ok(Parsed::Complete { len, .. }) if len == out.len()));
}
