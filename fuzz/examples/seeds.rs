//! Writes the seed inputs each target's corpus started from, into `fuzz/corpus/<target>/`
//! (`seed-*` files; `cargo fuzz cmin` later folds them into the minimised corpus):
//!
//! ```sh
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use moat::proxy_protocol::{
    cipher_name, encode_v1, encode_v1_unknown, encode_v2, tls_version_name, Addresses, ClientCert,
    TlsFacts,
};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write_all(&root.join("cli"), cli());
    write_all(&root.join("config"), config());
    write_all(&root.join("proxy_header"), proxy_header());
    write_all(&root.join("policy"), policy());
    write_all(&root.join("tunnel"), tunnel());
}

fn write_all(dir: &PathBuf, seeds: Vec<Vec<u8>>) {
    fs::create_dir_all(dir).expect("corpus directory");
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), seed).expect("seed file");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn cli() -> Vec<Vec<u8>> {
    let lines = [
        "server --listen 127.0.0.1:7000 --target 127.0.0.1:6379 --cert c.pem --key k.pem --client-ca ca.pem",
        "server --listen [::1]:7000 --target 127.0.0.1:1 --target [::1]:2 --cert a --key b --cert c --key d --no-client-auth --alpn h2,http/1.1 --min-tls 1.3",
        "server --listen 0.0.0.0:6380 --target 10.0.0.1:6379 --unsafe-target --cert c --key k --client-ca ca --allow-cn *.internal --allow-ou ops --allow-dns *.example.com --allow-uri spiffe://example.org/* --allow-spki sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= --crl r.pem",
        "client --listen 127.0.0.1:6379 --target db.example:6380 --ca ca.pem --cert c --key k --server-name db.example --ciphers TLS13_AES_128_GCM_SHA256 --groups X25519,P-256",
        "client --listen 127.0.0.1:1 --target [::1]:2 --handshake-timeout 250ms --connect-timeout 5s --idle-timeout 5m --close-timeout 1h --shutdown-timeout 30s",
        "demo --listen 127.0.0.1:9000 --max-conns 100 --max-conns-per-ip 4 --max-handshakes 16 --log-level debug --no-sandbox",
        "--help",
        "-V",
        "server --listen unix:/run/moat.sock --target :80",
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut seed = vec![i as u8];
            seed.extend_from_slice(line.replace(' ', "\0").as_bytes());
            seed
        })
        .collect()
}

/// Config files: every key of each kind of table, lists, defaults at the top, and a few
/// mistakes (a typo, a wrong type, a duplicate name, TOML that does not parse).
fn config() -> Vec<Vec<u8>> {
    [
        r#"log-level = "info"
idle-timeout = "10m"
max-conns = 1000
workers = 2
status = "127.0.0.1:9100"

[[server]]
name = "redis"
listen = ":6380"
target = "unix:/run/redis/redis.sock"
cert = "certs/server.pem"
key = "certs/server.key"
client-ca = "certs/ca.pem"
allow-cn = ["billing-*", "ops-*"]
allow-uri = "spiffe://example.org/ns/prod/*"
crl = ["a.crl", "b.crl"]
alpn = "redis"
proxy-protocol = "v2"

[[client]]
name = "postgres"
listen = "127.0.0.1:5432"
target = ["db.example:5433", "[::1]:5433"]
ca = "certs/ca.pem"
server-name = "db.example"
groups = "X25519MLKEM768,X25519"
"#,
        "[[server]]\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\ncert = \"c\"\nkey = \"k\"\nno-client-auth = true\nmin-tls = \"1.3\"\naccept-proxy = true\nproxy-timeout = \"3s\"\nunix-mode = \"0660\"\n",
        "[[server]]\ncertt = \"x\"\n",
        "[[server]]\nname = \"a\"\n[[server]]\nname = \"a\"\n",
        "[[client]]\nlisten = 5\n",
        "server = 1\n",
        "[[server\n",
        "log-format = \"json\"\nreload-interval = \"30s\"\nshutdown-timeout = \"1m\"\n",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .collect()
}

fn proxy_header() -> Vec<Vec<u8>> {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
    let pairs = [
        (addr("203.0.113.7:51234"), addr("10.0.0.1:6380")),
        (addr("[2001:db8::7]:51234"), addr("[2001:db8::1]:443")),
        (addr("203.0.113.7:1"), addr("[::ffff:10.0.0.1]:65535")),
    ];
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
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for (source, destination) in pairs {
        let addresses = Some(Addresses {
            source,
            destination,
        });
        let mut v1 = Vec::new();
        encode_v1(source, destination, &mut v1);
        headers.push(v1);
        for facts in [None, Some(&tls)] {
            let mut v2 = Vec::new();
            encode_v2(addresses, facts, &mut v2);
            headers.push(v2);
        }
    }
    let mut unknown = Vec::new();
    encode_v1_unknown(&mut unknown);
    headers.push(unknown);
    let mut local = Vec::new();
    encode_v2(None, Some(&tls), &mut local);
    headers.push(local);
    headers
        .into_iter()
        .flat_map(|header| {
            // The default cap, and a cap the header is just over.
            let tight = (header.len() as u16).saturating_sub(1).to_le_bytes();
            [[0x00, 0x10], tight].map(|cap| {
                let mut seed = cap.to_vec();
                seed.extend_from_slice(&header);
                seed.extend_from_slice(b"GET / HTTP/1.1\r\n");
                seed
            })
        })
        .collect()
}

fn policy() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for der in certificates() {
        let mut raw = vec![0];
        raw.extend_from_slice(&der);
        seeds.push(raw);
    }
    // Edits of the development certificates: replace a leaf, retag, duplicate, remove, flip.
    for base in 0..3u8 {
        seeds.push(vec![
            1, base, 0, 30, 0, 9, b'a', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e',
        ]);
        seeds.push(vec![
            1, base, 1, 40, 0, 0x86, 2, 20, 0, 3, 5, 0, 4, 7, 0, 3, 0xff,
        ]);
    }
    let names = [
        "moat-demo-client\0research\0api.example.com\0spiffe://example.org/ns/prod/sa/x",
        "a.b.internal\0ops.eu\0DB.EXAMPLE.\0https://x.example.com/api/v2/v1",
        "svc-billing-prod\0\0localhost\0urn:moat:db",
        "bad\x1bname\0\"quoted\"\0\0\0\0",
    ];
    for (i, text) in names.iter().enumerate() {
        let mut seed = vec![2, i as u8];
        seed.extend_from_slice(text.as_bytes());
        seeds.push(seed);
    }
    for text in [
        "*.example.com\0a.example.com\0a.b.example.com\0A.Example.COM.",
        "svc-*-prod\0svc-x-prod\0svc--prod\0svc-prod",
        "a*b*c\0abc\0aXbYc\0acb",
    ] {
        let mut seed = vec![3];
        seed.extend_from_slice(text.as_bytes());
        seeds.push(seed);
    }
    seeds
}

