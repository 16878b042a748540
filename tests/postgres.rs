//! The README's PostgreSQL recipe, for real: a throw-away `postgres` (initdb into a private
//! directory, password authentication) listening on a unix socket and on 127.0.0.1, behind
//! `moat server`, reached by `psql` through `moat client` in plaintext — and, with psql 17 or
//! newer, by `psql` itself with direct TLS (`sslnegotiation=direct`, ALPN `postgresql`).
//!
//! Needs the PostgreSQL server and client (Debian/Ubuntu: `apt-get install postgresql
//! postgresql-client`, which `.ci/run` does); without them the test fails and says so.
//! postgres refuses to run as root: run as root, the test runs initdb and postgres as the
//! `postgres` system user the Debian package creates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::daemon::{
    find_on_path, free_port, missing, note, owner_only, require, run_to_success, running_as_root,
    system_user, Daemon,
};
use common::files::TempDir;
use common::{args, Moat, Pki, Tool};

const USER: &str = "moat";
const PASSWORD: &str = "moat-recipe";

/// A throw-away PostgreSQL server: one data directory, listening on 127.0.0.1:`port` and on
/// the unix socket `.s.PGSQL.<port>` in its directory. Stopped (fast shutdown) and removed
/// when dropped; the fields drop in order, the server before its directory.
struct Postgres {
    server: Daemon,
    port: u16,
    dir: TempDir,
}

impl Postgres {
    fn start() -> Self {
        let bin = server_bin_dir();
        let dir = TempDir::new("postgres");
        // As root, initdb and postgres run as the `postgres` user, which must own the
        // directory; moat (root) still reaches the socket in it.
        let owner = running_as_root().then(|| {
            system_user("postgres").unwrap_or_else(|| {
                panic!(
                    "running as root, but there is no `postgres` user to run postgres as \
                     (apt-get install postgresql creates it)"
                )
            })
        });
        std::fs::write(dir.join("password"), PASSWORD).expect("write password file");
        if let Some((uid, gid)) = owner {
            for path in [dir.path.clone(), dir.join("password")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        let took = run_to_success(
            "initdb",
            as_owner(&bin.join("initdb"), owner, &dir.path).args([
                "--pgdata",
                &dir.s("data"),
                "--username",
                USER,
                "--pwfile",
                &dir.s("password"),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]),
        );
        eprintln!("initdb took {took:?}");
        let started = Instant::now();
        let port = free_port();
        let server = Daemon::start(
            "postgres",
            as_owner(&bin.join("postgres"), owner, &dir.path).args([
                "-D",
                &dir.s("data"),
                "-k",
                &dir.path.to_string_lossy(),
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "log_connections=on",
            ]),
            "INT",
        );
        server.wait_for("database system is ready to accept connections");
        eprintln!("postgres started in {:?}", started.elapsed());
        Self { server, port, dir }
    }

    /// The server's unix socket, as a moat `--target`.
    fn unix_target(&self) -> String {
        format!("unix:{}", self.dir.s(&format!(".s.PGSQL.{}", self.port)))
    }

    /// The server's loopback TCP address, as a moat `--target`.
    fn tcp_target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The directory of the newest installed PostgreSQL server: Debian's
/// /usr/lib/postgresql/VERSION/bin, else wherever `initdb` is on PATH.
fn server_bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => find_on_path("initdb")
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
            .filter(|bin| bin.join("postgres").is_file())
            .unwrap_or_else(|| missing("postgres")),
    }
}

/// `program` to be run in `dir`, as the user `owner` (uid, gid) if given.
fn as_owner(program: &Path, owner: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut command = match owner {
        Some((uid, gid)) => {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            setpriv
        }
        None => Command::new(program),
    };
    command.current_dir(dir).env("LC_ALL", "C");
    command
}

/// What `psql` prints for `sql` on `conninfo` (unaligned, tuples only), or its error.
fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    Tool::output(
        "psql",
        &[
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            conninfo,
            "--command",
            sql,
        ],
    )
}

/// The major version of the `psql` on PATH (`psql (PostgreSQL) 15.18 (Debian ...)` → 15).
fn psql_major_version() -> u32 {
    let psql = require("psql");
    let out = Command::new(psql)
        .arg("--version")
        .output()
        .expect("psql --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|word| word.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

fn conninfo(port: u16, options: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=postgres \
         connect_timeout=20 {options}"
    )
}

#[test]
fn psql_through_moat_client_and_server_to_postgres_on_a_unix_socket_and_on_loopback() {
    let test_started = Instant::now();
    require("psql");
    let pg = Postgres::start();
    let pki = Pki::new();
    // The log line postgres writes when moat connects: through the socket, or over TCP.
    let targets = [
        (pg.unix_target(), "connection received: host=[local]"),
        (pg.tcp_target(), "connection received: host=127.0.0.1"),
    ];
    for (target, arrival) in targets {
        let server = Moat::start(&args(&pki.server_args(&target)));
        let client = Moat::start(&args(&pki.client_args(&server.addr().to_string())));
        let plain = conninfo(client.addr().port(), "sslmode=disable");

        assert_eq!(psql(&plain, "select 42").as_deref(), Ok("42"), "{target}");
        pg.server.wait_for(arrival);
        // A megabyte back, and a query that makes the server work through the tunnel.
        let big = psql(&plain, "select repeat('moat', 262144)").expect("1 MiB result");
        assert!(
            big == "moat".repeat(262_144),
            "{} bytes came back",
            big.len()
        );
        assert_eq!(
            psql(&plain, "select sum(i) from generate_series(1, 100000) as i").as_deref(),
            Ok("5000050000")
        );
        // postgres' own authentication still runs, at the far end of both tunnels.
        let wrong = plain.replace(PASSWORD, "not-the-password");
        let refused = psql(&wrong, "select 42").expect_err("wrong password accepted");
        assert!(
            refused.contains("password authentication failed"),
            "{refused}"
        );

        // psql asks for TLS inside the PostgreSQL protocol (SSLRequest), which moat does not
        // speak: pointed straight at moat server, it gets nowhere.
        let straight = conninfo(server.addr().port(), "sslmode=require");
        assert!(psql(&straight, "select 42").is_err());
        server.wait_for("tls error with client");
    }
    eprintln!("whole test took {:?}", test_started.elapsed());
}

#[test]
fn psql_17_with_direct_tls_into_moat_server() {
    let version = psql_major_version();
    if version < 17 {
        note(&format!(
            "psql_17_with_direct_tls_into_moat_server: not run: direct TLS \
             (sslnegotiation=direct) needs psql 17 or newer; the installed psql is {version}"
        ));
        return;
    }
    let pg = Postgres::start();
    let pki = Pki::new();
    owner_only(&pki.path("client.key"));
    let mut server_args = pki.server_args(&pg.unix_target());
    server_args.extend(["--alpn".to_string(), "postgresql".to_string()]);
    let server = Moat::start(&args(&server_args));
    let port = server.addr().port();
    let tls = format!(
        "sslmode=verify-full sslnegotiation=direct sslrootcert={}",
        pki.ca()
    );
    let identity = format!(
        "sslcert={} sslkey={}",
        pki.s("client.pem"),
        pki.s("client.key")
    );

    let with_cert = conninfo(port, &format!("{tls} {identity}"));
    assert_eq!(psql(&with_cert, "select 42").as_deref(), Ok("42"));
    assert!(server.wait_for("tunnel closed").contains("alpn=postgresql"));

    // Without a client certificate psql gets nowhere.
    assert!(psql(&conninfo(port, &tls), "select 42").is_err());
    server.wait_for("peer sent no certificates");
}
