//! The programs under test, how each is configured and started (pinned to CPU 0), how its
//! listening address is found, and how it is stopped.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::CertFiles;
use crate::Result;

/// The CPU every target runs on unless `--target-cpus` says otherwise; the generator and
/// backend get the other one.
pub const TARGET_CPU: &str = "0";
/// How long a target may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Tunnels each target must allow at once (idle scenario: 9,000, plus slack).
pub const MAX_TUNNELS: usize = 9500;

/// A program under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Moat,
    /// A second moat binary (`--moat-baseline`), measured beside the first.
    MoatBase,
    Tokio,
    Stunnel,
    Haproxy,
}

impl Kind {
    /// The targets a run measures when `--targets` does not say (`moat-base` only comes
    /// with `--moat-baseline`).
    pub const DEFAULT: [Kind; 4] = [Kind::Moat, Kind::Tokio, Kind::Stunnel, Kind::Haproxy];
    const ALL: [Kind; 5] = [
        Kind::Moat,
        Kind::MoatBase,
        Kind::Tokio,
        Kind::Stunnel,
        Kind::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Moat => "moat",
            Kind::MoatBase => "moat-base",
            Kind::Tokio => "tokio",
            Kind::Stunnel => "stunnel",
            Kind::Haproxy => "haproxy",
        }
    }

    pub fn parse(text: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                format!("unknown target `{text}` (moat, moat-base, tokio, stunnel, haproxy)")
            })
    }

    /// Either moat binary: both take moat's flags and print its `stats:` line.
    pub fn is_moat(self) -> bool {
        matches!(self, Kind::Moat | Kind::MoatBase)
    }
}

/// A target that can be started: its kind, its executable, and flags of its own.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub program: PathBuf,
    /// Flags added to the driver's own (`--moat-args`, `--moat-baseline-args`); each one
    /// replaces a driver flag of the same name.
    pub extra_args: Vec<String>,
    /// The CPUs it is pinned to, as `taskset -c` takes them.
    pub cpus: String,
}

/// What one start of a target needs to know.
pub struct Launch<'a> {
    pub certs: &'a CertFiles,
    pub backend: SocketAddr,
    pub mtls: bool,
    /// Where the target's stderr and any configuration file go.
    pub work_dir: &'a Path,
    /// Names the log and configuration files.
    pub label: &'a str,
    /// The scenario's extra flags (moat and the tokio baseline only).
    pub limits: crate::driver::scenario::Limits,
}

