//! The subject of a peer's certificate, as one short line for the log: `CN=client,O=moat`.
//!
//! The certificate has already been verified by rustls when this runs, but its bytes still
//! come from the peer, so the walk below never indexes blindly and never panics: anything
//! unexpected yields `None`. A full X.509 parser would be a large dependency for one log
//! field; the subject sits at a fixed place in the certificate and DER is simple to walk.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xA0;

/// Attribute types worth naming, by the last byte of their `2.5.4.x` object identifier.
const ATTRIBUTES: [(u8, &str); 6] = [
    (3, "CN"),
    (6, "C"),
    (7, "L"),
    (8, "ST"),
    (10, "O"),
    (11, "OU"),
];

/// Longest subject text kept for the log.
const MAX_LEN: usize = 200;

/// The subject of a DER certificate as `CN=...,O=...`, or `None` if it cannot be read.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der, SEQUENCE)?;
    let (_, mut tbs, _) = tlv(cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = tlv(tbs, VERSION)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        tbs = any_tlv(tbs)?.2;
    }
    let (_, mut name, _) = tlv(tbs, SEQUENCE)?;
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, rdn, rest) = tlv(name, SET)?;
        name = rest;
        let (_, attribute, _) = tlv(rdn, SEQUENCE)?;
        let (_, oid, value) = tlv(attribute, OID)?;
        let (_, text, _) = any_tlv(value)?;
        if let [0x55, 0x04, last] = oid {
            if let Some((_, label)) = ATTRIBUTES.iter().find(|(id, _)| id == last) {
                parts.push(format!("{label}={}", printable(text)));
            }
        }
    }
    let mut line = parts.join(",");
    if line.len() > MAX_LEN {
        let cut = (0..=MAX_LEN)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    Some(line)
}

/// One DER element with the expected tag: (tag, contents, what follows).
fn tlv(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    any_tlv(input).filter(|(t, _, _)| *t == tag)
}

/// One DER element of any (single-byte) tag.
fn any_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(count..)?)
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, rest.get(len..)?))
}

/// Attribute text made safe for a log line: a peer must not be able to forge log lines.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x05],
        ] {
            assert_eq!(subject(input), None);
        }
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(printable(b"a\nb\x1b"), "a?b?");
    }
}
