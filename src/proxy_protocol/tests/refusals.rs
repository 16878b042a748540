//! Refusals: garbage, malformed v1 lines, bad v2 fields, lengths and TLVs, checksums.

use super::*;

#[test]
fn other_protocols_are_refused_at_their_first_byte() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x16\x03\x01\x02\x00",
        b"SSH-2.0-",
        b"proxy ",
        b"\0",
    ] {
        assert_eq!(refused(&bytes[..1]), ProxyError::NotProxy, "{bytes:?}");
        assert_eq!(refused(bytes), ProxyError::NotProxy, "{bytes:?}");
    }
    assert_eq!(refused(b"PROXZ"), ProxyError::NotProxy);
    assert_eq!(refused(b"PROXY\t"), ProxyError::NotProxy);
    assert_eq!(refused(b"\r\n\r\n\0\r\nQUIX"), ProxyError::NotProxy);
    assert_eq!(refused(b"\r\r"), ProxyError::NotProxy);
}

#[test]
fn v1_refusals_come_at_the_first_wrong_byte() {
    use V1Field::*;
    let cases: &[(&[u8], ProxyError)] = &[
        (b"PROXY TCP5", ProxyError::V1Protocol),
        (b"PROXY TCP44", ProxyError::V1Protocol),
        (b"PROXY t", ProxyError::V1Protocol),
        (b"PROXY UNKNOWNX", ProxyError::V1Protocol),
        (b"PROXY  ", ProxyError::V1Protocol),
        (b"PROXY TCP4 01", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4 1.2.3.256", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4 1.2.3.4.", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4 1.2.3 ", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4 1..", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4 :", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP4  ", ProxyError::V1Field(SourceAddress)),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8x",
            ProxyError::V1Field(DestinationAddress),
        ),
        (b"PROXY TCP6 1.", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 12345", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 1::2::", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 :::", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 ::g", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 ::1%", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 ::1.2.3.4:", ProxyError::V1Field(SourceAddress)),
        (b"PROXY TCP6 1:2 ", ProxyError::V1Field(SourceAddress)),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
            ProxyError::V1Field(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 08",
            ProxyError::V1Field(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +",
            ProxyError::V1Field(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 00",
            ProxyError::V1Field(DestinationPort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ",
            ProxyError::V1TrailingField,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r",
            ProxyError::V1Field(DestinationPort),
        ),
        (
            b"PROXY TCP4 1.2.3.4\r",
            ProxyError::V1Field(DestinationAddress),
        ),
        (b"PROXY TCP4\r", ProxyError::V1Field(SourceAddress)),
        (b"PROXY \r", ProxyError::V1Protocol),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n",
            ProxyError::V1StrayLineBreak,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\r",
            ProxyError::V1StrayLineBreak,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX",
            ProxyError::V1StrayLineBreak,
        ),
        (b"PROXY UNKNOWN \n", ProxyError::V1StrayLineBreak),
    ];
    for (bytes, error) in cases {
        assert_eq!(refused(bytes), *error, "{}", String::from_utf8_lossy(bytes));
        let shorter = &bytes[..bytes.len() - 1];
        assert_eq!(
            parse(shorter),
            Ok(Parsed::Incomplete),
            "{}",
            String::from_utf8_lossy(shorter)
        );
    }
}

#[test]
fn a_v1_line_without_crlf_in_107_bytes_is_refused() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX_LEN - 1, b'x');
    assert_eq!(parse(&line), Ok(Parsed::Incomplete));
    line.push(b'x');
    assert_eq!(refused(&line), ProxyError::V1TooLong);
    // The CRLF would end the 108th byte.
    line[V1_MAX_LEN - 1] = b'\r';
    line.push(b'\n');
    assert_eq!(refused(&line), ProxyError::V1TooLong);
    // One byte shorter, it fits.
    line.truncate(V1_MAX_LEN - 2);
    line.extend_from_slice(b"\r\n");
    assert_eq!(complete(&line).addresses, None);
}

#[test]
fn v2_refusals() {
    let fixed = |ver_cmd: u8, fam: u8| raw_v2(ver_cmd, fam, &[])[..14].to_vec();
    assert_eq!(refused(&fixed(0x11, 0x11)[..13]), ProxyError::V2Version(1));
    assert_eq!(refused(&fixed(0x31, 0x11)[..13]), ProxyError::V2Version(3));
    assert_eq!(refused(&fixed(0x22, 0x11)[..13]), ProxyError::V2Command(2));
    assert_eq!(
        refused(&fixed(0x2F, 0x11)[..13]),
        ProxyError::V2Command(0xF)
    );
    for fam in [0x01, 0x10, 0x13, 0x23, 0x30, 0x41, 0xFF] {
        assert_eq!(
            refused(&fixed(0x21, fam)),
            ProxyError::V2Family(fam),
            "family {fam:#x}"
        );
        assert_eq!(
            refused(&fixed(0x20, fam)),
            ProxyError::V2Family(fam),
            "LOCAL, family {fam:#x}"
        );
    }

    // Oversized: refused as soon as the length field arrives.
    let mut big = fixed(0x21, 0x11);
    big.extend_from_slice(&(4096u16 - 15).to_be_bytes());
    assert_eq!(
        refused(&big),
        ProxyError::V2TooLong {
            len: 4097,
            max: MAX_V2_LEN
        }
    );
    assert_eq!(parse_with_limit(&big, 5000), Ok(Parsed::Incomplete));
    assert_eq!(
        parse_with_limit(&big, 64),
        Err(ProxyError::V2TooLong { len: 4097, max: 64 })
    );

    // An address block shorter than its family needs, also refused at once.
    for (fam, needed) in [(0x11, 12), (0x21, 36), (0x31, 216)] {
        let mut short = fixed(0x21, fam);
        short.extend_from_slice(&u16::try_from(needed - 1).unwrap().to_be_bytes());
        let error = ProxyError::V2AddressBlock {
            len: needed - 1,
            needed,
        };
        assert_eq!(refused(&short), error, "family {fam:#x}");
    }
}

