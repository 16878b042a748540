//! Landlock: the files and TCP ports moat may still use once it serves.
//!
//! Landlock rules name inodes, not path strings, and a rule on a directory covers
//! everything beneath it. That decides what is allowed:
//!
//! - the **directories** that hold moat's certificates, keys and CA files, not the files
//!   themselves, because a renewal writes a new file and renames it into place (a new inode);
//! - for a file reached through a **symlink**, the directory of the link and that of its
//!   target. certbot's `live/example.com/fullchain.pem` points to
//!   `../../archive/example.com/fullchain3.pem`, and a renewal re-points it to
//!   `fullchain4.pem` in the same `archive/` directory, which is already allowed. (Following
//!   a link needs no right; only the file finally opened is checked.)
//! - what name resolution reads (`/etc/hosts`, `/etc/resolv.conf`, ... and the directory its
//!   NSS modules are loaded from), as single files where they live in `/etc`, so `/etc`
//!   itself stays closed;
//! - the directories of unix sockets moat listens on: create and remove sockets there.
//!
//! Everything else on the file system is out of reach, reading included. Where the kernel
//! has port rules (ABI 4), TCP `bind` is allowed only to the listen ports and `connect` only
//! to the target ports. UDP is left alone, as name resolution needs it.

use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, RestrictSelfAttr, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::Plan;

/// The newest Landlock ABI moat was tested with. What later ABIs add is not handled (so
/// it stays allowed) until it has been tested: ABI 9's right to connect to a unix socket,
/// for one, would also have to allow the service manager's socket and unix targets.
const TESTED_ABI: ABI = ABI::V7;

/// Files name resolution reads: glibc's resolver configuration, and the loader's cache
/// through which NSS modules are found.
const RESOLVER_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/ld.so.cache",
];

/// The system trust store (a directory of CA files, and the bundle in it).
const TRUST_STORE: &[&str] = &["/etc/ssl/certs", "/etc/ssl/certs/ca-certificates.crt"];

/// What an older kernel leaves unenforced, by the ABI that brought it.
const FEATURES: &[(ABI, &str)] = &[
    (ABI::V3, "file truncation rules (ABI 3, Linux 6.2)"),
    (ABI::V4, "TCP bind and connect rules (ABI 4, Linux 6.7)"),
    (ABI::V5, "device ioctl rules (ABI 5, Linux 6.10)"),
    (ABI::V6, "signal scoping (ABI 6, Linux 6.12)"),
];

/// What moat may do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read files (and list the directory, if it is one).
    Read,
    /// Create and remove unix sockets in this directory.
    Sockets,
}

/// One path and what moat may do beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A file or directory; a directory's rule covers everything beneath it.
    pub path: PathBuf,
    /// What is allowed there.
    pub allowed: Use,
}

/// What Landlock enforces on this kernel, for the log line.
#[derive(Debug)]
pub struct Outcome {
    abi: ABI,
    enforced: bool,
}

impl Outcome {
    /// `landlock (abi 7, fs+net)`, or `None` where Landlock is not in force.
    pub fn summary(&self) -> Option<String> {
        if !self.enforced {
            return None;
        }
        let parts = if self.abi >= ABI::V4 { "fs+net" } else { "fs" };
        Some(format!("landlock (abi {}, {parts})", self.abi))
    }
}

/// Restricts moat's file system and TCP port access to `plan`, as far as the kernel can.
pub fn restrict(plan: &Plan) -> Result<Outcome, String> {
    let threads = thread_count();
    let fs = AccessFs::from_all(TESTED_ABI);
    let mut ruleset = Ruleset::default()
        .handle_access(fs)
        .and_then(|r| r.handle_access(AccessNet::from_all(TESTED_ABI)))
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(Ruleset::create)
        .map_err(|e| format!("Landlock: {e}"))?;
    for grant in grants(plan) {
        let fd = match PathFd::new(&grant.path) {
            Ok(fd) => fd,
            Err(e) => {
                log::debug!("sandbox: not allowing {}: {e}", grant.path.display());
                continue;
            }
        };
        let rule = PathBeneath::new(fd, access(&grant));
        ruleset = ruleset
            .add_rule(rule)
            .map_err(|e| format!("Landlock rule for {}: {e}", grant.path.display()))?;
    }
    let ports = plan
        .bind_ports
        .iter()
        .map(|&port| NetPort::new(port, AccessNet::BindTcp))
        .chain(
            plan.connect_ports
                .iter()
                .map(|&port| NetPort::new(port, AccessNet::ConnectTcp)),
        );
    for rule in ports {
        ruleset = ruleset
            .add_rule(rule)
            .map_err(|e| format!("Landlock port rule: {e}"))?;
    }
    let status = ruleset
        .all_threads(true)
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    let abi = ABI::from(status.landlock);
    let outcome = Outcome {
        abi,
        enforced: status.ruleset != RulesetStatus::NotEnforced,
    };
    warn_unenforced(&outcome, threads, status.all_threads);
    Ok(outcome)
}

