//! The README's MariaDB recipe, for real: a throw-away `mariadbd` (mariadb-install-db into a
//! private directory, a user with a password) on 127.0.0.1 behind `moat server`, reached by
//! the `mariadb` client through `moat client` in plaintext. In the MySQL protocol the server
//! speaks first (its greeting carries the password challenge), so this also shows that both
//! tunnels carry bytes from a server before the client has sent any.
//!
//! Needs the MariaDB server and client (Debian/Ubuntu: `apt-get install mariadb-server
//! mariadb-client`, which `.ci/run` does); without them the test fails and says so.

mod common;

use std::process::Command;
use std::time::Instant;

use common::daemon::{free_port, require, run_to_success, running_as_root, Daemon};
use common::files::TempDir;
use common::{args, Moat, Pki, Tool};

const USER: &str = "moat";
const PASSWORD: &str = "moat-recipe";

/// A throw-away MariaDB server on 127.0.0.1:`port`, its data directory private to the test.
/// Stopped (clean shutdown) and removed when dropped; the fields drop in order, the server
/// before its directory.
struct Mariadb {
    _server: Daemon,
    port: u16,
    _dir: TempDir,
}

impl Mariadb {
    fn start() -> Self {
        let install_db = require("mariadb-install-db");
        let mariadbd = require("mariadbd");
        let dir = TempDir::new("mariadb");
        // mariadbd runs as root only when told so; as anyone else it runs as that user.
        let as_root: &[&str] = if running_as_root() {
            &["--user=root"]
        } else {
            &[]
        };
        let datadir = format!("--datadir={}", dir.s("data"));
        let took = run_to_success(
            "mariadb-install-db",
            Command::new(install_db)
                .arg("--no-defaults")
                .args(as_root)
                .args([&datadir, "--skip-test-db", "--skip-name-resolve"]),
        );
        eprintln!("mariadb-install-db took {took:?}");
        std::fs::write(
            dir.join("init.sql"),
            format!("CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';\n"),
        )
        .expect("write init.sql");

        let started = Instant::now();
        let port = free_port();
        let server = Daemon::start(
            "mariadbd",
            Command::new(mariadbd)
                .arg("--no-defaults")
                .args(as_root)
                .args([
                    datadir,
                    format!("--socket={}", dir.s("mariadbd.sock")),
                    format!("--pid-file={}", dir.s("mariadbd.pid")),
                    format!("--port={port}"),
                    "--bind-address=127.0.0.1".into(),
                    "--skip-name-resolve".into(),
                    format!("--init-file={}", dir.s("init.sql")),
                ]),
            "TERM",
        );
        server.wait_for("ready for connections");
        eprintln!("mariadbd started in {:?}", started.elapsed());
        Self {
            _server: server,
            port,
            _dir: dir,
        }
    }
}

/// What `mariadb` prints for `sql` as `USER` with `password` on 127.0.0.1:`port` over TCP
/// in plaintext (batch mode, no column names), or its error.
fn mariadb(port: u16, password: &str, sql: &str) -> Result<String, String> {
    let port = port.to_string();
    let password = format!("--password={password}");
    Tool::output(
        "mariadb",
        &[
            "--no-defaults",
            "--host=127.0.0.1",
            "--port",
            &port,
            "--protocol=TCP",
            "--skip-ssl",
            "--connect-timeout=20",
            "--user",
            USER,
            &password,
            "--batch",
            "--skip-column-names",
            "--execute",
            sql,
        ],
    )
}

#[test]
fn mariadb_client_through_moat_client_and_server_to_mariadbd() {
    let test_started = Instant::now();
    require("mariadb");
    let db = Mariadb::start();
    let pki = Pki::new();
    let server = Moat::start(&args(&pki.server_args(&format!("127.0.0.1:{}", db.port))));
    let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
    let port = client.addr().port();

    assert_eq!(mariadb(port, PASSWORD, "select 42").as_deref(), Ok("42"));
    // A megabyte back.
    let big = mariadb(port, PASSWORD, "select repeat('moat', 262144)").expect("1 MiB result");
    assert!(
        big == "moat".repeat(262_144),
        "{} bytes came back",
        big.len()
    );
    assert_eq!(
        mariadb(port, PASSWORD, "select current_user()").as_deref(),
        Ok("moat@%")
    );
    // mariadbd's own authentication still runs, at the far end of both tunnels.
    let refused = mariadb(port, "not-the-password", "select 42").expect_err("wrong password");
    assert!(refused.contains("Access denied"), "{refused}");
    assert!(server
        .wait_for("tunnel closed")
        .contains("subject=\"O=moat tests,CN=test-client\""));
    eprintln!("whole test took {:?}", test_started.elapsed());
}
