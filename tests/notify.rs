//! The service manager hears from moat at the right moments (`sd_notify`): `READY=1` only
//! once moat listens and its signal handlers are installed, so a SIGTERM sent the moment
//! READY arrives is a graceful shutdown; `STOPPING=1` when that shutdown begins. The test
//! plays the manager: a unix datagram socket named in `NOTIFY_SOCKET`. And
//! `contrib/moat.service` passes `systemd-analyze verify`.

mod common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;

use common::tls_client::{client_config, tls_echo};
use common::{args, Backend, Moat, Pki, PATIENCE};

/// The service manager's end: a datagram socket at a path or an abstract address.
struct Manager {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` says.
    address: String,
    dir: Option<PathBuf>,
}

impl Manager {
    /// A socket at a path in a fresh directory.
    fn at_path(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("moat-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let address = path.to_str().unwrap().to_owned();
        Self::ready(socket, address, Some(dir))
    }

    /// A socket at an abstract address (`@name`), as systemd itself uses.
    fn abstract_named(name: &str) -> Self {
        let name = format!("moat-notify-{}-{name}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Self::ready(socket, format!("@{name}"), None)
    }

    fn ready(socket: UnixDatagram, address: String, dir: Option<PathBuf>) -> Self {
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Self {
            socket,
            address,
            dir,
        }
    }

    fn env(&self) -> [(&str, &OsStr); 1] {
        [("NOTIFY_SOCKET", OsStr::new(&self.address))]
    }

    /// The next message, waiting at most [`PATIENCE`].
    fn receive(&self, moat: &Moat) -> String {
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8(buf[..n].to_vec()).expect("UTF-8 message"),
            Err(e) => panic!("no message from moat ({e}); log:\n{}", moat.dump()),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The addresses in `READY=1\nSTATUS=listening on A, B`.
fn ready_addrs(message: &str) -> Vec<SocketAddr> {
    let list = message
        .strip_prefix("READY=1\nSTATUS=listening on ")
        .unwrap_or_else(|| panic!("not a READY message: {message:?}"));
    list.split(", ").map(|a| a.parse().unwrap()).collect()
}

#[test]
fn ready_once_listening_then_stopping_at_sigterm() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let manager = Manager::at_path("ready");
    let mut moat = Moat::spawn_with_env(&args(&pki.server_args(&backend.target())), &manager.env());

    // The first message is READY, and the listener it names serves at once.
    let ready = manager.receive(&moat);
    let addrs = ready_addrs(&ready);
    assert_eq!(addrs.len(), 1, "{ready:?}");
    let client = client_config(&pki, Some("client"));
    assert_eq!(tls_echo(addrs[0], client, b"ready?").unwrap(), b"ready?");
    assert_eq!(moat.addr(), addrs[0]);

    moat.terminate();
    assert_eq!(manager.receive(&moat), "STOPPING=1");
    let status = moat.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{}", moat.dump());
    moat.wait_for("all tunnels finished; exiting");
}

/// A reload says `RELOADING=1` with the monotonic clock's time, as systemd's notify-reload
/// protocol asks, and `READY=1` once the new configuration is in force — also when the
/// reload failed and the old one stays.
#[test]
fn reloading_then_ready_at_sighup() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let manager = Manager::at_path("reload");
    let mut moat = Moat::spawn_with_env(&args(&pki.server_args(&backend.target())), &manager.env());
    ready_addrs(&manager.receive(&moat));
    for round in 1..=2 {
        moat.signal("HUP");
        let reloading = manager.receive(&moat);
        let usec = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("not a RELOADING message: {reloading:?}"));
        assert!(usec > 0);
        let ready = manager.receive(&moat);
        assert!(ready.starts_with("READY=1"), "{ready:?}");
        moat.wait_for_count("reload (SIGHUP)", round);
    }
    moat.terminate();
    assert_eq!(manager.receive(&moat), "STOPPING=1");
    assert_eq!(moat.wait_exit().code(), Some(0));
}

/// A supervisor may signal moat the moment it reports ready: that must be a graceful
/// shutdown (exit 0 with its shutdown line), never death by the signal. Done a few times,
/// as the window it guards against is short.
#[test]
fn sigterm_the_moment_ready_arrives_is_a_graceful_shutdown() {
    for round in 0..5 {
        let manager = Manager::abstract_named(&format!("race-{round}"));
        let mut moat = Moat::spawn_with_env(&["demo", "--listen", "127.0.0.1:0"], &manager.env());
        let ready = manager.receive(&moat);
        assert_eq!(ready_addrs(&ready).len(), 3, "{ready:?}");
        moat.terminate();
        let status = moat.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status:?} (signal {:?}); log:\n{}",
            status.signal(),
            moat.dump()
        );
        moat.wait_for("SIGTERM: no longer accepting");
        moat.wait_for("all tunnels finished; exiting");
        assert_eq!(manager.receive(&moat), "STOPPING=1");
    }
}

/// systemd's own checker finds nothing to say about the unit. `ExecStart` is pointed at the
/// built binary, because the checker wants it to exist; everything else is as shipped.
#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/moat.service"))
            .expect("read contrib/moat.service");
    for setting in [
        "Type=notify",
        "ExecStart=/usr/bin/moat --config /etc/moat/moat.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=1048576",
    ] {
        assert!(
            unit.lines().any(|line| line == setting),
            "{setting} missing"
        );
    }

    let dir = std::env::temp_dir().join(format!("moat-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("moat.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/moat", env!("CARGO_BIN_EXE_moat")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd; .ci/run \
             installs it): contrib/moat.service cannot be verified"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    // It exits 0 even when it ignores a setting it cannot parse: every line it prints is a
    // finding.
    let findings = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{findings}",
        output.status
    );
}