/// A running target.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, waits up to two seconds, then SIGKILL. Only ever this child's PID.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill() on the PID of a child this process started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    /// Starts the target pinned to its CPUs and waits until it listens.
    pub fn start(&self, launch: &Launch<'_>) -> Result<Running> {
        let log = launch.work_dir.join(format!("{}.log", launch.label));
        let (args, fixed_addr) = match self.kind {
            Kind::Moat | Kind::MoatBase | Kind::Tokio => (self.tunnel_args(launch), None),
            Kind::Stunnel => {
                let addr = free_port()?;
                let conf = launch.work_dir.join(format!("{}.conf", launch.label));
                write(&conf, &stunnel_config(launch, addr))?;
                (vec![conf.display().to_string()], Some(addr))
            }
            Kind::Haproxy => {
                let addr = free_port()?;
                let conf = launch.work_dir.join(format!("{}.cfg", launch.label));
                write(&conf, &haproxy_config(launch, addr))?;
                let args = vec!["-db".into(), "-f".into(), conf.display().to_string()];
                (args, Some(addr))
            }
        };
        let stderr =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(&self.cpus)
            .arg(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start taskset {}: {e}", self.program.display()))?;
        let addr = match wait_listening(&mut child, &log, fixed_addr) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not start: {e}", self.kind.name()));
            }
        };
        Ok(Running { child, addr, log })
    }

    /// `moat server` flags; the tokio baseline takes the same ones it shares with moat. The
    /// target's extra flags come last, in place of any driver flag of the same name.
    fn tunnel_args(&self, launch: &Launch<'_>) -> Vec<String> {
        let c = launch.certs;
        let mut args = Vec::new();
        for (flag, value) in [
            ("--listen", "127.0.0.1:0".to_string()),
            ("--target", launch.backend.to_string()),
            ("--cert", c.server_cert.display().to_string()),
            ("--key", c.server_key.display().to_string()),
        ] {
            args.push(flag.to_string());
            args.push(value);
        }
        if launch.mtls {
            args.push("--client-ca".into());
            args.push(c.ca.display().to_string());
        } else {
            args.push("--no-client-auth".into());
        }
        if self.kind.is_moat() {
            for (flag, value) in [
                ("--max-conns", MAX_TUNNELS.to_string()),
                ("--log-level", "info".to_string()),
            ] {
                args.push(flag.to_string());
                args.push(value);
            }
            if let Some(n) = launch.limits.max_conns_per_ip {
                args.extend(["--max-conns-per-ip".to_string(), n.to_string()]);
            }
        }
        if let Some(timeout) = launch.limits.handshake_timeout {
            args.extend(["--handshake-timeout".to_string(), timeout.to_string()]);
        }
        let mut args = with_extra_args(args, &self.extra_args);
        if self.kind.is_moat() {
            args.insert(0, "server".to_string());
        }
        args
    }
}

/// `base` (flags, each followed by its value unless the next word is another flag) with
/// every flag that `extra` names left out, then `extra`: getopts refuses a flag given twice,
/// so a flag passed with `--moat-args` replaces the driver's rather than repeating it.
pub fn with_extra_args(base: Vec<String>, extra: &[String]) -> Vec<String> {
    let named = |word: &str| {
        extra
            .iter()
            .any(|e| e == word || e.split_once('=').is_some_and(|(flag, _)| flag == word))
    };
    let mut out = Vec::with_capacity(base.len() + extra.len());
    let mut words = base.into_iter().peekable();
    while let Some(word) = words.next() {
        let has_value = words.peek().is_some_and(|next| !next.starts_with("--"));
        if word.starts_with("--") && named(&word) {
            if has_value {
                words.next();
            }
            continue;
        }
        out.push(word);
    }
    out.extend(extra.iter().cloned());
    out
}

/// Splits `--moat-args` text into words at whitespace (no quoting: moat's flags need none).
pub fn split_args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Waits until the target listens: either its stderr names the address (`listening on
/// ADDR`, moat and the tokio baseline) or a TCP connect to the address we gave it succeeds.
fn wait_listening(child: &mut Child, log: &Path, fixed: Option<SocketAddr>) -> Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "it exited ({status}); its log says:\n{}",
                tail(log)
            ));
        }
        match fixed {
            Some(addr) => {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(addr);
                }
            }
            None => {
                if let Some(addr) = listening_line(log) {
                    return Ok(addr);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not listening after {START_TIMEOUT:?}; its log says:\n{}",
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds `listening on ADDR` in a log file.
fn listening_line(log: &Path) -> Option<SocketAddr> {
    let file = File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|line| {
            let rest = &line[line.find("listening on ")? + "listening on ".len()..];
            let token = rest.split_whitespace().next()?;
            token
                .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || "[]:.".contains(c)))
                .parse()
                .ok()
        })
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// A loopback port nobody listens on right now (for targets that cannot report theirs).
fn free_port() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// stunnel in server mode with the same certificates: TLS 1.3 only, TCP_NODELAY both ways,
/// client certificates verified against the CA in the mTLS scenarios.
fn stunnel_config(launch: &Launch<'_>, listen: SocketAddr) -> String {
    let c = launch.certs;
    let verify = if launch.mtls {
        format!(
            "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
            c.ca.display()
        )
    } else {
        String::new()
    };
    format!(
        "foreground = yes\npid =\ndebug = 3\nsyslog = no\n\
         socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n\n\
         [moat-bench]\naccept = {listen}\nconnect = {backend}\n\
         cert = {cert}\nkey = {key}\nsslVersionMin = TLSv1.3\nTIMEOUTidle = 600\n{verify}",
        backend = launch.backend,
        cert = c.server_cert.display(),
        key = c.server_key.display(),
    )
}

