//! The PROXY protocol end to end, with the real binary and real peers:
//!
//! - `--proxy-protocol v1|v2` towards nginx (`listen … proxy_protocol`) and HAProxy
//!   (`accept-proxy`), which report the TLS client's address; the v2 TLVs read back with
//!   moat's own parser; a server that speaks first gets its header at once.
//! - `--accept-proxy` fed good v1/v2 headers (IPv4, IPv6), truncated, oversized, garbage
//!   and slow ones; `--max-conns-per-ip` counting the header's address; HAProxy with
//!   `send-proxy-v2` in front of moat, as docs/ARCHITECTURE.md describes.
//!
//! nginx and HAProxy must be installed (`.ci/run` installs them): a missing one fails.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::daemons::Daemon;
use common::tls_client::{client_config, tls_connect, tls_echo};
use common::{args, wait_closed, Backend, Moat, Pki, PATIENCE};
use moat::proxy_protocol::{self as pp, Addresses, Command, Parsed, ProxyHeader, Version};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Sends an HTTP/1.0 GET through a TLS tunnel and reads the answer to the end; returns it
/// with the client's own address (what the server behind should report).
fn http_get(addr: SocketAddr, config: Arc<ClientConfig>) -> (String, SocketAddr) {
    let mut tls = tls_connect(addr, config);
    let client = tls.sock.local_addr().unwrap();
    tls.write_all(b"GET / HTTP/1.0\r\nHost: moat.test\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server closed after answering; how the end reached us does not matter here.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the answer: {e}"),
    }
    (String::from_utf8_lossy(&answer).into_owned(), client)
}

/// The body of an HTTP answer.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// What a backend read at the start of a connection.
struct Received {
    header: ProxyHeader,
    /// Bytes of the stream that had arrived behind the header when it was whole.
    behind: usize,
}

/// A backend that reads a PROXY header with moat's own parser and hands it over, then
/// writes `greeting` and echoes the rest of the stream.
fn proxy_backend(greeting: &'static [u8]) -> (Backend, mpsc::Receiver<Result<Received, String>>) {
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut stream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (header, len) = loop {
            match pp::parse(&buf) {
                Ok(Parsed::Complete { header, len }) => break (header, len),
                Ok(Parsed::Incomplete) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{e}; bytes {buf:?}")));
                    return;
                }
            }
            match stream.read(&mut chunk) {
                Ok(n @ 1..) => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    let _ = tx.send(Err(format!("closed after {buf:?}")));
                    return;
                }
            }
        };
        let behind = buf.len() - len;
        let _ = tx.send(Ok(Received { header, behind }));
        let _ = stream.write_all(greeting);
        let _ = stream.write_all(&buf[len..]);
        let mut reader = stream.try_clone().unwrap();
        let _ = io::copy(&mut reader, &mut stream);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    });
    (backend, rx)
}

fn received(rx: &mpsc::Receiver<Result<Received, String>>) -> Received {
    match rx.recv_timeout(PATIENCE) {
        Ok(Ok(received)) => received,
        Ok(Err(why)) => panic!("the backend refused the header: {why}"),
        Err(_) => panic!("the backend received no PROXY header"),
    }
}

/// Echoes `message` over `tls`, then ends the tunnel with `close_notify` and waits until
/// moat closes it.
fn echo_and_close(tls: &mut Tls, message: &[u8]) {
    tls.write_all(message).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0u8; message.len()];
    tls.read_exact(&mut back).expect("echo through the tunnel");
    assert_eq!(back, message);
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
}

fn with_alpn(config: &Arc<ClientConfig>, protocol: &[u8]) -> Arc<ClientConfig> {
    let mut config = (**config).clone();
    config.alpn_protocols = vec![protocol.to_vec()];
    Arc::new(config)
}

#[test]
fn nginx_reports_the_tls_clients_address_from_v1_and_v2_headers() {
    let pki = Pki::new();
    let nginx = Daemon::nginx(
        "proxy_protocol",
        r#"location / { return 200 "$proxy_protocol_addr $proxy_protocol_port\n"; }"#,
    );
    let config = client_config(&pki, Some("client"));
    for version in ["v1", "v2"] {
        let mut argv = pki.server_args(&nginx.addr.to_string());
        argv.extend(["--proxy-protocol".into(), version.into()]);
        let moat = Moat::start(&args(&argv));
        let (answer, client) = http_get(moat.addr(), config.clone());
        assert!(answer.starts_with("HTTP/1.1 200"), "{version}: {answer:?}");
        let expected = format!("{} {}\n", client.ip(), client.port());
        assert_eq!(body(&answer), expected, "{version}: what nginx saw");
    }
}

