//! What the driver and the generator read from `/proc`: CPU time and resident memory of a
//! process, and the open-file limit.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use crate::Result;

/// Clock ticks per second, the unit of `utime` and `stime` in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// User plus system CPU time used so far by process `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: unexpected format"))
    };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// Raises this process's soft open-file limit to its hard limit and returns the new limit.
/// Children inherit it.
pub fn raise_open_file_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit with soft <= hard.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!(
                "cannot raise the open-file limit: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(limit.rlim_cur)
}

/// Time one CPU spent, in clock ticks, from a `cpuN` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Interrupt and softirq time: on loopback much of the TCP receive path runs here,
    /// and no process is charged for it.
    pub irq: u64,
    pub total: u64,
}

impl CpuTicks {
    /// Busy share of `self - earlier`, in percent.
    pub fn busy_pct_since(&self, earlier: &CpuTicks) -> f64 {
        pct(self.busy - earlier.busy, self.total - earlier.total)
    }

    /// Interrupt and softirq share of `self - earlier`, in percent.
    pub fn irq_pct_since(&self, earlier: &CpuTicks) -> f64 {
        pct(self.irq - earlier.irq, self.total - earlier.total)
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Per-CPU times from `/proc/stat`, indexed by CPU number.
pub fn cpu_ticks() -> Result<Vec<CpuTicks>> {
    let stat =
        fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let mut cpus = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue; // the all-CPU summary line
        }
        // cpuN user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if v.len() < 8 {
            return Err("/proc/stat: unexpected format".into());
        }
        let total: u64 = v.iter().sum();
        cpus.push(CpuTicks {
            busy: total - v[3] - v[4],
            irq: v[5] + v[6],
            total,
        });
    }
    Ok(cpus)
}

/// How busy each CPU is over `interval`, in percent.
pub fn busy_pct_over(interval: Duration) -> Result<Vec<f64>> {
    let before = cpu_ticks()?;
    std::thread::sleep(interval);
    let after = cpu_ticks()?;
    Ok(after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.busy_pct_since(b))
        .collect())
}

/// A snapshot of CPU time for a set of processes and for each CPU, used to measure a window.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    pub target: Duration,
    pub generator: Duration,
    pub backend: Duration,
    pub cpus: Vec<CpuTicks>,
    /// CPU ticks of every other user-space process (with its reaped children), by PID.
    pub others: HashMap<u32, u64>,
}

impl CpuSample {
    /// Reads the target's, this process's and (if known) the backend's CPU time.
    pub fn take(target: u32, backend: Option<u32>) -> Result<CpuSample> {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        let ours = [target, std::process::id(), backend.unwrap_or(0), parent];
        Ok(CpuSample {
            others: other_process_ticks(&ours, parent),
            target: cpu_time(target)?,
            generator: cpu_time(std::process::id())?,
            backend: match backend {
                Some(pid) => cpu_time(pid)?,
                None => Duration::ZERO,
            },
            cpus: cpu_ticks()?,
        })
    }
}

impl CpuSample {
    /// CPU time that processes outside the benchmark used between `earlier` and `self`,
    /// counting a process that started in between from zero. A process that both started and
    /// ended in between is counted once its parent reaps it (as the parent's child time).
    pub fn others_since(&self, earlier: &CpuSample) -> Duration {
        let ticks: u64 = self
            .others
            .iter()
            .map(|(pid, &now)| now.saturating_sub(earlier.others.get(pid).copied().unwrap_or(0)))
            .sum();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
    }
}

/// utime + stime + cutime + cstime of every user-space process except `ours` and the other
/// children of `driver` (a second generator, such as a flood's attacker, is part of the
/// benchmark), by PID. Kernel threads (PID 2 and its children) are left out: on loopback,
/// much of their work is our own network traffic.
fn other_process_ticks(ours: &[u32], driver: u32) -> HashMap<u32, u64> {
    let mut ticks = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if ours.contains(&pid) || pid == 2 {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // it ended meanwhile
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // After the state: ppid is field 4 (index 0 here); utime..cstime are 14..17 (10..13).
        let ppid = fields.first().copied().unwrap_or(0);
        if fields.len() < 14 || ppid == 2 || (driver > 1 && ppid == u64::from(driver)) {
            continue;
        }
        ticks.insert(pid, fields[10..14].iter().sum());
    }
    ticks
}
