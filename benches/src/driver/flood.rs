//! One run of a flood scenario, in one target process: the legitimate generator alone (the
//! unloaded rate), then the attackers started as a second generator from another source
//! address, then the legitimate generator again beside them. The target's RSS is read before
//! the attack, sampled by the attackers during it, and read again after they have gone.

use std::path::Path;
use std::time::Duration;

use super::procs;
use super::scenario::{Attack, Measured, Scenario};
use super::targets::{tail, Kind, Running};
use crate::load::flood::LATE_SLACK;
use crate::procfs::rss_kib;
use crate::{parse_duration, Result};

/// Time the attackers get to reach full strength before the legitimate clients start again.
const RAMP: Duration = Duration::from_secs(2);
/// Time the target gets to close what the attackers left before its RSS is read again.
const SETTLE: Duration = Duration::from_secs(1);

/// What a flood run needs from the driver.
pub struct FloodRun<'a> {
    pub scenario: &'a Scenario,
    pub attack: &'a Attack,
    pub kind: Kind,
    pub running: &'a Running,
    /// The legitimate generator's arguments.
    pub legit_args: &'a [String],
    pub warmup: Duration,
    pub duration: Duration,
    pub logs: &'a Path,
    pub label: &'a str,
}

/// Runs the three phases and returns the loaded window's figures, with the unloaded rate
/// (`base_*`), the attackers' report (`atk_*`) and the target's memory (`rss_*`) added.
pub fn run(f: &FloodRun<'_>) -> Result<Measured> {
    let limit = f.warmup + f.duration + Duration::from_secs(120);
    let log = |part: &str| f.logs.join(format!("{}-{part}.log", f.label));
    let line = procs::run_generator(f.legit_args, &log("unloaded-load"), limit)?;
    let unloaded = parse(&line)?;
    let pid = f.running.pid();
    let rss_before = rss_kib(pid)?;

    let cut_after = f
        .scenario
        .limits
        .handshake_timeout
        .map(parse_duration)
        .transpose()?;
    let mut attack_for = RAMP + f.warmup + f.duration + Duration::from_secs(1);
    if let Some(timeout) = cut_after {
        // Long enough to see the first attackers cut, late ones included.
        attack_for = attack_for.max(timeout + LATE_SLACK + Duration::from_secs(3));
    }
    let mut attack_args: Vec<String> = vec![
        "--mode".into(),
        f.attack.mode.into(),
        "--source-ip".into(),
        f.attack.source_ip.into(),
        "--concurrency".into(),
        f.attack.attackers.to_string(),
        "--duration".into(),
        format!("{}", attack_for.as_secs_f64()),
    ];
    if let Some(timeout) = cut_after {
        attack_args.extend(["--cut-after".into(), format!("{}", timeout.as_secs_f64())]);
    }
    // The legitimate generator's --addr, --ca and --target-pid serve the attackers too.
    for pair in f.legit_args.chunks(2) {
        if let [flag, value] = pair {
            if ["--addr", "--ca", "--target-pid"].contains(&flag.as_str()) {
                attack_args.extend([flag.clone(), value.clone()]);
            }
        }
    }
    let attack_log = log("attack");
    let attackers = procs::spawn_generator(&attack_args, &attack_log)?;
    std::thread::sleep(RAMP);
    let loaded = procs::run_generator(f.legit_args, &log("load"), limit);
    let attacked = procs::wait_generator(attackers, &attack_log, attack_for + limit);
    let (loaded, attacked) = (parse(&loaded?)?, parse(&attacked?)?);

    std::thread::sleep(SETTLE);
    let mut m = loaded;
    let put = |m: &mut Measured, k: &str, v: String| {
        m.values.insert(k.to_string(), v);
    };
    put(&mut m, "rss_before_kib", rss_before.to_string());
    put(&mut m, "rss_after_kib", rss_kib(pid)?.to_string());
    for key in [
        "ops",
        "secs",
        "target_cpu",
        "gen_cpu",
        "cpu0_busy",
        "cpu1_busy",
    ] {
        let value = unloaded.text(key).unwrap_or("0").to_string();
        put(&mut m, &format!("base_{key}"), value);
    }
    for (k, v) in attacked.values {
        if k.starts_with("atk_") || k == "rss_peak_kib" {
            m.values.insert(k, v);
        }
    }
    if f.kind.is_moat() {
        if let Some(tunnels) = moat_tunnels(f.running) {
            put(&mut m, "tunnels_after", tunnels.to_string());
        }
    }
    Ok(m)
}

fn parse(line: &str) -> Result<Measured> {
    Measured::parse(line).ok_or_else(|| format!("cannot read the generator's result `{line}`"))
}

/// Asks moat for its `stats:` line (SIGUSR1, to its own PID) and returns its tunnel count.
fn moat_tunnels(running: &Running) -> Option<u64> {
    // SAFETY: kill() on the PID of a child the driver started and has not reaped.
    unsafe { libc::kill(running.pid() as libc::pid_t, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(300));
    tail(&running.log)
        .lines()
        .rev()
        .find_map(|l| l.split("stats: tunnels=").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}