/// Certificates made with rcgen: every kind of name the allow-list reads, and none.
fn certificates() -> Vec<Vec<u8>> {
    let make =
        |cn: &str, ous: &[&str], sans: Vec<SanType>, alg: &'static rcgen::SignatureAlgorithm| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            for ou in ous {
                params
                    .distinguished_name
                    .push(DnType::OrganizationalUnitName, *ou);
            }
            params
                .distinguished_name
                .push(DnType::OrganizationName, "moat fuzz");
            params.subject_alt_names = sans;
            let key = KeyPair::generate_for(alg).expect("key");
            params
                .self_signed(&key)
                .expect("certificate")
                .der()
                .to_vec()
        };
    let dns = |s: &str| SanType::DnsName(s.try_into().expect("dns name"));
    let uri = |s: &str| SanType::URI(s.try_into().expect("uri"));
    vec![
        make(
            "moat-demo-client",
            &["research", "ops.eu"],
            vec![
                dns("api.example.com"),
                dns("*.internal"),
                uri("spiffe://example.org/ns/prod/sa/billing"),
            ],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        make(
            "svc-x-prod",
            &[],
            vec![uri("https://a.example.com/api/x/v1"), uri("urn:moat:db")],
            &rcgen::PKCS_ED25519,
        ),
        make("nobody", &[], Vec::new(), &rcgen::PKCS_ECDSA_P384_SHA384),
        make(
            "ip-only",
            &["a", "b", "c"],
            vec![
                SanType::IpAddress("127.0.0.1".parse().expect("ip")),
                dns("localhost"),
            ],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
    ]
}

/// Tunnel scripts (see `moat::fuzzing::tunnel` for the operations).
fn tunnel() -> Vec<Vec<u8>> {
    const SETTLE: u8 = 20;
    let full: &[u8] = &[
        SETTLE, 0, 0x00, 0xa0, 3, 0x34, 0x12, 17, SETTLE, 10, 14, SETTLE,
    ];
    let stepwise: &[u8] = &[
        8, 9, 1, 0, 0, 8, 9, 2, 0, 1, 1, 0, 0, 8, 9, 2, 0, 0, 0, 0, 0x20, 1, 0x00, 0x01, 8, 9, 5,
        0, 0, 3, 0, 0x10, 4, 0, 0x01, 7, 1, 9, 8, 9, 2, 0, 0, 10, 11, 14, SETTLE,
    ];
    let faults: &[u8] = &[
        SETTLE, 0, 0xff, 0xff, 1, 0x00, 0x04, 8, 9, 12, SETTLE, 15, SETTLE,
    ];
    let garbage: &[u8] = &[
        18, 12, 0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, 0, SETTLE, 19, SETTLE,
    ];
    let mut seeds = Vec::new();
    for setup in [0u8, 1, 2, 3, 4, 5, 0b111000, 0b111001] {
        for (caps, ops) in [
            ([0, 200], full),
            ([40, 3], stepwise),
            ([60, 60], faults),
            ([255, 255], garbage),
        ] {
            let mut seed = vec![setup, caps[0], caps[1]];
            seed.extend_from_slice(ops);
            seeds.push(seed);
        }
    }
    seeds
}