#[test]
fn haproxy_reports_the_clients_address_and_the_sni_from_v1_and_v2_headers() {
    let pki = Pki::new();
    let haproxy = Daemon::haproxy(
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 20s\n  timeout server 20s\n\
         frontend behind_moat\n  bind 127.0.0.1:{port} accept-proxy\n  \
         http-request return status 200 content-type text/plain lf-string \
         \"%[src] %[src_port] %[dst] %[dst_port] %[fc_pp_authority]\\n\"\n",
    );
    let config = client_config(&pki, Some("client"));
    // `fc_pp_authority` is empty without a v2 authority TLV.
    for (version, authority) in [("v1", ""), ("v2", "localhost")] {
        let mut argv = pki.server_args(&haproxy.addr.to_string());
        argv.extend(["--proxy-protocol".into(), version.into()]);
        let moat = Moat::start(&args(&argv));
        let (answer, client) = http_get(moat.addr(), config.clone());
        assert!(answer.starts_with("HTTP/1.1 200"), "{version}: {answer:?}");
        let listen = moat.addr();
        let expected = format!(
            "{} {} {} {} {authority}\n",
            client.ip(),
            client.port(),
            listen.ip(),
            listen.port()
        );
        assert_eq!(body(&answer), expected, "{version}: what HAProxy saw");
    }
}

