//! seccomp: the system calls moat may still make once it serves; any other kills the
//! process.
//!
//! The list was found by running the whole integration suite with moat under
//! `strace -f` and keeping every call made after the sandbox was entered (the loop, exit),
//! then adding what the paths the suite cannot reach yet need: reading files and
//! resolving names again at reload, opening a listener at reload, worker and logger
//! threads, a panic's report. Each group below says why it is there. Three calls with a
//! large kernel surface are narrowed by an argument ([`NARROWED`]).
//!
//! A feature that makes a call not on the list dies at that call with `SIGSYS`; the
//! kernel's audit log names it (`dmesg`: `audit: type=1326 ... syscall=N`), and
//! `--no-sandbox` confirms it. The integration suite runs with the sandbox on, so it says
//! so first.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A group of system calls, allowed whatever their arguments, and why moat makes them.
#[derive(Debug)]
struct Group {
    why: &'static str,
    calls: &'static [(&'static str, libc::c_long)],
}

/// A system call allowed only when one argument has one of a few values.
#[derive(Debug)]
struct Narrowed {
    why: &'static str,
    call: (&'static str, libc::c_long),
    /// Which argument (from 0) is checked; its low 32 bits, which is all these calls use.
    arg: u8,
    values: &'static [u32],
}

/// `calls![SYS_read, ...]`: each call's name (for messages and tests) and number.
macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

/// The calls allowed with any arguments, by what needs them.
const GROUPS: &[Group] = &[
    Group {
        why: "the poll loop: wait, accept, connect, move bytes, shut down, close; sd_notify",
        calls: calls![
            SYS_epoll_pwait,
            SYS_epoll_pwait2,
            SYS_epoll_ctl,
            SYS_accept4,
            SYS_connect,
            SYS_read,
            SYS_write,
            SYS_readv,
            SYS_writev,
            SYS_recvfrom,
            SYS_sendto,
            SYS_recvmsg,
            SYS_sendmsg,
            SYS_shutdown,
            SYS_close,
            SYS_getsockopt,
            SYS_setsockopt,
            SYS_getsockname,
            SYS_getpeername,
            SYS_fcntl,
        ],
    },
    Group {
        why: "signals: returning from signal-hook's handler; the kernel resuming a timed \
              wait (the logger's, a worker's) that a signal interrupted with no handler \
              run on that thread (SIGSTOP/SIGCONT, or another thread took it); threads \
              mask signals; a new thread asks for the stack-overflow handler std \
              installed (sigaction reads)",
        calls: calls![
            SYS_rt_sigreturn,
            SYS_restart_syscall,
            SYS_rt_sigprocmask,
            SYS_rt_sigaction
        ],
    },
    Group {
        why: "memory: the allocator, thread stacks, the C library's loader",
        calls: calls![
            SYS_brk,
            SYS_mmap,
            SYS_munmap,
            SYS_mremap,
            SYS_mprotect,
            SYS_madvise,
        ],
    },
    Group {
        why: "threads (workers, a logger): start, lock, stop",
        calls: calls![
            SYS_clone,
            SYS_clone3,
            SYS_futex,
            SYS_set_robust_list,
            SYS_rseq,
            SYS_sigaltstack,
            SYS_sched_getaffinity,
            SYS_sched_yield,
            SYS_gettid,
            SYS_exit,
        ],
    },
    Group {
        why: "time (where the vDSO cannot answer) and randomness (TLS keys and tickets)",
        calls: calls![
            SYS_clock_gettime,
            SYS_clock_nanosleep,
            SYS_nanosleep,
            SYS_getrandom,
        ],
    },
    Group {
        why: "reading certificates, keys, CA directories and the configuration at reload",
        calls: calls![
            SYS_openat,
            SYS_newfstatat,
            SYS_fstat,
            SYS_statx,
            SYS_lseek,
            SYS_pread64,
            SYS_getdents64,
        ],
    },
    Group {
        why: "resolving names at reload: glibc's resolver (UDP, TCP, netlink) and NSS",
        calls: calls![SYS_uname, SYS_ppoll, SYS_sendmmsg],
    },
    Group {
        why: "listeners opened at reload; unix socket files removed at exit",
        calls: calls![SYS_bind, SYS_listen, SYS_unlinkat],
    },
    Group {
        why: "exit; abort's SIGABRT to itself; a panic's backtrace (executable, current directory)",
        calls: calls![
            SYS_exit_group,
            SYS_getpid,
            SYS_tgkill,
            SYS_readlinkat,
            SYS_getcwd
        ],
    },
];

/// x86_64's libc still uses the older entry points of a few of the calls above.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[Group] = &[Group {
    why: "x86_64's older forms of calls above",
    calls: calls![SYS_epoll_wait, SYS_poll, SYS_unlink, SYS_readlink],
}];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[Group] = &[];

