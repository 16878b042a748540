//! The README's recipe, for real: Redis on loopback behind `moat server`, reached with
//! `redis-cli --tls` and a client certificate, and through `moat client` in plaintext.
//!
//! Needs `redis-server` and `redis-cli` (Debian/Ubuntu: `apt-get install redis-server
//! redis-tools`, which `.ci/run` does); without them the test fails and says so.

mod common;

use std::process::{Command, Stdio};

use common::daemon::{free_port, require, Daemon};
use common::{args, Moat, Pki};

/// A throw-away redis-server on a free loopback port, persisting nothing.
struct Redis {
    _server: Daemon,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        require("redis-cli");
        let port = free_port();
        let server = Daemon::start(
            "redis-server",
            Command::new(require("redis-server")).args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
            "TERM",
        );
        server.wait_for("Ready to accept connections");
        Self {
            _server: server,
            port,
        }
    }
}

fn redis_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string()
        + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.trim().to_string())
}

#[test]
fn redis_cli_tls_through_moat_server_and_plaintext_through_moat_client() {
    let redis = Redis::start();
    let pki = Pki::new();
    let server_args = pki.server_args(&format!("127.0.0.1:{}", redis.port));
    let server = Moat::start(&args(&server_args));
    let port = server.addr().port().to_string();
    let (ca, cert, key) = (pki.ca(), pki.s("client.pem"), pki.s("client.key"));
    let plain = [
        "-h",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "--tls",
        "--cacert",
        ca.as_str(),
    ];
    let tls = |cmd: &[&str]| {
        let identity = ["--cert", cert.as_str(), "--key", key.as_str()];
        redis_cli(&[&plain[..], &identity, cmd].concat())
    };
    assert_eq!(
        tls(&["SET", "moat", "guards redis"]),
        (true, "OK".to_string())
    );
    assert_eq!(tls(&["GET", "moat"]), (true, "guards redis".to_string()));

    // Without a client certificate redis-cli gets nowhere.
    let (_, text) = redis_cli(&[&plain[..], &["GET", "moat"]].concat());
    assert!(!text.contains("guards redis"), "{text}");
    assert!(server
        .wait_for("peer sent no certificates")
        .contains("tls error with client"));

    // A client that cannot speak TLS goes through moat client.
    let client_args = pki.client_args(&server.addr().to_string());
    let client = Moat::start(&args(&client_args));
    let plain_port = client.addr().port().to_string();
    assert_eq!(
        redis_cli(&["-h", "127.0.0.1", "-p", &plain_port, "GET", "moat"]),
        (true, "guards redis".to_string())
    );
}