/// HAProxy 2.6 exposes only the authority TLV, so the rest of the v2 header is read with
/// moat's own strict parser (CRC32C checked) and compared with the specification.
#[test]
fn v2_tlvs_carry_alpn_sni_and_the_ssl_facts() {
    let pki = Pki::new();
    let (backend, headers) = proxy_backend(b"");
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--proxy-protocol", "v2", "--alpn", "redis"].map(String::from));
    let moat = Moat::start(&args(&argv));
    let config = with_alpn(&client_config(&pki, Some("client")), b"redis");
    let mut tls = tls_connect(moat.addr(), config);
    let client = tls.sock.local_addr().unwrap();
    echo_and_close(&mut tls, b"PING\r\n");

    let Received { header, .. } = received(&headers);
    assert_eq!(header.version, Version::V2);
    assert_eq!(header.command, Command::Proxy);
    let expected = Addresses {
        source: client,
        destination: moat.addr(),
    };
    assert_eq!(header.addresses, Some(expected));
    assert_eq!(header.tlv(pp::PP2_TYPE_ALPN), Some(&b"redis"[..]));
    assert_eq!(header.tlv(pp::PP2_TYPE_AUTHORITY), Some(&b"localhost"[..]));
    assert_eq!(header.tlv(pp::PP2_TYPE_CRC32C).map(<[u8]>::len), Some(4));
    let ssl = header.ssl().expect("a PP2_TYPE_SSL TLV");
    assert_eq!(
        ssl.client,
        pp::PP2_CLIENT_SSL | pp::PP2_CLIENT_CERT_CONN | pp::PP2_CLIENT_CERT_SESS
    );
    assert_eq!(ssl.verify, 0, "a verified client certificate");
    let sub = |kind| {
        ssl.sub_tlv(kind)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(sub(pp::PP2_SUBTYPE_SSL_VERSION).as_deref(), Some("TLSv1.3"));
    assert_eq!(sub(pp::PP2_SUBTYPE_SSL_CN).as_deref(), Some("test-client"));
    assert_eq!(
        sub(pp::PP2_SUBTYPE_SSL_CIPHER).as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );
    // moat does not send _KEY_ALG and _SIG_ALG (HAProxy's opt-in cert-key, cert-sig).
    let sub_kinds: Vec<u8> = ssl.sub_tlvs().map(|t| t.kind).collect();
    let expected_sub = [
        pp::PP2_SUBTYPE_SSL_VERSION,
        pp::PP2_SUBTYPE_SSL_CN,
        pp::PP2_SUBTYPE_SSL_CIPHER,
    ];
    assert_eq!(sub_kinds, expected_sub, "sub-TLVs: {sub_kinds:#04x?}");
    // In HAProxy's order (docs/ARCHITECTURE.md).
    let kinds: Vec<u8> = header.tlvs().map(|t| t.kind).collect();
    let expected_kinds = [
        pp::PP2_TYPE_CRC32C,
        pp::PP2_TYPE_ALPN,
        pp::PP2_TYPE_AUTHORITY,
        pp::PP2_TYPE_SSL,
    ];
    assert_eq!(kinds, expected_kinds, "TLVs sent: {kinds:#04x?}");
}

/// MySQL, SMTP and the like greet first: the header must go out as soon as the backend is
/// connected, not wait for a first byte from the client that never comes.
#[test]
fn a_server_that_speaks_first_gets_its_header_before_the_client_sends_anything() {
    let pki = Pki::new();
    let config = client_config(&pki, Some("client"));
    for version in ["v1", "v2"] {
        let (backend, headers) = proxy_backend(b"220 moat.test ready\r\n");
        let mut argv = pki.server_args(&backend.target());
        argv.extend(["--proxy-protocol".into(), version.into()]);
        let moat = Moat::start(&args(&argv));
        let mut tls = tls_connect(moat.addr(), config.clone());
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        let Received { header, behind } = received(&headers);
        assert_eq!(
            behind, 0,
            "{version}: only the header came before the greeting"
        );
        assert_eq!(
            header.source(),
            Some(tls.sock.local_addr().unwrap()),
            "{version}"
        );
        let mut greeting = [0u8; 21];
        tls.read_exact(&mut greeting).expect("the greeting");
        assert_eq!(&greeting, b"220 moat.test ready\r\n", "{version}");
    }
}

/// A TLS connection to an `--accept-proxy` moat that starts with `header`; the header and
/// the ClientHello go out in one write, as a load balancer's often do.
fn proxied_tls(addr: SocketAddr, header: &[u8], config: Arc<ClientConfig>) -> Tls {
    let mut sock = common::connect(addr);
    let mut conn =
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut first = header.to_vec();
    conn.write_tls(&mut first).unwrap();
    sock.write_all(&first).unwrap();
    StreamOwned::new(conn, sock)
}

fn v2_header(source: &str, destination: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let addresses = Addresses {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    };
    pp::encode_v2(Some(addresses), None, &mut out);
    out
}

fn accept_proxy_args(pki: &Pki, target: &str, extra: &[&str]) -> Vec<String> {
    let mut argv = pki.server_args(target);
    argv.push("--accept-proxy".into());
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

#[test]
fn accept_proxy_takes_the_client_from_good_v1_and_v2_headers_and_passes_it_on() {
    let pki = Pki::new();
    let (backend, headers) = proxy_backend(b"");
    let argv = accept_proxy_args(&pki, &backend.target(), &["--proxy-protocol", "v2"]);
    let moat = Moat::start(&args(&argv));
    let config = client_config(&pki, Some("client"));
    let cases = [
        (
            b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 443\r\n".to_vec(),
            "192.0.2.7:40000",
            "127.0.0.1:443",
        ),
        (
            v2_header("198.51.100.8:40001", "203.0.113.1:443"),
            "198.51.100.8:40001",
            "203.0.113.1:443",
        ),
        (
            v2_header("[2001:db8::9]:40002", "[2001:db8::1]:443"),
            "[2001:db8::9]:40002",
            "[2001:db8::1]:443",
        ),
    ];
    for (header, source, destination) in cases {
        let mut tls = proxied_tls(moat.addr(), &header, config.clone());
        echo_and_close(&mut tls, b"through the balancer");
        let line = moat.wait_for(&format!("peer={source} "));
        assert!(
            line.contains("tunnel closed") && line.ends_with("end=clean"),
            "{line}"
        );
        let Received { header, .. } = received(&headers);
        let expected = Addresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        };
        assert_eq!(header.addresses, Some(expected), "passed on to the backend");
    }
}

/// Sends `bytes` (then closes, if `close`) and waits until moat closes the connection;
/// returns the one log line about it.
fn refused(moat: &Moat, bytes: &[u8], close: bool) -> String {
    let mut sock = common::connect(moat.addr());
    let local = sock.local_addr().unwrap();
    sock.write_all(bytes).unwrap();
    if close {
        sock.shutdown(std::net::Shutdown::Write).unwrap();
    }
    wait_closed(&mut sock).expect("moat closes the connection");
    let needle = format!("peer={local} ");
    let line = moat.wait_for(&needle);
    assert_eq!(
        moat.lines_with(&format!("{local}")).len(),
        1,
        "one line per refusal:\n{}",
        moat.dump()
    );
    assert!(line.contains("WARN  tunnel closed"), "{line}");
    line
}

#[test]
fn accept_proxy_refuses_missing_truncated_oversized_and_garbage_headers_with_one_line_each() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let moat = Moat::start(&args(&accept_proxy_args(&pki, &backend.target(), &[])));
    let good_v2 = v2_header("192.0.2.1:1000", "127.0.0.1:443");
    let mut corrupt = good_v2.clone();
    corrupt[17] ^= 0x40; // a bit of the source address: the CRC32C no longer matches
    let mut huge = pp::V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let mut hello = Vec::new();
    let mut conn = ClientConnection::new(
        client_config(&pki, Some("client")),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    conn.write_tls(&mut hello).unwrap();
    let long_v1 = [&b"PROXY UNKNOWN "[..], &[b'x'; 200]].concat();
    let cases: [(&str, &[u8], bool, &str); 7] = [
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            false,
            "bad PROXY header: the connection did not start with a PROXY protocol header",
        ),
        (
            "missing",
            &hello,
            false,
            "bad PROXY header: the connection did not start with a PROXY protocol header",
        ),
        (
            "oversized v2",
            &huge,
            false,
            "bad PROXY header: PROXY v2 header: 65551 bytes, more than the 4096 accepted",
        ),
        (
            "oversized v1",
            &long_v1,
            false,
            "bad PROXY header: PROXY v1 header: no CRLF within 107 bytes",
        ),
        (
            "corrupt v2",
            &corrupt,
            false,
            "bad PROXY header: PROXY v2 header: CRC32C mismatch",
        ),
        (
            "truncated v1",
            b"PROXY TCP4 192.0.2.1 12",
            true,
            "the connection closed in the middle of a PROXY header",
        ),
        (
            "truncated v2",
            &good_v2[..20],
            true,
            "the connection closed in the middle of a PROXY header",
        ),
    ];
    for (name, bytes, close, why) in cases {
        let line = refused(&moat, bytes, close);
        assert!(line.contains(&format!("end={why}")), "{name}: {line}");
    }
    assert_eq!(
        backend.accepted(),
        0,
        "a refused client reached the backend"
    );
}

