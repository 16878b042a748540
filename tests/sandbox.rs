//! The sandbox moat enters once it serves: it keeps serving and shuts down cleanly under
//! it, the kernel shows the seccomp filter in force, and `--no-sandbox` leaves it off.
//!
//! What Landlock and seccomp forbid is shown in child processes of this test binary (it
//! runs itself again with `MOAT_SANDBOX_CHILD` set): moat's own sandbox code restricts the
//! child, which then tries what is allowed and what is not.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tls_client::{client_config, tls_echo};
use common::{args, Backend, Moat, Pki};
use moat::sandbox::{self, Plan};

/// A field of `/proc/PID/status`, such as `Seccomp`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

#[test]
fn server_mode_serves_and_stops_cleanly_in_the_sandbox() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut moat = Moat::start(&args(&pki.server_args(&backend.target())));
    let line = moat.wait_for("sandbox: ");
    assert!(
        line.contains("INFO  sandbox: landlock (abi ") && line.contains("seccomp ("),
        "{line}"
    );
    let pid = moat.pid();
    assert_eq!(status_field(pid, "Seccomp"), "2", "filter mode");
    let filters: u32 = status_field(pid, "Seccomp_filters").parse().unwrap();
    assert!(filters >= 1, "Seccomp_filters: {filters}");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");

    let client = client_config(&pki, Some("client"));
    assert_eq!(
        tls_echo(moat.addr(), client, b"sandboxed").unwrap(),
        b"sandboxed"
    );
    moat.terminate();
    let status = moat.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{}", moat.dump());
    moat.wait_for("all tunnels finished; exiting");
}

/// The thread of `pid` named `name`, once it sleeps in a system call numbered `call`
/// (`/proc/PID/task/TID/syscall` starts with the number while it is in one).
fn thread_waiting_in(pid: u32, name: &str, call: libc::c_long) -> libc::pid_t {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads");
        for task in tasks.filter_map(Result::ok) {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let syscall = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
            if comm.trim() == name && syscall.split(' ').next() == Some(&call.to_string()) {
                return task
                    .file_name()
                    .to_string_lossy()
                    .parse()
                    .expect("a thread id");
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no thread {name} waiting in system call {call}"
        );
        std::thread::yield_now();
    }
}

/// A thread stopped in a timed wait (the logger's, every second) is resumed by the kernel
/// with `restart_syscall` when no handler ran on it: after SIGSTOP and SIGCONT (Ctrl-Z and
/// `fg`, a debugger), or when another thread took the signal that woke it, as in a SIGHUP
/// storm. The filter must allow it: both once killed a sandboxed moat with SIGSYS.
#[test]
fn moat_stopped_and_continued_in_the_sandbox_serves_on() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut moat = Moat::start(&args(&pki.server_args(&backend.target())));
    moat.wait_for("sandbox: landlock");
    let pid = moat.pid();
    let client = client_config(&pki, Some("client"));
    for round in 1..=3 {
        thread_waiting_in(pid, "moat-log", libc::SYS_futex);
        moat.signal("STOP");
        // SIGCONT would cancel a SIGSTOP still pending: continue only a stopped moat.
        let deadline = std::time::Instant::now() + common::PATIENCE;
        while !status_field(pid, "State").starts_with('T') {
            assert!(std::time::Instant::now() < deadline, "moat did not stop");
            std::thread::yield_now();
        }
        moat.signal("CONT");
        assert_eq!(
            tls_echo(moat.addr(), client.clone(), b"after").unwrap(),
            b"after",
            "round {round}; log:\n{}",
            moat.dump()
        );
    }
    // And the SIGHUP storm, its other way there: one signal for the whole process.
    for _ in 0..50 {
        moat.signal("HUP");
    }
    assert_eq!(tls_echo(moat.addr(), client, b"storm").unwrap(), b"storm");
    moat.terminate();
    let status = moat.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{}", moat.dump());
}

/// Client mode resolves a host name and connects out, both under the sandbox: a plaintext
/// client → client-mode moat → server-mode moat → backend.
#[test]
fn client_and_server_chain_serves_in_the_sandbox() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let server = Moat::start(&args(&pki.server_args(&backend.target())));
    let target = format!("localhost:{}", server.addr().port());
    let client = Moat::start(&args(&pki.client_args(&target)));
    for moat in [&server, &client] {
        moat.wait_for("sandbox: landlock");
        assert_eq!(status_field(moat.pid(), "Seccomp"), "2");
    }
    let mut stream = common::connect(client.addr());
    stream.write_all(b"through both").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"through both");
}

#[test]
fn no_sandbox_leaves_moat_unrestricted() {
    let moat = Moat::start(&["demo", "--listen", "127.0.0.1:0", "--no-sandbox"]);
    assert_eq!(status_field(moat.pid(), "Seccomp"), "0");
    assert_eq!(status_field(moat.pid(), "NoNewPrivs"), "0");
    assert!(moat.lines_with("sandbox:").is_empty(), "{}", moat.dump());
}

// ---- what the sandbox forbids, shown in a child process ----

/// The environment variable that makes this binary play the restricted child.
const CHILD: &str = "MOAT_SANDBOX_CHILD";

