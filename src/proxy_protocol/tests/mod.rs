//! Headers checked byte for byte against HAProxy's `doc/proxy-protocol.txt`: its examples,
//! round trips through encoder and parser, each refusal (here and in `refusals`), and the
//! parser on inputs nobody wrote by hand (`robustness`).

mod refusals;
mod robustness;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn addresses(source: &str, destination: &str) -> Addresses {
    Addresses {
        source: addr(source),
        destination: addr(destination),
    }
}

fn v1(source: &str, destination: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_v1(addr(source), addr(destination), &mut out);
    out
}

fn v2(addresses: Option<Addresses>, tls: Option<&TlsFacts<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_v2(addresses, tls, &mut out);
    out
}

/// Parses `bytes`, which must be one whole header and nothing more.
fn complete(bytes: &[u8]) -> ProxyHeader {
    match parse(bytes) {
        Ok(Parsed::Complete { header, len }) => {
            assert_eq!(len, bytes.len(), "header length");
            header
        }
        other => panic!("expected a complete header, got {other:?} for {bytes:02x?}"),
    }
}

fn refused(bytes: &[u8]) -> ProxyError {
    match parse(bytes) {
        Err(e) => e,
        other => panic!("expected a refusal, got {other:?} for {bytes:02x?}"),
    }
}

/// A CRC-32C computed bit by bit, independent of the table the module uses.
fn reference_crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Builds a v2 header from its parts as section 2.2 lays them out, checksum left as is.
fn raw_v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The CRC32C TLV of a header built with a zero checksum, filled in as section 2.2.3 says.
fn fill_checksum(header: &mut [u8], value_at: usize) {
    let crc = reference_crc32c(header);
    header[value_at..value_at + 4].copy_from_slice(&crc.to_be_bytes());
}

const TCP4_BLOCK: [u8; 12] = [192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB];

fn full_tls() -> TlsFacts<'static> {
    TlsFacts {
        alpn: Some(b"h2"),
        sni: Some("db.example"),
        version: tls_version_name(0x0304),
        cipher: cipher_name(0x1301),
        client_cert: ClientCert::Verified,
        client_cn: Some("billing"),
        sig_alg: Some("ecdsa-with-SHA256"),
        key_alg: Some("EC256"),
    }
}

// ---- The specification's own examples ----