/// One warning naming what this kernel does not enforce.
fn warn_unenforced(outcome: &Outcome, threads: usize, all_threads: bool) {
    if !outcome.enforced {
        log::warn!(
            "sandbox: Landlock is not available on this kernel: files and ports are not restricted"
        );
        return;
    }
    let mut missing: Vec<&str> = FEATURES
        .iter()
        .filter(|(since, _)| outcome.abi < *since)
        .map(|(_, what)| *what)
        .collect();
    if threads > 1 && !all_threads {
        missing.push("restricting threads started before the sandbox (ABI 8, Linux 7.0)");
    }
    if !missing.is_empty() {
        log::warn!(
            "sandbox: Landlock ABI {} does not enforce {}",
            outcome.abi,
            missing.join(", ")
        );
    }
}

/// The rights that `grant` stands for; a file takes only file rights.
fn access(grant: &Grant) -> BitFlags<AccessFs> {
    match grant.allowed {
        Use::Read if grant.path.is_dir() => AccessFs::ReadFile | AccessFs::ReadDir,
        Use::Read => AccessFs::ReadFile.into(),
        Use::Sockets => AccessFs::MakeSock | AccessFs::RemoveFile,
    }
}

/// Every path `plan` needs, symlink targets resolved, without repeats. Paths that do not
/// exist are left out (a system without `/etc/gai.conf` is common).
pub fn grants(plan: &Plan) -> Vec<Grant> {
    let mut grants = Vec::new();
    let mut add = |path: PathBuf, allowed: Use| {
        let grant = Grant { path, allowed };
        if grant.path.exists() && !grants.contains(&grant) {
            grants.push(grant);
        }
    };
    for file in &plan.reloadable_files {
        for dir in [parent(file), canonical(file).as_deref().and_then(parent)]
            .into_iter()
            .flatten()
        {
            add(dir, Use::Read);
        }
    }
    for file in RESOLVER_FILES.iter().chain(TRUST_STORE).map(Path::new) {
        add(file.to_path_buf(), Use::Read);
        // A link's target is often rewritten by rename (systemd-resolved's
        // stub-resolv.conf): allow its directory, which outlives the file.
        if let Some(target) = canonical(file).filter(|target| target != file) {
            let allowed = if target.is_dir() {
                Some(target)
            } else {
                parent(&target)
            };
            if let Some(path) = allowed {
                add(path, Use::Read);
            }
        }
    }
    if let Some(dir) = c_library_dir() {
        add(dir, Use::Read);
    }
    for socket in &plan.unix_sockets {
        if let Some(dir) = parent(socket) {
            add(dir, Use::Sockets);
        }
    }
    grants
}

/// The directory that holds `path`: `.` for a bare file name.
fn parent(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(dir) => Some(dir.to_path_buf()),
        None => None,
    }
}

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Where the running C library was loaded from: glibc loads its NSS modules
/// (`libnss_*.so`) from the same directory. `None` for a static build.
fn c_library_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libc.so"))
        })
        .and_then(|path| canonical(Path::new(path)))
        .and_then(|path| parent(&path))
}

/// Threads in this process now.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-landlock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }

    fn allowed(grants: &[Grant], path: &Path, what: Use) -> bool {
        grants.iter().any(|g| g.path == path && g.allowed == what)
    }

    #[test]
    fn certbot_links_allow_both_directories() {
        let root = temp_dir("certbot");
        let archive = root.join("archive/example.com");
        let live = root.join("live/example.com");
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(archive.join("fullchain1.pem"), "x").unwrap();
        symlink(
            "../../archive/example.com/fullchain1.pem",
            live.join("fullchain.pem"),
        )
        .unwrap();
        let plan = Plan {
            reloadable_files: vec![live.join("fullchain.pem")],
            unix_sockets: vec![root.join("run/moat.sock")],
            ..Plan::default()
        };
        std::fs::create_dir_all(root.join("run")).unwrap();
        let grants = grants(&plan);
        assert!(allowed(&grants, &live, Use::Read), "{grants:?}");
        assert!(allowed(&grants, &archive, Use::Read), "{grants:?}");
        assert!(
            allowed(&grants, &root.join("run"), Use::Sockets),
            "{grants:?}"
        );
        assert!(!grants.iter().any(|g| g.path == root), "{grants:?}");
        // /etc itself is never opened wholesale, and the C library's directory is there.
        assert!(
            !grants.iter().any(|g| g.path == Path::new("/etc")),
            "{grants:?}"
        );
        assert!(c_library_dir().is_some_and(|dir| allowed(&grants, &dir, Use::Read)));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bare_file_names_mean_the_current_directory() {
        assert_eq!(parent(Path::new("server.pem")), Some(PathBuf::from(".")));
        assert_eq!(
            parent(Path::new("certs/server.pem")),
            Some(PathBuf::from("certs"))
        );
    }
}
