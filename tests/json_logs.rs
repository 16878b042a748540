//! `--log-format json` from the real binary: every line on standard error is one JSON
//! object with `ts`, `level` and `msg`; a tunnel's closing line carries its facts as
//! fields with the right values; debug lines about a tunnel carry its id; and a client
//! certificate whose subject holds quotes and control characters cannot break a line.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use common::pki::Spec;
use common::tls_client::{client_config, tls_connect};
use common::{args, random_bytes, Backend, Moat, Pki};
use rustls::ClientConfig;
use serde_json::{Map, Value};

type Object = Map<String, Value>;

/// A subject a hostile client could put in its certificate: quotes, a backslash, line
/// breaks, other control characters, and text that looks like JSON and like a log line.
const HOSTILE_CN: &str =
    "evil\"}\n{\"level\":\"ERROR\",\"msg\":\"forged\\\" \r\t\u{1}\u{1b}[31m end=clean";

/// Every line moat wrote so far, each parsed as one JSON object with `ts`, `level`, `msg`.
fn objects(moat: &Moat) -> Vec<Object> {
    moat.dump()
        .lines()
        .map(|line| {
            let object = match serde_json::from_str(line) {
                Ok(Value::Object(object)) => object,
                other => panic!("not one JSON object: {line:?} ({other:?})"),
            };
            let ts = object["ts"]
                .as_str()
                .unwrap_or_else(|| panic!("ts in {line}"));
            let shape = ts.len() == 24
                && ts.ends_with('Z')
                && ts.as_bytes()[10] == b'T'
                && ts.as_bytes()[19] == b'.';
            assert!(shape, "ts {ts:?} is not RFC 3339 UTC with milliseconds");
            let level = object["level"].as_str().unwrap_or_default();
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
                "level in {line}"
            );
            assert!(object["msg"].is_string(), "msg in {line}");
            object
        })
        .collect()
}

fn msg(object: &Object) -> &str {
    object["msg"].as_str().unwrap_or_default()
}

/// The address in the `SERVICE: listening on ADDR, ...` line.
fn listen_addr(moat: &Moat) -> SocketAddr {
    moat.wait_for("server: listening on ");
    objects(moat)
        .iter()
        .find_map(|o| msg(o).strip_prefix("server: listening on "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|addr| addr.parse().ok())
        .expect("the listening line")
}

fn with_alpn(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"redis".to_vec()];
    Arc::new(config)
}

/// Echoes `data` through one tunnel, ends it with `close_notify`, and returns the client's
/// address (the tunnel's peer).
fn tunnel(addr: SocketAddr, config: Arc<ClientConfig>, data: &[u8]) -> SocketAddr {
    let mut tls = tls_connect(addr, config);
    let peer = tls.sock.local_addr().unwrap();
    tls.write_all(data).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let _ = tls.read_to_end(&mut Vec::new());
    peer
}

/// The closing line of the tunnel whose peer was `peer`, once it is there.
fn closing_line(moat: &Moat, peer: SocketAddr) -> Object {
    moat.wait_for(&format!("\"peer\":\"{peer}\""));
    let mut found: Vec<Object> = objects(moat)
        .into_iter()
        .filter(|o| msg(o) == "tunnel closed" && o["peer"] == peer.to_string())
        .collect();
    assert_eq!(found.len(), 1, "one closing line for {peer}");
    found.remove(0)
}

/// The id in the debug line `tunnel ID: accepted PEER on SERVICE`.
fn accepted_id(moat: &Moat, peer: SocketAddr) -> u64 {
    let objects = objects(moat);
    let line = objects
        .iter()
        .find(|o| msg(o).ends_with(&format!(": accepted {peer} on server")))
        .expect("the accepted line");
    let id: u64 = msg(line)
        .strip_prefix("tunnel ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .expect("an id in the accepted line");
    assert_eq!(line["tunnel"], id, "the accepted line carries its tunnel");
    id
}

#[test]
fn json_lines_carry_each_tunnels_facts_and_survive_a_hostile_subject() {
    let pki = Pki::new();
    pki.issue("hostile", &Spec::client(HOSTILE_CN));
    let backend = Backend::echo();
    let mut argv = pki.server_args(&backend.target());
    argv.extend(
        [
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--alpn",
            "redis",
        ]
        .map(String::from),
    );
    let mut moat = Moat::start(&args(&argv));
    let addr = listen_addr(&moat);

    let data = random_bytes(12_345, 7);
    let peer = tunnel(addr, with_alpn(client_config(&pki, Some("client"))), &data);
    let line = closing_line(&moat, peer);
    let id = accepted_id(&moat, peer);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["tunnel"], id);
    assert_eq!(line["service"], "server");
    assert_eq!(line["subject"], "O=moat tests,CN=test-client");
    assert_eq!(line["sni"], "localhost");
    assert_eq!(line["alpn"], "redis");
    assert_eq!(line["tls_version"], "1.3");
    assert_eq!(line["suite"], "TLS13_AES_128_GCM_SHA256");
    let group = line["group"].as_str().expect("group");
    assert!(
        group.starts_with('X') || group.starts_with("secp"),
        "{group}"
    );
    assert_eq!(line["resumed"], false);
    assert_eq!(line["to_target"], data.len());
    assert_eq!(line["to_client"], data.len());
    assert!(line["duration_ms"].is_u64(), "{line:?}");
    assert_eq!(line["end"], "clean");

    // The subject is the peer's text: made printable, then escaped, never raw.
    let hostile = tunnel(addr, client_config(&pki, Some("hostile")), b"x");
    let line = closing_line(&moat, hostile);
    let printable: String = HOSTILE_CN
        .chars()
        .map(|c| match c {
            c if c.is_control() => '?',
            '"' => '\'',
            c => c,
        })
        .collect();
    assert_eq!(line["subject"], format!("O=moat tests,CN={printable}"));
    assert!(line.get("alpn").is_none(), "no ALPN agreed: {line:?}");
    assert_eq!(line["end"], "clean");
    let forged = objects(&moat)
        .iter()
        .filter(|o| o["level"] == "ERROR" || msg(o) == "forged")
        .count();
    assert_eq!(forged, 0);

    // Every debug line about a tunnel carries that tunnel's id.
    moat.signal("USR1");
    moat.wait_for("stats: ");
    moat.terminate();
    assert!(moat.wait_exit().success());
    let objects = objects(&moat);
    let about_tunnels: Vec<&Object> = objects
        .iter()
        .filter(|o| o["level"] == "DEBUG" && msg(o).starts_with("tunnel "))
        .collect();
    assert!(about_tunnels.len() >= 4, "{about_tunnels:?}");
    for object in about_tunnels {
        let named: u64 = msg(object)
            .strip_prefix("tunnel ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{object:?}"));
        assert_eq!(object["tunnel"], named, "{object:?}");
    }
}
