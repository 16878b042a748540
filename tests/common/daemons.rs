//! Third-party servers a test starts for itself — nginx and HAProxy — each a throw-away
//! instance with its own configuration in its own temporary directory, in the foreground,
//! killed (by its own handle) and cleaned up when the guard drops.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// A running nginx or HAProxy, and the directory that holds its configuration and logs.
pub struct Daemon {
    child: Child,
    /// Its standard error, line by line.
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
    pub dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A loopback port that was free a moment ago, for a program that cannot be told to pick
/// one itself. (Another process could take it in between; on a test machine none does.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "moat-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Fails the test, saying what to install, when `program` is not on the PATH.
fn require(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{program}` is not installed; this test needs it as a real PROXY protocol peer \
         (Debian/Ubuntu: apt-get install {package}; .ci/run installs it)"
    );
}

impl Daemon {
    /// nginx with `http_server` (the inside of one `server { }` block, whose `listen`
    /// line is written here from `listen_suffix`, e.g. `proxy_protocol`).
    pub fn nginx(listen_suffix: &str, http_server: &str) -> Self {
        require("nginx", "nginx");
        let dir = temp_dir("nginx");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port} {listen_suffix};\n\
                 {http_server}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        Self::started("nginx", child, dir, port)
    }

    /// HAProxy running `config` (global, defaults, frontends, backends); `{port}` in it is
    /// replaced by the port it is to listen on.
    pub fn haproxy(config: &str) -> Self {
        require("haproxy", "haproxy");
        let dir = temp_dir("haproxy");
        let port = free_port();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config.replace("{port}", &port.to_string()))
            .expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        Self::started("haproxy", child, dir, port)
    }

    /// Waits until the program accepts connections on `port`; fails with what it said if
    /// it exits first.
    fn started(name: &'static str, mut child: Child, dir: PathBuf, port: u16) -> Self {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stderr = child.stderr.take().expect("stderr");
        let mut daemon = Self {
            child,
            output: super::collect_lines(stderr, false),
            dir,
            addr,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    daemon.output()
                );
            }
            if TcpStream::connect(addr).is_ok() {
                return daemon;
            }
            assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the program wrote on standard error so far, and nginx's error log.
    pub fn output(&self) -> String {
        let mut text = self.output.0.lock().unwrap().join("\n");
        if let Ok(log) = std::fs::read_to_string(self.dir.join("error.log")) {
            text.push('\n');
            text.push_str(&log);
        }
        text
    }

    /// Waits for a line on its standard error containing `needle` (HAProxy says there
    /// when a server goes up or down).
    pub fn wait_for(&self, needle: &str) -> String {
        super::wait_lines(&self.output, needle, 1, || self.output())
            .pop()
            .expect("one line")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Our own child, by its handle (its PID).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
