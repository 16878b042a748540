//! The PROXY protocol v1/v2 parser ([`crate::proxy_protocol::parse`] and
//! [`crate::proxy_protocol::parse_with_limit`]) on arbitrary bytes.
//!
//! Input: two bytes that pick the v2 length cap, then the bytes received. Checked, with
//! the default cap and the chosen one: no panic; a complete header's `len` is within the
//! input, the first `len` bytes alone give the same header, and one byte fewer is not yet
//! whole; an answer never changes once given (a refusal stays a refusal, a header stays the
//! same header, whatever comes after); `Incomplete` only below `max_header_len`; every
//! refusal displays as one line; a header's addresses, written again by moat's encoder and
//! parsed back, are the same addresses.

use std::net::SocketAddr;

use super::{is_one_line, Input};
use crate::proxy_protocol::{
    encode_v1, encode_v2, max_header_len, parse, parse_with_limit, Addresses, Parsed, ProxyError,
    MAX_V2_LEN,
};

/// Inputs up to this long have every prefix parsed; longer ones a sample of prefixes.
const EVERY_PREFIX_UP_TO: usize = 300;

/// Runs one input; panics if an invariant breaks.
pub fn run(input: &[u8]) {
    let mut input = Input::new(input);
    let cap = usize::from(input.u16());
    let bytes = input.rest();
    check(bytes, MAX_V2_LEN, &|b| parse(b));
    check(bytes, cap, &|b| parse_with_limit(b, cap));
    assert_eq!(parse(bytes), parse_with_limit(bytes, MAX_V2_LEN));
}

type Parser<'a> = &'a dyn Fn(&[u8]) -> Result<Parsed, ProxyError>;

fn check(bytes: &[u8], cap: usize, parser: Parser<'_>) {
    let whole = parser(bytes);
    match &whole {
        Ok(Parsed::Complete { header, len }) => {
            assert!(*len <= bytes.len(), "len {len} past {} bytes", bytes.len());
            let head = bytes.get(..*len).unwrap_or_default();
            assert_eq!(parser(head), whole, "the header alone parses differently");
            let short = bytes.get(..len.saturating_sub(1)).unwrap_or_default();
            assert_eq!(
                parser(short),
                Ok(Parsed::Incomplete),
                "whole before its end"
            );
            let _ = (header.source(), header.tlvs().count(), header.ssl());
            if let Some(ssl) = header.ssl() {
                let _ = ssl.sub_tlvs().count();
            }
            if let Some(addresses) = header.addresses {
                encoded_again(addresses);
            }
        }
        Ok(Parsed::Incomplete) => assert!(
            bytes.len() < max_header_len(cap),
            "still incomplete after {} bytes (cap {cap})",
            bytes.len()
        ),
        Err(e) => assert!(is_one_line(&e.to_string()), "{e:?}"),
    }
    // An answer, once given, stands: every longer input gives the same one.
    for at in prefix_lengths(bytes.len()) {
        let earlier = parser(bytes.get(..at).unwrap_or_default());
        assert!(
            stands(&earlier, &whole),
            "{earlier:?} at {at} bytes, then {whole:?}"
        );
    }
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(b"\r\n\0PROXY ");
    let later = parser(&longer);
    assert!(
        stands(&whole, &later),
        "{whole:?}, then {later:?} with more bytes"
    );
}

/// Whether `later`, for a longer input, keeps the answer `earlier` gave: a refusal stays a
/// refusal (its wording may differ), a header stays the same header at the same length.
fn stands(earlier: &Result<Parsed, ProxyError>, later: &Result<Parsed, ProxyError>) -> bool {
    match earlier {
        Ok(Parsed::Incomplete) => true,
        Ok(complete) => later.as_ref() == Ok(complete),
        Err(_) => later.is_err(),
    }
}

fn prefix_lengths(len: usize) -> Box<dyn Iterator<Item = usize>> {
    if len <= EVERY_PREFIX_UP_TO {
        Box::new(0..len)
    } else {
        let fixed = [16, 28, 52, 107, 232, len / 2, len - 1];
        Box::new(fixed.into_iter().chain((0..len).step_by(97)))
    }
}

/// The addresses of a header, encoded by moat and parsed back, are the same addresses
/// (IPv4-mapped ones compared as the IPv4 addresses they are: the encoder writes them so).
fn encoded_again(addresses: Addresses) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let expected = (
        canonical(addresses.source),
        canonical(addresses.destination),
    );
    for encode in [encode_v1, |s, d, out: &mut Vec<u8>| {
        encode_v2(
            Some(Addresses {
                source: s,
                destination: d,
            }),
            None,
            out,
        )
    }] {
        let mut out = Vec::new();
        encode(addresses.source, addresses.destination, &mut out);
        let again = match parse(&out) {
            Ok(Parsed::Complete { header, .. }) => header.addresses,
            other => panic!("moat's own header {out:?} parses as {other:?}"),
        };
        let again = again.map(|a| (canonical(a.source), canonical(a.destination)));
        assert_eq!(again, Some(expected), "re-encoded as {out:?}");
    }
}
