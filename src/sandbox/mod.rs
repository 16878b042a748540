//! The sandbox moat enters once it serves: Landlock for files and TCP ports, seccomp for
//! system calls.
//!
//! By the time the loop turns, every listener is bound and every file is read. From then
//! on moat needs little: its own sockets, the files it may read again at reload, name
//! resolution, and a short list of system calls. [`enter`] takes away the rest, so that a
//! peer who found a way to run code inside moat would find nothing to use: no shell to
//! start, no file outside moat's own to read or write, no port but moat's own to connect to.
//!
//! - [`landlock`]: read-only access to the certificate, key and CA files and the directories
//!   that hold them (symlink targets included), what name resolution needs, and the
//!   directories of moat's unix sockets; TCP bind only to the listen ports and connect only
//!   to the target ports where the kernel supports port rules (Landlock ABI 4, Linux 6.7).
//! - [`seccomp`]: an allow-list of system calls, for every thread; any other call kills
//!   the process.
//!
//! A kernel without either gets a warning and moat runs without it; `--no-sandbox` turns
//! both off. The sandbox is fixed at start-up: a reload can read only files beneath the
//! directories allowed here and use only these ports, and anything else fails with
//! "permission denied".

pub mod landlock;
pub mod seccomp;

use std::path::PathBuf;

use crate::error::StartError;

/// The DNS port: a resolver retries over TCP when a UDP answer is truncated.
const DNS_PORT: u16 = 53;

/// What moat still needs once it serves, computed from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Files moat may read again at reload: certificates, keys, CA bundles, CRLs, the
    /// configuration file. Their directories (and those of their symlink targets) become
    /// readable.
    pub reloadable_files: Vec<PathBuf>,
    /// Unix sockets moat listens on: their directories allow creating and removing sockets.
    pub unix_sockets: Vec<PathBuf>,
    /// TCP ports moat binds.
    pub bind_ports: Vec<u16>,
    /// TCP ports moat connects to.
    pub connect_ports: Vec<u16>,
    /// Whether moat resolves host names again at reload (client-mode targets).
    pub resolves_names: bool,
}

impl Plan {
    /// The plan for what moat runs: `files` it may read again, the unix sockets it listens
    /// on, the TCP ports it has bound and the ones it connects to; `resolves_names` when a
    /// reload resolves names again.
    pub fn new(
        files: Vec<PathBuf>,
        unix_sockets: Vec<PathBuf>,
        bind_ports: Vec<u16>,
        connect_ports: Vec<u16>,
        resolves_names: bool,
    ) -> Self {
        let mut plan = Self {
            reloadable_files: files,
            unix_sockets,
            bind_ports,
            connect_ports,
            resolves_names,
        };
        if resolves_names {
            plan.connect_ports.push(DNS_PORT);
        }
        for list in [&mut plan.bind_ports, &mut plan.connect_ports] {
            list.sort_unstable();
            list.dedup();
        }
        plan.reloadable_files.sort();
        plan.reloadable_files.dedup();
        plan
    }
}

/// Restricts the whole process to `plan`, for good. Call it once, after the listeners are
/// bound and the files read, before the loop's first turn, and before starting threads:
/// on kernels before Landlock ABI 8 Landlock binds only the calling thread (and the
/// threads it starts later); seccomp binds every thread.
///
/// What the kernel cannot enforce is logged as a warning; one info line says what was
/// applied. An error means a rule could not be built, which is a bug or an unusual kernel:
/// the message suggests `--no-sandbox`.
pub fn enter(plan: &Plan) -> Result<(), StartError> {
    let landlock = landlock::restrict(plan).map_err(StartError::Sandbox)?;
    let seccomp = seccomp::restrict().map_err(StartError::Sandbox)?;
    let parts: Vec<String> = [landlock.summary(), seccomp.summary()]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        log::warn!("sandbox: this kernel supports neither Landlock nor seccomp: running without");
    } else {
        log::info!("sandbox: {}", parts.join(", "));
    }
    Ok(())
}
