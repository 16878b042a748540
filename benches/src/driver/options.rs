//! The options of `moat-bench run`, and the targets they name: which programs, with which
//! extra flags, on which CPUs.

use std::path::PathBuf;
use std::time::Duration;

use super::procs;
use super::scenario::{self, Scenario};
use super::targets::{self, Kind, Target};
use crate::{parse_duration, Result};

/// Options of `moat-bench run`.
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub targets: Vec<Kind>,
    /// Targets were named explicitly: a missing one is an error, not a skip.
    pub targets_explicit: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub rounds: usize,
    pub out: PathBuf,
    pub moat: Option<PathBuf>,
    /// Extra flags for moat (`--moat-args`).
    pub moat_args: Vec<String>,
    /// A second moat binary to measure beside the first, as target `moat-base`.
    pub moat_baseline: Option<PathBuf>,
    /// Extra flags for the second moat (`--moat-baseline-args`).
    pub moat_baseline_args: Vec<String>,
    pub tokio: Option<PathBuf>,
    /// `taskset -c` CPU list for every target.
    pub target_cpus: String,
    pub install_peers: bool,
    pub quiet_wait: Duration,
}

/// The `--help` text above the option list: scenarios and targets.
pub fn usage() -> String {
    let names = |list: Vec<Scenario>| -> String {
        list.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    };
    format!(
        "Usage: moat-bench run [options]\n\n\
         Runs every scenario against each target and prints one table.\n\
         Scenarios: {}\n\
         Flood scenarios (--flood; moat and tokio only): {}\n\
         Targets: moat, tokio, stunnel, haproxy (peers only when installed); moat-base with \
         --moat-baseline",
        names(scenario::all(scenario::HANDSHAKE_CONCURRENCY)),
        names(scenario::flood(scenario::HANDSHAKE_CONCURRENCY))
    )
}

fn options_spec() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optflag(
        "",
        "quick",
        "smoke test: fewer scenarios, 1 s windows, moat and tokio only",
    );
    opts.optflag(
        "",
        "flood",
        "run the flood scenarios (fairness, slowloris, storm, garbage, per-ip) instead",
    );
    opts.optopt(
        "",
        "scenarios",
        "comma-separated scenarios to run (default: all)",
        "LIST",
    );
    opts.optopt(
        "",
        "targets",
        "comma-separated targets (default: all that are present)",
        "LIST",
    );
    opts.optopt(
        "",
        "duration",
        "measured window per run (default 3s; quick 1s)",
        "DUR",
    );
    opts.optopt(
        "",
        "warmup",
        "warm-up before each window (default 0.5s; quick 0.3s)",
        "DUR",
    );
    opts.optopt(
        "",
        "rounds",
        "runs per scenario and target; the median is kept (default 3; quick 1)",
        "N",
    );
    opts.optopt(
        "",
        "concurrency",
        "connections in the handshake scenarios (default 32)",
        "N",
    );
    opts.optopt(
        "",
        "out",
        "directory for results.md, chart.svg and logs (default benches/results)",
        "DIR",
    );
    opts.optopt(
        "",
        "moat",
        "the moat binary (default: next to this program)",
        "PATH",
    );
    opts.optopt(
        "",
        "moat-args",
        "extra flags for moat, split at whitespace (e.g. \"--workers 2\"); each replaces \
         a driver flag of the same name",
        "ARGS",
    );
    opts.optopt(
        "",
        "moat-baseline",
        "a second moat binary, measured beside the first as target moat-base",
        "PATH",
    );
    opts.optopt(
        "",
        "moat-baseline-args",
        "extra flags for moat-base (--moat-args does not apply to it)",
        "ARGS",
    );
    opts.optopt(
        "",
        "tokio",
        "the moat-tokio-proxy binary (default: next to this program)",
        "PATH",
    );
    opts.optopt(
        "",
        "target-cpus",
        "CPUs every target is pinned to, as taskset -c takes them (default 0; the \
         generator and the backend stay on CPU 1)",
        "LIST",
    );
    opts.optflag(
        "",
        "install-peers",
        "apt-get install stunnel4 and haproxy first",
    );
    opts.optopt(
        "",
        "quiet-wait",
        "before each run, wait up to this long for other load to end (default 120s; 0: never)",
        "DUR",
    );
    opts.optflag("h", "help", "print this help");
    opts
}

