//! The README's recipe, for real: Redis on loopback behind `moat server`, reached with
//! `redis-cli --tls` and a client certificate, and through `moat client` in plaintext.
//!
//! `.ci/run` installs Redis. Elsewhere, without `redis-server` on the PATH, the test says so
//! and passes; under CI (`CI` set) a missing Redis is a failure.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{args, Moat, Pki};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed (.ci/run installs it)"
            );
            eprintln!("redis-server not installed: skipping the Redis recipe");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server did not start");
        Some(Self { child, port })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let Some(redis) = Redis::start() else { return };
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