/// HAProxy in TCP mode with the same certificates: one thread, TLS 1.3 only, client
/// certificates required in the mTLS scenarios.
fn haproxy_config(launch: &Launch<'_>, listen: SocketAddr) -> String {
    let c = launch.certs;
    let verify = if launch.mtls {
        format!(" ca-file {} verify required", c.ca.display())
    } else {
        String::new()
    };
    format!(
        "global\n  nbthread 1\n  maxconn {max}\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n\n\
         frontend bench\n  bind {listen} ssl crt {crt}{verify}\n  default_backend backend\n\n\
         backend backend\n  server s1 {backend}\n",
        max = MAX_TUNNELS,
        crt = c.server_combined.display(),
        backend = launch.backend,
    )
}

/// Looks a program up on PATH (and in the sbin directories, where HAProxy lives).
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        split_args(text)
    }

    #[test]
    fn extra_args_replace_the_drivers_flags() {
        let base = words("--listen 127.0.0.1:0 --no-client-auth --max-conns 9500 --log-level info");
        assert_eq!(
            with_extra_args(base.clone(), &words("--workers 2")),
            words("--listen 127.0.0.1:0 --no-client-auth --max-conns 9500 --log-level info --workers 2")
        );
        assert_eq!(
            with_extra_args(base.clone(), &words("--max-conns 5000 --log-level=warn")),
            words("--listen 127.0.0.1:0 --no-client-auth --max-conns 5000 --log-level=warn")
        );
        assert_eq!(
            with_extra_args(base.clone(), &words("--no-client-auth")),
            words("--listen 127.0.0.1:0 --max-conns 9500 --log-level info --no-client-auth")
        );
        assert_eq!(with_extra_args(base.clone(), &[]), base);
        assert_eq!(words("  --workers   2 "), ["--workers", "2"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn moat_gets_its_subcommand_first() {
        let dir = std::env::temp_dir().join(format!("moat-bench-args-{}", std::process::id()));
        let certs = CertFiles::in_dir(&dir);
        let launch = Launch {
            certs: &certs,
            backend: "127.0.0.1:9".parse().unwrap(),
            mtls: false,
            work_dir: &dir,
            label: "t",
            limits: Default::default(),
        };
        let target = |kind, extra: &str| Target {
            kind,
            program: PathBuf::from("x"),
            extra_args: words(extra),
            cpus: TARGET_CPU.into(),
        };
        let moat = target(Kind::MoatBase, "--workers 2 --max-conns 100").tunnel_args(&launch);
        assert_eq!(moat[0], "server");
        assert_eq!(moat.iter().filter(|w| *w == "--max-conns").count(), 1);
        assert_eq!(moat[moat.len() - 4..], words("--workers 2 --max-conns 100"));
        let tokio = target(Kind::Tokio, "").tunnel_args(&launch);
        assert_eq!(tokio[0], "--listen");
        assert!(!tokio.contains(&"--max-conns".to_string()));
    }

    #[test]
    fn finds_the_listening_address() {
        let dir = std::env::temp_dir().join(format!("moat-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("t.log");
        fs::write(
            &log,
            "starting\nmoat: server: listening on 127.0.0.1:4433, forwarding to x\n",
        )
        .unwrap();
        assert_eq!(
            listening_line(&log),
            Some("127.0.0.1:4433".parse().unwrap())
        );
        fs::write(&log, "nothing yet\n").unwrap();
        assert_eq!(listening_line(&log), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