pub fn parse(argv: &[String]) -> Result<Option<Options>> {
    let spec = options_spec();
    let m = spec.parse(argv).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        println!("{}", spec.usage(&usage()));
        return Ok(None);
    }
    let quick = m.opt_present("quick");
    let number = |name: &str, default: usize| -> Result<usize> {
        m.opt_str(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name}: `{v}` is not a whole number"))
        })
    };
    let seconds = |name: &str, default: f64| -> Result<Duration> {
        m.opt_str(name)
            .map_or(Ok(Duration::from_secs_f64(default)), |v| {
                parse_duration(&v).map_err(|e| format!("--{name}: {e}"))
            })
    };
    let concurrency = number("concurrency", scenario::HANDSHAKE_CONCURRENCY)?.max(1);
    let all = scenario::all(concurrency);
    let flood = scenario::flood(concurrency);
    let scenarios = match m.opt_str("scenarios") {
        Some(list) => list
            .split(',')
            .map(|name| {
                all.iter()
                    .chain(&flood)
                    .find(|s| s.name == name.trim())
                    .cloned()
                    .ok_or_else(|| format!("unknown scenario `{name}`\n{}", usage()))
            })
            .collect::<Result<Vec<_>>>()?,
        None if m.opt_present("flood") => flood,
        None if quick => all
            .iter()
            .filter(|s| scenario::QUICK.contains(&s.name))
            .cloned()
            .collect(),
        None => all,
    };
    let (mut targets, targets_explicit) = match m.opt_str("targets") {
        Some(list) => (
            list.split(',')
                .map(|t| Kind::parse(t.trim()))
                .collect::<Result<Vec<_>>>()?,
            true,
        ),
        None if quick => (vec![Kind::Moat, Kind::Tokio], false),
        None => (Kind::DEFAULT.to_vec(), false),
    };
    let moat_baseline = m.opt_str("moat-baseline").map(PathBuf::from);
    add_baseline(&mut targets, moat_baseline.is_some())?;
    let default_out = if PathBuf::from("benches").is_dir() {
        PathBuf::from("benches/results")
    } else {
        PathBuf::from("moat-bench-results")
    };
    Ok(Some(Options {
        scenarios,
        targets,
        targets_explicit,
        warmup: seconds("warmup", if quick { 0.3 } else { 0.5 })?,
        duration: seconds("duration", if quick { 1.0 } else { 3.0 })?,
        rounds: number("rounds", if quick { 1 } else { 3 })?.max(1),
        out: m.opt_str("out").map_or(default_out, PathBuf::from),
        moat: m.opt_str("moat").map(PathBuf::from),
        moat_args: targets::split_args(&m.opt_str("moat-args").unwrap_or_default()),
        moat_baseline,
        moat_baseline_args: targets::split_args(
            &m.opt_str("moat-baseline-args").unwrap_or_default(),
        ),
        tokio: m.opt_str("tokio").map(PathBuf::from),
        target_cpus: m
            .opt_str("target-cpus")
            .unwrap_or_else(|| targets::TARGET_CPU.to_string()),
        install_peers: m.opt_present("install-peers"),
        quiet_wait: seconds("quiet-wait", 120.0)?,
    }))
}