#[test]
fn a_header_dribbled_byte_by_byte_gets_in_and_one_that_stops_is_closed_at_the_proxy_timeout() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let config = client_config(&pki, Some("client"));
    // The default --proxy-timeout (3s) leaves the dribble ample time.
    let patient = Moat::start(&args(&accept_proxy_args(&pki, &backend.target(), &[])));
    let mut sock = common::connect(patient.addr());
    sock.set_nodelay(true).unwrap();
    for byte in b"PROXY TCP4 192.0.2.44 127.0.0.1 4444 443\r\n" {
        sock.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(2)); // each byte its own segment
    }
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    echo_and_close(&mut tls, b"slowly");
    let line = patient.wait_for("peer=192.0.2.44:4444 ");
    assert!(line.ends_with("end=clean"), "{line}");

    let timeout = Duration::from_millis(300);
    let strict = Moat::start(&args(&accept_proxy_args(
        &pki,
        &backend.target(),
        &["--proxy-timeout", "300ms"],
    )));
    let started = Instant::now();
    let line = refused(&strict, b"PROXY TCP4 192.0.2.45 127.0", false);
    assert!(
        started.elapsed() >= timeout,
        "closed before --proxy-timeout"
    );
    assert!(line.contains("end=proxy header timeout"), "{line}");
}