/// Files for the children: a certbot-like tree and a secret outside it.
///
/// ```text
/// root/live/site/cert.pem  -> ../../archive/site/cert1.pem
/// root/live/site/next.pem  -> ../../archive/site/cert2.pem   (a renewal's new link)
/// root/live/site/leak.pem  -> ../../outside/secret
/// root/outside/secret
/// ```
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir()
            .join(format!("moat-sandbox-{}-{name}", std::process::id()))
            .canonicalize_or_create();
        for dir in ["live/site", "archive/site", "outside"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("archive/site/cert1.pem"), "cert one").unwrap();
        std::fs::write(root.join("archive/site/cert2.pem"), "cert two").unwrap();
        std::fs::write(root.join("outside/secret"), "secret").unwrap();
        for (link, target) in [
            ("cert.pem", "../../archive/site/cert1.pem"),
            ("next.pem", "../../archive/site/cert2.pem"),
            ("leak.pem", "../../outside/secret"),
        ] {
            symlink(target, root.join("live/site").join(link)).unwrap();
        }
        Self { root }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

trait CanonicalizeOrCreate {
    fn canonicalize_or_create(self) -> PathBuf;
}

impl CanonicalizeOrCreate for PathBuf {
    fn canonicalize_or_create(self) -> PathBuf {
        let _ = std::fs::remove_dir_all(&self);
        std::fs::create_dir_all(&self).unwrap();
        self.canonicalize().unwrap()
    }
}

/// Runs test `name` of this binary again as a child, with `env`, and returns its output.
fn run_child(name: &str, env: &[(&str, String)]) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run child")
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == name)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

fn denied<T: std::fmt::Debug>(what: &str, result: io::Result<T>) {
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

/// Landlock lets the child read beneath the directories of its files and their link
/// targets (a renewal's new link included), and nothing else; TCP only to its ports.
#[test]
fn landlock_allows_only_the_plan() {
    const NAME: &str = "landlock_allows_only_the_plan";
    if is_child(NAME) {
        let root = PathBuf::from(var("TREE"));
        let live = root.join("live/site");
        let port = |name: &str| var(name).parse::<u16>().unwrap();
        let plan = Plan {
            reloadable_files: vec![live.join("cert.pem")],
            connect_ports: vec![port("ALLOWED_PORT")],
            bind_ports: vec![port("BIND_PORT")],
            ..Plan::default()
        };
        sandbox::landlock::restrict(&plan).expect("restrict");

        assert_eq!(read(&live.join("cert.pem")).unwrap(), "cert one");
        assert_eq!(read(&live.join("next.pem")).unwrap(), "cert two");
        assert!(read(Path::new("/etc/hosts")).is_ok(), "/etc/hosts");
        denied("a link to outside", read(&live.join("leak.pem")));
        denied("outside", read(&root.join("outside/secret")));
        denied("/etc beyond its files", read(Path::new("/etc/passwd")));
        denied(
            "writing beside the certificate",
            std::fs::write(root.join("archive/site/new.pem"), "x"),
        );
        // Port rules need ABI 4; the child says whether they were in force.
        let connect = |name| TcpStream::connect(("127.0.0.1", port(name)));
        assert!(connect("ALLOWED_PORT").is_ok(), "allowed port");
        let other = connect("OTHER_PORT");
        let bind_other = TcpListener::bind("127.0.0.1:0");
        if other.is_ok() {
            eprintln!("child: no TCP port rules on this kernel");
        } else {
            denied("connect to another port", other);
            denied("bind to another port", bind_other);
            assert!(TcpListener::bind(("127.0.0.1", port("BIND_PORT"))).is_ok());
            eprintln!("child: TCP port rules in force");
        }
        std::process::exit(0);
    }

    let tree = Tree::new("landlock");
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = |l: &TcpListener| l.local_addr().unwrap().port().to_string();
    let output = run_child(
        NAME,
        &[
            ("TREE", tree.root.display().to_string()),
            ("ALLOWED_PORT", port(&allowed)),
            ("OTHER_PORT", port(&other)),
            ("BIND_PORT", free_port.to_string()),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child: {:?}\n{stderr}",
        output.status
    );
    // This machine's kernel has port rules; an older one may not, and the child says so.
    assert!(
        stderr.contains("child: TCP port rules in force")
            || stderr.contains("child: no TCP port rules on this kernel"),
        "{stderr}"
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("child:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Under the whole sandbox the child still reads its files, resolves names and starts
/// threads; a system call off the list kills it.
#[test]
fn seccomp_kills_at_a_call_off_the_list() {
    const NAME: &str = "seccomp_kills_at_a_call_off_the_list";
    if is_child(NAME) {
        // A core dump would only litter the machine.
        let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
        let root = PathBuf::from(var("TREE"));
        let plan = Plan {
            reloadable_files: vec![root.join("live/site/cert.pem")],
            resolves_names: true,
            ..Plan::default()
        };
        sandbox::enter(&plan).expect("enter");
        assert_eq!(read(&root.join("live/site/cert.pem")).unwrap(), "cert one");
        let resolved: Vec<_> = ("localhost", 80).to_socket_addrs().unwrap().collect();
        assert!(!resolved.is_empty());
        let thread = std::thread::Builder::new()
            .name("worker".into())
            .spawn(|| 6 * 7)
            .unwrap();
        assert_eq!(thread.join().unwrap(), 42);
        eprintln!("child: allowed calls work");
        // mkdirat is not on the list: the kernel ends the process here.
        let _ = std::fs::create_dir(root.join("outside/new"));
        eprintln!("child: still alive");
        std::process::exit(0);
    }

    let tree = Tree::new("seccomp");
    let output = run_child(NAME, &[("TREE", tree.root.display().to_string())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("child: allowed calls work"), "{stderr}");
    assert!(!stderr.contains("child: still alive"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "child: {:?}\n{stderr}",
        output.status
    );
    assert!(!tree.root.join("outside/new").exists());
}