/// With a baseline binary, `moat-base` is measured right after `moat` (added when the
/// target list does not name it); without one, naming it is an error.
fn add_baseline(targets: &mut Vec<Kind>, baseline: bool) -> Result<()> {
    let named = targets.contains(&Kind::MoatBase);
    match (baseline, named) {
        (false, true) => Err("target moat-base needs --moat-baseline PATH".into()),
        (true, false) => {
            let at = targets
                .iter()
                .position(|&k| k == Kind::Moat)
                .map_or(0, |i| i + 1);
            targets.insert(at, Kind::MoatBase);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Finds each requested target's program; skips absent ones unless they were named.
pub fn resolve_targets(options: &Options) -> Result<Vec<Target>> {
    let here = procs::self_exe()?;
    let sibling = |name: &str| here.with_file_name(name);
    let mut found = Vec::new();
    for &kind in &options.targets {
        let (program, hint) = match kind {
            Kind::Moat => (
                Some(options.moat.clone().unwrap_or_else(|| sibling("moat"))),
                "build it with `cargo build --release -p moat` into the same target directory, or pass --moat PATH",
            ),
            Kind::MoatBase => (
                options.moat_baseline.clone(),
                "pass --moat-baseline PATH",
            ),
            Kind::Tokio => (
                Some(options.tokio.clone().unwrap_or_else(|| sibling("moat-tokio-proxy"))),
                "build it with `cargo build --release -p moat-bench`, or pass --tokio PATH",
            ),
            Kind::Stunnel => (
                targets::find_program(&["stunnel4", "stunnel"]),
                "install it with --install-peers (apt-get install stunnel4)",
            ),
            Kind::Haproxy => (
                targets::find_program(&["haproxy"]),
                "install it with --install-peers (apt-get install haproxy)",
            ),
        };
        let extra_args = match kind {
            Kind::Moat => options.moat_args.clone(),
            Kind::MoatBase => options.moat_baseline_args.clone(),
            _ => Vec::new(),
        };
        match program.filter(|p| p.is_file()) {
            Some(program) => found.push(Target {
                kind,
                program,
                extra_args,
                cpus: options.target_cpus.clone(),
            }),
            None if options.targets_explicit => {
                return Err(format!("target {} not found: {hint}", kind.name()))
            }
            None => eprintln!("moat-bench: skipping {}: not found ({hint})", kind.name()),
        }
    }
    if found.is_empty() {
        return Err("no target to measure".into());
    }
    Ok(found)
}

/// A line for the results saying how a target was started, when it differs from the
/// usual: another binary, extra flags or other CPUs.
pub fn command_line(options: &Options, target: &Target) -> Option<String> {
    let usual = target.kind != Kind::MoatBase
        && target.extra_args.is_empty()
        && options.target_cpus == targets::TARGET_CPU
        && !(target.kind == Kind::Moat && options.moat.is_some())
        && !(target.kind == Kind::Tokio && options.tokio.is_some());
    if usual {
        return None;
    }
    let mut line = format!(
        "{}: {} on CPU {}",
        target.kind.name(),
        target.program.display(),
        target.cpus
    );
    if !target.extra_args.is_empty() {
        line.push_str(&format!(", extra flags `{}`", target.extra_args.join(" ")));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ClientProfile;

    #[test]
    fn the_baseline_follows_moat() {
        let mut targets = vec![Kind::Tokio, Kind::Moat, Kind::Haproxy];
        add_baseline(&mut targets, true).unwrap();
        assert_eq!(
            targets,
            [Kind::Tokio, Kind::Moat, Kind::MoatBase, Kind::Haproxy]
        );
        add_baseline(&mut targets, true).unwrap();
        assert_eq!(targets.len(), 4);
        let mut alone = vec![Kind::MoatBase];
        assert!(add_baseline(&mut alone, false).is_err());
        let mut none = vec![Kind::Tokio];
        add_baseline(&mut none, true).unwrap();
        assert_eq!(none, [Kind::MoatBase, Kind::Tokio]);
    }

    #[test]
    fn run_options() {
        let argv: Vec<String> = [
            "--scenarios",
            "handshake-openssl,rr-idle-9000",
            "--targets",
            "moat,tokio",
            "--moat-args",
            "--workers 2",
            "--moat-baseline",
            "/bin/true",
            "--target-cpus",
            "0,1",
        ]
        .map(String::from)
        .to_vec();
        let options = parse(&argv).unwrap().unwrap();
        assert_eq!(options.targets, [Kind::Moat, Kind::MoatBase, Kind::Tokio]);
        assert_eq!(options.moat_args, ["--workers", "2"]);
        assert!(options.moat_baseline_args.is_empty());
        assert_eq!(options.target_cpus, "0,1");
        let names: Vec<&str> = options.scenarios.iter().map(|s| s.name).collect();
        assert_eq!(names, ["handshake-openssl", "rr-idle-9000"]);
        assert_eq!(options.scenarios[0].profile, ClientProfile::OpensslOrder);
    }
}