#[test]
fn the_v2_signature_is_the_one_in_the_specification() {
    assert_eq!(
        V2_SIGNATURE,
        [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    );
    assert_eq!(&V2_SIGNATURE, b"\r\n\r\n\0\r\nQUIT\n");
}

#[test]
fn the_example_line_before_an_http_request_parses_and_leaves_the_request() {
    let bytes = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
    let Ok(Parsed::Complete { header, len }) = parse(bytes) else {
        panic!("the example does not parse");
    };
    assert_eq!(
        &bytes[len..],
        b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    );
    assert_eq!(header.version, Version::V1);
    assert_eq!(header.command, Command::Proxy);
    assert_eq!(
        header.addresses,
        Some(addresses("192.168.0.1:56324", "192.168.0.11:443"))
    );
    assert_eq!(header.tlvs().count(), 0);
}

#[test]
fn the_longest_lines_of_section_2_1_parse_at_their_stated_lengths() {
    let tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_eq!(tcp4.len(), 56);
    assert_eq!(
        complete(tcp4).addresses,
        Some(addresses("255.255.255.255:65535", "255.255.255.255:65535"))
    );

    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
    assert_eq!(tcp6.len(), 104);
    let ip = Ipv6Addr::from([0xFF; 16]);
    let expected = SocketAddr::new(ip.into(), 65535);
    assert_eq!(
        complete(tcp6.as_bytes()).addresses,
        Some(Addresses {
            source: expected,
            destination: expected,
        })
    );

    let unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(unknown.len(), 15);
    assert_eq!(complete(unknown).addresses, None);

    let worst = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
    assert_eq!(worst.len(), V1_MAX_LEN);
    assert_eq!(complete(worst.as_bytes()).addresses, None);
}

#[test]
fn ipv6_text_may_be_compressed_upper_case_or_end_in_ipv4() {
    let header = complete(b"PROXY TCP6 2001:DB8::1 ::ffff:192.0.2.7 1 0\r\n");
    let a = header.addresses.unwrap();
    assert_eq!(a.source, addr("[2001:db8::1]:1"));
    assert_eq!(a.destination, addr("[::ffff:192.0.2.7]:0"));
}

#[test]
fn a_v2_header_built_from_the_specification_parses() {
    // TCP over IPv4, PROXY command, then a NOOP and a custom TLV.
    let mut block = TCP4_BLOCK.to_vec();
    block.extend(tlv(PP2_TYPE_NOOP, &[0, 0]));
    block.extend(tlv(0xE0, b"custom"));
    let bytes = raw_v2(0x21, 0x11, &block);
    let header = complete(&bytes);
    assert_eq!(header.version, Version::V2);
    assert_eq!(header.command, Command::Proxy);
    assert_eq!(
        header.addresses,
        Some(addresses("192.168.0.1:56324", "192.168.0.11:443"))
    );
    let tlvs: Vec<_> = header.tlvs().collect();
    assert_eq!(
        tlvs,
        [
            Tlv {
                kind: PP2_TYPE_NOOP,
                value: &[0, 0]
            },
            Tlv {
                kind: 0xE0,
                value: b"custom"
            }
        ]
    );
}

// ---- Encoding, byte for byte ----

#[test]
fn v1_tcp4_is_the_example_line() {
    assert_eq!(
        v1("192.168.0.1:56324", "192.168.0.11:443"),
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    );
    assert_eq!(
        v1("0.0.0.0:0", "10.0.0.1:7"),
        b"PROXY TCP4 0.0.0.0 10.0.0.1 0 7\r\n"
    );
}

#[test]
fn v1_tcp6_and_mixed_families() {
    assert_eq!(
        v1("[2001:db8::1]:40000", "[::1]:6380"),
        b"PROXY TCP6 2001:db8::1 ::1 40000 6380\r\n"
    );
    // One line has one family: IPv4 is written IPv4-mapped, as HAProxy does.
    assert_eq!(
        v1("192.0.2.7:5000", "[2001:db8::2]:443"),
        b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 5000 443\r\n"
    );
    // An IPv4 client seen through a dual-stack socket is an IPv4 client.
    assert_eq!(
        v1("[::ffff:192.0.2.7]:5000", "[::ffff:192.0.2.1]:443"),
        b"PROXY TCP4 192.0.2.7 192.0.2.1 5000 443\r\n"
    );
}

#[test]
fn v1_unknown_is_the_short_form() {
    let mut out = b"already here".to_vec();
    encode_v1_unknown(&mut out);
    assert_eq!(out, b"already herePROXY UNKNOWN\r\n");
}

#[test]
fn v2_tcp4_byte_for_byte() {
    let bytes = v2(
        Some(addresses("192.168.0.1:56324", "192.168.0.11:443")),
        None,
    );
    let mut expected = raw_v2(0x21, 0x11, &TCP4_BLOCK);
    expected.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
    expected[14..16].copy_from_slice(&19u16.to_be_bytes());
    fill_checksum(&mut expected, 16 + 12 + 3);
    assert_eq!(bytes, expected);
}

#[test]
fn v2_tcp6_and_mixed_families_byte_for_byte() {
    let bytes = v2(Some(addresses("[2001:db8::1]:1", "192.0.2.1:2")), None);
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
    block.extend_from_slice(&[0, 1, 0, 2]);
    block.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
    let mut expected = raw_v2(0x21, 0x21, &block);
    fill_checksum(&mut expected, 16 + 36 + 3);
    assert_eq!(bytes, expected);
}

#[test]
fn v2_without_addresses_is_local_unspec_as_haproxy_sends_it() {
    let bytes = v2(None, None);
    let mut expected = raw_v2(0x20, 0x00, &tlv(PP2_TYPE_CRC32C, &[0; 4]));
    fill_checksum(&mut expected, 16 + 3);
    assert_eq!(bytes, expected);
    let header = complete(&bytes);
    assert_eq!(header.command, Command::Local);
    assert_eq!(header.addresses, None);
}

#[test]
fn v2_tls_tlvs_byte_for_byte_in_haproxy_order() {
    let bytes = v2(
        Some(addresses("192.168.0.1:56324", "192.168.0.11:443")),
        Some(&full_tls()),
    );

    let mut ssl = vec![
        PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
        0,
        0,
        0,
        0,
    ];
    ssl.extend(tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"));
    ssl.extend(tlv(PP2_SUBTYPE_SSL_CN, b"billing"));
    ssl.extend(tlv(PP2_SUBTYPE_SSL_KEY_ALG, b"EC256"));
    ssl.extend(tlv(PP2_SUBTYPE_SSL_SIG_ALG, b"ecdsa-with-SHA256"));
    ssl.extend(tlv(PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256"));
    let mut block = TCP4_BLOCK.to_vec();
    block.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
    block.extend(tlv(PP2_TYPE_ALPN, b"h2"));
    block.extend(tlv(PP2_TYPE_AUTHORITY, b"db.example"));
    block.extend(tlv(PP2_TYPE_SSL, &ssl));
    let mut expected = raw_v2(0x21, 0x11, &block);
    fill_checksum(&mut expected, 16 + 12 + 3);
    assert_eq!(bytes, expected);
}

#[test]
fn the_ssl_tlv_reports_each_client_certificate_case() {
    let cases = [
        (ClientCert::None, PP2_CLIENT_SSL, 1, None),
        (
            ClientCert::Verified,
            PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            0,
            Some(&b"billing"[..]),
        ),
        (
            ClientCert::VerifiedInSession,
            PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS,
            0,
            Some(&b"billing"[..]),
        ),
    ];
    for (client_cert, bits, verify, cn) in cases {
        let facts = TlsFacts {
            client_cert,
            ..full_tls()
        };
        let header = complete(&v2(None, Some(&facts)));
        let ssl = header.ssl().unwrap();
        assert_eq!((ssl.client, ssl.verify), (bits, verify), "{client_cert:?}");
        // The CN belongs to a certificate: without one it is not sent.
        assert_eq!(ssl.sub_tlv(PP2_SUBTYPE_SSL_CN), cn, "{client_cert:?}");
    }
}

#[test]
fn empty_and_over_long_values_are_left_out_never_cut() {
    let long = "a".repeat(256);
    let longest = "b".repeat(255);
    let facts = TlsFacts {
        alpn: Some(b""),
        sni: Some(&long),
        version: None,
        cipher: Some(&longest),
        client_cert: ClientCert::Verified,
        client_cn: Some(&long),
        ..TlsFacts::default()
    };
    let header = complete(&v2(None, Some(&facts)));
    assert_eq!(header.tlv(PP2_TYPE_ALPN), None);
    assert_eq!(header.tlv(PP2_TYPE_AUTHORITY), None);
    let ssl = header.ssl().unwrap();
    let subs: Vec<_> = ssl.sub_tlvs().collect();
    assert_eq!(
        subs,
        [Tlv {
            kind: PP2_SUBTYPE_SSL_CIPHER,
            value: longest.as_bytes()
        }]
    );
}

#[test]
fn tls_names_are_spelled_as_haproxy_writes_them() {
    assert_eq!(tls_version_name(0x0304), Some("TLSv1.3"));
    assert_eq!(tls_version_name(0x0303), Some("TLSv1.2"));
    assert_eq!(tls_version_name(0x0302), None);
    assert_eq!(cipher_name(0x1302), Some("TLS_AES_256_GCM_SHA384"));
    assert_eq!(cipher_name(0xC02F), Some("ECDHE-RSA-AES128-GCM-SHA256"));
    assert_eq!(cipher_name(0xCCA9), Some("ECDHE-ECDSA-CHACHA20-POLY1305"));
    assert_eq!(cipher_name(0x0000), None);
}

#[test]
fn haproxys_crc32c_test_vector() {
    // reg-tests/sample_fetches/hashes.vtc: bytes 0..=255 give 2621708363.
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(reference_crc32c(&bytes), 2_621_708_363);
    assert_eq!(crc32c::crc32c(&bytes), 2_621_708_363);
}

// ---- Round trips ----

#[test]
fn round_trips_through_v1() {
    for (source, destination) in [
        ("10.1.2.3:4567", "10.0.0.1:6380"),
        ("[2001:db8::7]:65535", "[2001:db8::1]:0"),
        ("192.0.2.7:5000", "[::1]:443"),
    ] {
        let header = complete(&v1(source, destination));
        let a = header.addresses.unwrap();
        let canon = |s: &str| addr(s).ip().to_canonical();
        assert_eq!(a.source.ip().to_canonical(), canon(source));
        assert_eq!(a.destination.ip().to_canonical(), canon(destination));
        assert_eq!(
            (a.source.port(), a.destination.port()),
            (addr(source).port(), addr(destination).port())
        );
    }
    let mut unknown = Vec::new();
    encode_v1_unknown(&mut unknown);
    assert_eq!(complete(&unknown).addresses, None);
}

#[test]
fn round_trips_through_v2_with_every_tlv() {
    let tls = full_tls();
    for a in [
        Some(addresses("10.1.2.3:4567", "10.0.0.1:6380")),
        Some(addresses("[2001:db8::7]:65535", "[2001:db8::1]:0")),
        None,
    ] {
        let header = complete(&v2(a, Some(&tls)));
        assert_eq!(header.addresses, a);
        assert_eq!(
            header.command,
            if a.is_some() {
                Command::Proxy
            } else {
                Command::Local
            }
        );
        assert_eq!(header.tlv(PP2_TYPE_ALPN), Some(&b"h2"[..]));
        assert_eq!(header.tlv(PP2_TYPE_AUTHORITY), Some(&b"db.example"[..]));
        assert_eq!(header.tlv(PP2_TYPE_CRC32C).map(<[u8]>::len), Some(4));
        let ssl = header.ssl().unwrap();
        for (kind, value) in [
            (PP2_SUBTYPE_SSL_VERSION, "TLSv1.3"),
            (PP2_SUBTYPE_SSL_CN, "billing"),
            (PP2_SUBTYPE_SSL_CIPHER, "TLS_AES_128_GCM_SHA256"),
            (PP2_SUBTYPE_SSL_SIG_ALG, "ecdsa-with-SHA256"),
            (PP2_SUBTYPE_SSL_KEY_ALG, "EC256"),
        ] {
            assert_eq!(
                ssl.sub_tlv(kind),
                Some(value.as_bytes()),
                "sub-TLV {kind:#x}"
            );
        }
    }
}

#[test]
fn a_plain_connection_sends_no_tls_tlvs() {
    let header = complete(&v2(Some(addresses("10.1.2.3:4567", "10.0.0.1:6380")), None));
    let kinds: Vec<u8> = header.tlvs().map(|t| t.kind).collect();
    assert_eq!(kinds, [PP2_TYPE_CRC32C]);
    assert!(header.ssl().is_none());
}

#[test]
fn the_header_appends_and_the_tunnel_bytes_follow_it() {
    let mut out = b"xyz".to_vec();
    encode_v2(
        Some(addresses("10.1.2.3:4567", "10.0.0.1:6380")),
        Some(&full_tls()),
        &mut out,
    );
    let header_len = out.len() - 3;
    out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    let Ok(Parsed::Complete { len, .. }) = parse(&out[3..]) else {
        panic!("does not parse after other bytes");
    };
    assert_eq!(len, header_len);
    assert_eq!(&out[3 + len..], b"*1\r\n$4\r\nPING\r\n");
}

#[test]
fn families_moat_does_not_relay_fall_back_to_unspecified() {
    for (fam, len) in [(0x00, 0), (0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)] {
        let header = complete(&raw_v2(0x21, fam, &vec![7; len]));
        assert_eq!(header.addresses, None, "family {fam:#x}");
        assert_eq!(header.tlvs().count(), 0, "family {fam:#x}");
    }
    // LOCAL ignores the addresses it carries, and its TLVs follow them.
    let mut block = TCP4_BLOCK.to_vec();
    block.extend(tlv(PP2_TYPE_AUTHORITY, b"x"));
    let header = complete(&raw_v2(0x20, 0x11, &block));
    assert_eq!((header.command, header.addresses), (Command::Local, None));
    assert_eq!(header.tlv(PP2_TYPE_AUTHORITY), Some(&b"x"[..]));
}

// ---- What HAProxy sends ----
//
// Captured from HAProxy 2.6.12 (`send-proxy-v2 proxy-v2-options
// ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c`, and `send-proxy`) in front of
// a listener on 127.0.0.1, with moat's development certificates.

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A TLS 1.3 client with a verified certificate, ALPN h2, SNI db.example.
const HAPROXY_V2_CLIENT_CERT: &str =
    "0d0a0d0a000d0a515549540a2111007f7f0000017f000001eb7c47e20300042883691b01000268320200\
    0a64622e6578616d706c652000570700000000210007544c5376312e332200106d6f61742d64656d6f2d\
    636c69656e74250005454332353624001165636473612d776974682d534841323536230016544c535f41\
    45535f3235365f47434d5f534841333834";

/// A TLS 1.2 client without a certificate, no ALPN.
const HAPROXY_V2_NO_CERT: &str =
    "0d0a0d0a000d0a515549540a2111006e7f0000017f000001eb8447e20300044da697c202000a64622e65\
    78616d706c6520004b0100000000210007544c5376312e32250005454332353624001165636473612d77\
    6974682d53484132353623001d45434448452d45434453412d4145533235362d47434d2d534841333834";

/// A plain TCP client.
const HAPROXY_V2_PLAIN: &str =
    "0d0a0d0a000d0a515549540a2111001b7f0000017f000001bb8e47e30300045d0e0b3620000500000000\
    00";

#[test]
fn moat_writes_the_very_bytes_haproxy_writes_for_a_client_certificate() {
    let facts = TlsFacts {
        alpn: Some(b"h2"),
        sni: Some("db.example"),
        version: tls_version_name(0x0304),
        cipher: cipher_name(0x1302),
        client_cert: ClientCert::Verified,
        client_cn: Some("moat-demo-client"),
        sig_alg: Some("ecdsa-with-SHA256"),
        key_alg: Some("EC256"),
    };
    let ours = v2(
        Some(addresses("127.0.0.1:60284", "127.0.0.1:18402")),
        Some(&facts),
    );
    assert_eq!(ours, hex(HAPROXY_V2_CLIENT_CERT));
}

#[test]
fn haproxys_headers_parse() {
    let with_cert = complete(&hex(HAPROXY_V2_CLIENT_CERT));
    assert_eq!(
        with_cert.addresses,
        Some(addresses("127.0.0.1:60284", "127.0.0.1:18402"))
    );
    let ssl = with_cert.ssl().unwrap();
    assert_eq!((ssl.client, ssl.verify), (0x07, 0));
    assert_eq!(
        ssl.sub_tlv(PP2_SUBTYPE_SSL_CN),
        Some(&b"moat-demo-client"[..])
    );

    let without = complete(&hex(HAPROXY_V2_NO_CERT));
    assert_eq!(without.tlv(PP2_TYPE_ALPN), None);
    let ssl = without.ssl().unwrap();
    // HAProxy leaves `verify` at 0 when there is no certificate; moat writes 1, as the
    // specification asks ("non-zero otherwise"). Everything else is the same.
    assert_eq!((ssl.client, ssl.verify), (PP2_CLIENT_SSL, 0));
    assert_eq!(ssl.sub_tlv(PP2_SUBTYPE_SSL_VERSION), Some(&b"TLSv1.2"[..]));
    assert_eq!(
        ssl.sub_tlv(PP2_SUBTYPE_SSL_CIPHER),
        cipher_name(0xC02C).map(str::as_bytes)
    );

    // Without TLS HAProxy still sends an SSL TLV, with no bits set; moat sends none.
    let plain = complete(&hex(HAPROXY_V2_PLAIN));
    assert_eq!(plain.ssl().map(|s| (s.client, s.verify)), Some((0, 0)));
}

#[test]
fn moat_writes_the_very_line_haproxy_writes() {
    let haproxy = b"PROXY TCP4 127.0.0.1 127.0.0.1 39846 18405\r\n";
    assert_eq!(v1("127.0.0.1:39846", "127.0.0.1:18405"), haproxy);
    assert_eq!(complete(haproxy).source(), Some(addr("127.0.0.1:39846")));
}