#[test]
fn v2_tlv_refusals() {
    let with_tlvs = |tlvs: &[u8]| {
        let mut block = TCP4_BLOCK.to_vec();
        block.extend_from_slice(tlvs);
        raw_v2(0x21, 0x11, &block)
    };
    let mut runs_over = tlv(PP2_TYPE_NOOP, b"abc");
    runs_over.truncate(5);
    let cases: Vec<(Vec<u8>, ProxyError)> = vec![
        (vec![PP2_TYPE_NOOP, 0], ProxyError::V2TlvOverrun),
        (vec![PP2_TYPE_NOOP, 0, 1], ProxyError::V2TlvOverrun),
        (runs_over, ProxyError::V2TlvOverrun),
        (
            [tlv(PP2_TYPE_NOOP, b""), vec![1]].concat(),
            ProxyError::V2TlvOverrun,
        ),
        (
            tlv(PP2_TYPE_CRC32C, &[0; 3]),
            ProxyError::V2TlvLength {
                kind: PP2_TYPE_CRC32C,
                len: 3,
            },
        ),
        (
            tlv(PP2_TYPE_CRC32C, &[0; 5]),
            ProxyError::V2TlvLength {
                kind: PP2_TYPE_CRC32C,
                len: 5,
            },
        ),
        (
            tlv(PP2_TYPE_UNIQUE_ID, &[0; 129]),
            ProxyError::V2TlvLength {
                kind: PP2_TYPE_UNIQUE_ID,
                len: 129,
            },
        ),
        (
            tlv(PP2_TYPE_SSL, &[1, 0, 0, 0]),
            ProxyError::V2TlvLength {
                kind: PP2_TYPE_SSL,
                len: 4,
            },
        ),
        (
            tlv(PP2_TYPE_SSL, &[1, 0, 0, 0, 0, PP2_SUBTYPE_SSL_VERSION, 0]),
            ProxyError::V2SslSubTlvs,
        ),
        (
            tlv(
                PP2_TYPE_SSL,
                &[1, 0, 0, 0, 0, PP2_SUBTYPE_SSL_VERSION, 0, 2, b'x'],
            ),
            ProxyError::V2SslSubTlvs,
        ),
    ];
    for (tlvs, error) in cases {
        assert_eq!(refused(&with_tlvs(&tlvs)), error, "{tlvs:02x?}");
    }
    // The longest unique ID the specification allows is accepted.
    assert_eq!(
        complete(&with_tlvs(&tlv(PP2_TYPE_UNIQUE_ID, &[9; 128]))).tlv(PP2_TYPE_UNIQUE_ID),
        Some(&[9; 128][..])
    );
}

#[test]
fn a_checksum_mismatch_is_refused_and_a_second_checksum_too() {
    let good = v2(
        Some(addresses("192.168.0.1:56324", "192.168.0.11:443")),
        Some(&full_tls()),
    );
    complete(&good);
    // Any changed byte after the fixed part changes the CRC; take one in the SNI.
    let at = good.windows(10).position(|w| w == b"db.example").unwrap();
    let mut bad = good.clone();
    bad[at] = b'D';
    let computed = reference_crc32c(&{
        let mut zeroed = bad.clone();
        zeroed[16 + 12 + 3..16 + 12 + 7].fill(0);
        zeroed
    });
    let carried = u32::from_be_bytes(good[16 + 12 + 3..16 + 12 + 7].try_into().unwrap());
    assert_eq!(refused(&bad), ProxyError::V2Checksum { carried, computed });

    let mut block = TCP4_BLOCK.to_vec();
    block.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
    block.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
    let twice = raw_v2(0x21, 0x11, &block);
    assert_eq!(
        refused(&twice[..16 + 12 + 7 + 3]),
        ProxyError::V2DuplicateChecksum
    );
}

#[test]
fn a_header_without_checksum_is_accepted() {
    let bytes = raw_v2(
        0x21,
        0x11,
        &[&TCP4_BLOCK[..], &tlv(PP2_TYPE_ALPN, b"redis")].concat(),
    );
    assert_eq!(complete(&bytes).tlv(PP2_TYPE_ALPN), Some(&b"redis"[..]));
}

#[test]
fn errors_read_as_sentences() {
    let text = ProxyError::V2Checksum {
        carried: 1,
        computed: 0xABCDEF01,
    }
    .to_string();
    assert_eq!(
        text,
        "PROXY v2 header: CRC32C mismatch (header says 0x00000001, bytes give 0xabcdef01)"
    );
    assert_eq!(
        ProxyError::V1Field(V1Field::SourcePort).to_string(),
        "PROXY v1 header: missing or malformed source port"
    );
    assert_eq!(
        ProxyError::NotProxy.to_string(),
        "the connection did not start with a PROXY protocol header"
    );
}