/// Calls allowed only for what moat uses them for.
const NARROWED: &[Narrowed] = &[
    Narrowed {
        why: "sockets of the families moat speaks; netlink for glibc's address sorting",
        call: ("SYS_socket", libc::SYS_socket),
        arg: 0,
        values: &[
            libc::AF_UNIX as u32,
            libc::AF_INET as u32,
            libc::AF_INET6 as u32,
            libc::AF_NETLINK as u32,
        ],
    },
    Narrowed {
        why: "socket ioctls: bytes readable (resolver), unsent (close), nonblocking, close-on-exec",
        call: ("SYS_ioctl", libc::SYS_ioctl),
        arg: 1,
        values: &[
            libc::FIONREAD as u32,
            libc::TIOCOUTQ as u32, // = SIOCOUTQ
            libc::FIONBIO as u32,
            libc::FIOCLEX as u32,
        ],
    },
    Narrowed {
        why: "naming a new thread; reading the auxiliary vector (rustix looks up the vDSO \
              the first time it reads the clock)",
        call: ("SYS_prctl", libc::SYS_prctl),
        arg: 0,
        values: &[libc::PR_SET_NAME as u32, PR_GET_AUXV],
    },
];

/// `prctl(PR_GET_AUXV)` (Linux 6.4), which the libc crate does not name yet.
const PR_GET_AUXV: u32 = 0x4155_5856;

/// Every call allowed whatever its arguments, as (name, number).
fn unconditional() -> impl Iterator<Item = (&'static str, libc::c_long)> {
    GROUPS
        .iter()
        .chain(LEGACY)
        .flat_map(|group| group.calls.iter().copied())
}

/// The filter's rules: no rule for a call means any arguments; otherwise one of the rules
/// must match.
fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        unconditional().map(|(_, nr)| (nr, Vec::new())).collect();
    for narrowed in NARROWED {
        let mut any_of = Vec::new();
        for &value in narrowed.values {
            let condition = SeccompCondition::new(
                narrowed.arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(value),
            )?;
            any_of.push(SeccompRule::new(vec![condition])?);
        }
        rules.insert(narrowed.call.1, any_of);
    }
    Ok(rules)
}

/// What seccomp enforces, for the log line.
#[derive(Debug)]
pub struct Outcome {
    /// How many system calls the filter lets through, if it is in force.
    allowed: Option<usize>,
}

impl Outcome {
    /// `seccomp (N syscalls)`, or `None` where seccomp is not in force.
    pub fn summary(&self) -> Option<String> {
        self.allowed.map(|n| format!("seccomp ({n} syscalls)"))
    }
}

/// Installs the filter on every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`).
pub fn restrict() -> Result<Outcome, String> {
    let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
        log::warn!(
            "sandbox: no seccomp filter for {}: system calls are not restricted",
            std::env::consts::ARCH
        );
        return Ok(Outcome { allowed: None });
    };
    let rules = rules().map_err(|e| format!("seccomp rule: {e}"))?;
    let count = rules.len();
    let program: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| format!("seccomp filter: {e}"))?;
    match seccompiler::apply_filter_all_threads(&program) {
        Ok(()) => {
            log_groups();
            Ok(Outcome {
                allowed: Some(count),
            })
        }
        // EINVAL: a kernel built without seccomp filters; ENOSYS: without seccomp(2).
        Err(seccompiler::Error::Seccomp(e))
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
        {
            log::warn!(
                "sandbox: seccomp is not available on this kernel: system calls are not restricted"
            );
            Ok(Outcome { allowed: None })
        }
        Err(e) => Err(format!("seccomp: {e}")),
    }
}

/// At debug level, the allow-list and why each call is on it.
fn log_groups() {
    let shown = |name: &'static str| name.trim_start_matches("SYS_");
    for group in GROUPS.iter().chain(LEGACY) {
        let names: Vec<&str> = group.calls.iter().map(|(name, _)| shown(name)).collect();
        log::debug!("sandbox: seccomp allows {}: {}", names.join(" "), group.why);
    }
    for narrowed in NARROWED {
        log::debug!(
            "sandbox: seccomp allows {} (argument {} one of {:?}): {}",
            shown(narrowed.call.0),
            narrowed.arg,
            narrowed.values,
            narrowed.why
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> impl Iterator<Item = (&'static str, libc::c_long)> {
        unconditional().chain(NARROWED.iter().map(|n| n.call))
    }

    #[test]
    fn each_call_is_listed_once() {
        let mut numbers: Vec<libc::c_long> = allowed().map(|(_, nr)| nr).collect();
        let all = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), all, "a call is listed twice");
        assert_eq!(rules().unwrap().len(), all);
    }

    #[test]
    fn nothing_that_starts_programs_or_changes_privileges_is_allowed() {
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_setuid,
            libc::SYS_mount,
            libc::SYS_mkdirat,
            libc::SYS_fchmodat,
            libc::SYS_seccomp,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
        ] {
            assert!(
                !allowed().any(|(_, nr)| nr == forbidden),
                "system call {forbidden} is allowed"
            );
        }
    }
}
