//! Handshake messages of any size rustls accepts get through: a ClientHello of 20 KB and
//! of 60 KB, in one record or spread over hundreds of small records and TCP segments, and a
//! client certificate chain of over 40 KB. The receive window grows only for the end that
//! needs it and only while it needs it: afterwards an idle tunnel holds no buffer.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use common::tls_client::client_config;
use common::{args, Backend, Moat, Pki, Tool};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// ALPN names that make a ClientHello of about `bytes` bytes (each name at most 255).
fn alpn_names(bytes: usize) -> Vec<Vec<u8>> {
    (0..bytes / 200)
        .map(|i| format!("{i:04}-{}", "x".repeat(195)).into_bytes())
        .collect()
}

/// A TCP stream that hands the kernel at most `chunk` bytes per write, so a message goes
/// out in many segments (the socket has TCP_NODELAY).
struct Trickle {
    stream: TcpStream,
    chunk: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.stream.write(&buf[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Sends `message` through a TLS connection made with `config` and checks the echo.
fn echo_through(addr: SocketAddr, config: Arc<ClientConfig>, chunk: usize, message: &[u8]) {
    let stream = common::connect(addr);
    stream.set_nodelay(true).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, Trickle { stream, chunk });
    tls.write_all(message).expect("handshake and write");
    let mut got = vec![0; message.len()];
    tls.read_exact(&mut got).expect("echo");
    assert_eq!(got, message);
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).expect("close_notify back");
}

fn config_with(pki: &Pki, alpn_bytes: usize, max_fragment: Option<usize>) -> Arc<ClientConfig> {
    let mut config = (*client_config(pki, Some("client"))).clone();
    config.alpn_protocols = alpn_names(alpn_bytes);
    config.max_fragment_size = max_fragment;
    Arc::new(config)
}

fn assert_no_buffers_held(moat: &Moat, stats_lines: usize) {
    moat.signal("USR1");
    let line = moat.wait_for_count("stats:", stats_lines).pop().unwrap();
    assert!(line.contains("buffers_in_use=0"), "{line}");
}

#[test]
fn client_hellos_of_20_and_60_kb_whole_or_in_small_records_complete() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    for (kb, fragment, chunk) in [
        (20, None, usize::MAX),
        (60, None, usize::MAX),
        (20, Some(512), 700),
        (60, Some(512), 1000),
    ] {
        let config = config_with(&pki, kb * 1000, fragment);
        echo_through(
            moat.addr(),
            config,
            chunk,
            format!("{kb} KB hello").as_bytes(),
        );
    }
    let lines = moat.wait_for_count("end=clean", 4);
    assert_eq!(lines.len(), 4);
    assert_no_buffers_held(&moat, 1);
}

/// `openssl s_client` with a 60 KB ALPN list: a ClientHello written by another TLS stack.
#[test]
fn openssl_with_a_60_kb_client_hello_gets_through() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let names: Vec<String> = alpn_names(60_000)
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    let alpn = names.join(",");
    let (cert, key, ca, addr) = (
        pki.s("client.pem"),
        pki.s("client.key"),
        pki.ca(),
        moat.addr().to_string(),
    );
    #[rustfmt::skip]
    let mut client = Tool::spawn("openssl", &[
        "s_client", "-connect", &addr, "-CAfile", &ca, "-cert", &cert, "-key", &key,
        "-verify_return_error", "-alpn", &alpn, "-quiet",
    ], None);
    let mut stdin = client.take_stdin();
    stdin.write_all(b"through openssl\n").unwrap();
    let got = client.read_stdout_until(|got| got.ends_with(b"\n"));
    assert_eq!(got, b"through openssl\n");
    drop(stdin);
}

/// A client certificate carrying a 41 KB extension (webpki ignores unknown non-critical
/// extensions, so the chain still verifies).
fn write_big_client_identity(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "big-chain CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "big-client");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // An OCTET STRING of 41,000 bytes, DER-encoded, under a private OID.
    let mut content = vec![0x04, 0x82, 0xa0, 0x28];
    content.extend(std::iter::repeat_n(0x5a, 41_000));
    leaf.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 55555, 1],
        content,
    )];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    assert!(cert.der().len() > 41_000);
    std::fs::write(dir.join("big-ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("big.der"), cert.der()).unwrap();
    std::fs::write(dir.join("big.key.der"), key.serialize_der()).unwrap();
}

/// A server-mode moat trusting the big-chain CA, and a client configuration presenting the
/// big certificate.
fn big_identity_setup(pki: &Pki, backend: &Backend) -> (Moat, ClientConfig) {
    write_big_client_identity(&pki.dir);
    let mut argv = pki.server_args(&backend.target());
    let ca_at = argv.iter().position(|a| a == "--client-ca").unwrap() + 1;
    argv[ca_at] = pki.s("big-ca.pem");
    let moat = Moat::start(&args(&argv));
    let chain = vec![CertificateDer::from(
        std::fs::read(pki.path("big.der")).unwrap(),
    )];
    let key = PrivateKeyDer::try_from(std::fs::read(pki.path("big.key.der")).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(base_roots(pki))
        .with_client_auth_cert(chain, key)
        .unwrap();
    (moat, config)
}

#[test]
fn a_client_certificate_chain_of_over_40_kb_is_verified_and_gets_through() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (moat, config) = big_identity_setup(&pki, &backend);
    for fragment in [None, Some(1024)] {
        let mut config = config.clone();
        config.max_fragment_size = fragment;
        echo_through(moat.addr(), Arc::new(config), 1500, b"a big certificate");
    }
    let line = moat.wait_for_count("end=clean", 2).pop().unwrap();
    assert!(line.contains("CN=big-client"), "{line}");
    assert_no_buffers_held(&moat, 1);
}

fn base_roots(pki: &Pki) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS 1.3 client may send application data right behind its Finished. Behind a large
/// certificate it is read into the grown window while the handshake is still under way,
/// and can exceed what the decrypted-data window takes at once; the rest waits, encrypted,
/// until the backend has taken some. Every byte arrives.
#[test]
fn data_sent_right_behind_a_large_flight_is_all_delivered() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (moat, config) = big_identity_setup(&pki, &backend);
    let mut sock = common::connect(moat.addr());
    let mut conn =
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    // Run the handshake up to the client's last flight, but send that flight only together
    // with the data.
    while conn.is_handshaking() {
        if conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        } else {
            conn.read_tls(&mut sock).unwrap();
            conn.process_new_packets().unwrap();
        }
    }
    let data = common::random_bytes(90_000, 9);
    conn.set_buffer_limit(None);
    conn.writer().write_all(&data).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    tls.flush().unwrap();
    let mut got = vec![0; data.len()];
    tls.read_exact(&mut got).unwrap();
    assert!(got == data, "the echo differs");
}