#[test]
fn max_conns_per_ip_counts_the_address_in_the_header() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let argv = accept_proxy_args(&pki, &backend.target(), &["--max-conns-per-ip", "1"]);
    let moat = Moat::start(&args(&argv));
    let config = client_config(&pki, Some("client"));
    let header = |source: &str| v2_header(source, "127.0.0.1:443");
    let echo = |tls: &mut Tls| -> io::Result<[u8; 2]> {
        tls.write_all(b"hi")?;
        tls.flush()?;
        let mut back = [0u8; 2];
        tls.read_exact(&mut back).map(|_| back)
    };

    let mut first = proxied_tls(moat.addr(), &header("192.0.2.1:1000"), config.clone());
    assert_eq!(&echo(&mut first).unwrap(), b"hi");
    // The same proxied address again, while the first is open: refused.
    let mut again = proxied_tls(moat.addr(), &header("192.0.2.1:1001"), config.clone());
    assert!(
        echo(&mut again).is_err(),
        "a second tunnel from 192.0.2.1 got in"
    );
    let line = moat.wait_for("peer=192.0.2.1:1001 ");
    assert!(
        line.contains("end=refused: too many tunnels from this address"),
        "{line}"
    );
    // Another proxied address through the same real one (127.0.0.1): admitted.
    let mut other = proxied_tls(moat.addr(), &header("192.0.2.2:1000"), config.clone());
    assert_eq!(&echo(&mut other).unwrap(), b"hi");
    assert_eq!(backend.accepted(), 2);
    echo_and_close(&mut first, b"bye");
    echo_and_close(&mut other, b"bye");
}

/// The tested example of docs/ARCHITECTURE.md ("Scaling past one machine"): an L4
/// balancer that passes the client's address with PROXY v2 and checks `/healthz`, so a
/// moat that drains stops getting new clients while its open tunnels finish.
#[test]
fn behind_haproxy_send_proxy_v2_moat_logs_the_real_client_and_drains() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let argv = accept_proxy_args(&pki, &backend.target(), &["--status", "127.0.0.1:0"]);
    let mut moat = Moat::start(&args(&argv));
    let (addr, status) = (moat.addr_of("server"), moat.addr_of("status"));
    let haproxy = Daemon::haproxy(&format!(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  \
         timeout check 5s\n\
         frontend tls_in\n  bind 127.0.0.1:{{port}}\n  default_backend moats\n\
         backend moats\n  option httpchk GET /healthz\n  \
         server moat1 {addr} send-proxy-v2 check port {} inter 200ms fall 1 rise 1\n",
        status.port()
    ));
    let config = client_config(&pki, Some("client"));
    let mut tls = tls_connect(haproxy.addr, config.clone());
    let client = tls.sock.local_addr().unwrap();
    echo_and_close(&mut tls, b"hello through haproxy");
    let line = moat.wait_for(&format!("peer={client} "));
    assert!(line.ends_with("end=clean"), "{line}");
    assert!(
        line.contains("subject=\"O=moat tests,CN=test-client\""),
        "{line}"
    );

    // A tunnel stays open across the drain; HAProxy sees /healthz turn 503.
    let mut open = tls_connect(haproxy.addr, config.clone());
    open.write_all(b"before").unwrap();
    let mut back = [0u8; 6];
    open.read_exact(&mut back).unwrap();
    moat.terminate();
    haproxy.wait_for("moats/moat1 is DOWN");
    assert!(
        tls_echo(haproxy.addr, config, b"x").is_err(),
        "a new client reached a draining moat"
    );
    echo_and_close(&mut open, b"after the drain began");
    assert!(moat.wait_exit().success());
}

/// A plaintext listener (client mode) behind a balancer reads the header the same way.
#[test]
fn client_mode_takes_the_client_from_the_header_on_its_plaintext_listener() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let mut argv = pki.client_args(&server.addr().to_string());
    argv.push("--accept-proxy".into());
    let client = Moat::start(&args(&argv));
    let mut sock = common::connect(client.addr());
    sock.write_all(b"PROXY TCP6 2001:db8::50 2001:db8::1 5000 6379\r\nplain words")
        .unwrap();
    let mut back = [0u8; 11];
    sock.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"plain words", "only the bytes behind the header");
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut sock).unwrap();
    let line = client.wait_for("peer=[2001:db8::50]:5000 ");
    assert!(line.contains("tunnel closed: client "), "{line}");
    assert!(line.ends_with("end=clean"), "{line}");
}
