//! The driver: `moat-bench run`. It makes certificates, starts the backend, then for every
//! scenario starts each target in turn (a fresh process per run, pinned to CPU 0), runs the
//! load generator against it (pinned to CPU 1), and finally prints one table and writes
//! `results.md` and `chart.svg`.

mod flood;
mod options;
mod procs;
mod report;
pub mod scenario;
mod svg;
mod targets;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use options::usage;
use options::{command_line, parse, resolve_targets, Options};
use procs::BackendProcess;
use report::Row;
use scenario::{Measured, Scenario};
use targets::{Kind, Launch, Target};

use crate::tls::ClientProfile;
use crate::Result;

/// `moat-bench run`.
pub fn run(argv: &[String]) -> Result<()> {
    let Some(options) = parse(argv)? else {
        return Ok(());
    };
    let limit = crate::procfs::raise_open_file_limit()?;
    if limit < 20_000 {
        eprintln!("moat-bench: note: open-file limit is {limit}; idle-9000 needs about 19,000");
    }
    if Command::new("taskset").arg("-V").output().is_err() {
        return Err("taskset is not installed (Debian: apt-get install util-linux)".into());
    }
    if options.install_peers {
        install_peers()?;
    }
    let targets = resolve_targets(&options)?;

    let logs = options.out.join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let cert_dir = std::env::temp_dir().join(format!("moat-bench-{}", std::process::id()));
    let certs = crate::certs::generate(&cert_dir)?;
    let result = measure_all(&options, &targets, &certs, &logs);
    let _ = fs::remove_dir_all(&cert_dir);
    let rows = result?;

    let table = report::text_table(&rows);
    println!("\n{table}");
    let peers: Vec<(&str, PathBuf)> = targets
        .iter()
        .filter(|t| matches!(t.kind, Kind::Stunnel | Kind::Haproxy))
        .map(|t| (t.kind.name(), t.program.clone()))
        .collect();
    let machine = procs::machine_description(&peers);
    let machine: Vec<String> = machine
        .into_iter()
        .chain(targets.iter().filter_map(|t| command_line(&options, t)))
        .collect();
    for line in &machine {
        println!("{line}");
    }
    write_results(&options, &rows, &machine)
}

/// Runs every scenario against every target, alternating targets within a scenario.
fn measure_all(
    options: &Options,
    targets: &[Target],
    certs: &crate::certs::CertFiles,
    logs: &std::path::Path,
) -> Result<Vec<Row>> {
    let backend = BackendProcess::start(&logs.join("backend.log"))?;
    let total: usize = options
        .scenarios
        .iter()
        .map(|s| {
            let rounds = if s.one_round() { 1 } else { options.rounds };
            rounds
                * targets
                    .iter()
                    .filter(|t| not_run(s, t.kind).is_none())
                    .count()
        })
        .sum();
    let started = Instant::now();
    let mut done = 0;
    let mut rows = Vec::new();
    for scenario in &options.scenarios {
        let mut runs: Vec<(Kind, Vec<Measured>, Option<String>)> =
            targets.iter().map(|t| (t.kind, Vec::new(), None)).collect();
        let rounds = if scenario.one_round() {
            1
        } else {
            options.rounds
        };
        for round in 0..rounds {
            for i in 0..targets.len() {
                // Rotate the order each round so no target always goes first.
                let index = (i + round) % targets.len();
                let target = &targets[index];
                if let Some(reason) = not_run(scenario, target.kind) {
                    runs[index].2 = Some(reason.to_string());
                    continue;
                }
                done += 1;
                eprint!(
                    "[{done}/{total} {:>4.0}s] {:<15} {:<8} ",
                    started.elapsed().as_secs_f64(),
                    scenario.name,
                    target.kind.name()
                );
                match run_clean(options, scenario, target, certs, &backend, logs, round) {
                    Ok(m) => {
                        let kind = scenario.kind;
                        eprintln!(
                            "{} {}, target CPU {:.0}%, CPU0/CPU1 busy {:.0}/{:.0}%",
                            report::fmt_num(m.figure(kind)),
                            kind.unit(),
                            m.target_cpu_pct(),
                            m.cpu_busy_pct(0),
                            m.cpu_busy_pct(1)
                        );
                        runs[index].1.push(m);
                    }
                    Err(e) => {
                        eprintln!("failed: {}", report::error_summary(&e));
                        runs[index].2 = Some(e);
                    }
                }
            }
        }
        for (kind, mut measured, error) in runs {
            if measured.is_empty() && not_run(scenario, kind).is_some() && kind != Kind::Tokio {
                continue; // peers are left out of the flood scenarios without a row
            }
            // The median run by the per-CPU figure stands for the target.
            measured.sort_by(|a, b| {
                a.per_cpu(scenario.kind)
                    .total_cmp(&b.per_cpu(scenario.kind))
            });
            let median = measured.get(measured.len() / 2).cloned();
            rows.push(Row {
                scenario: scenario.clone(),
                target: kind,
                error: if median.is_none() { error } else { None },
                measured: median,
            });
        }
    }
    Ok(rows)
}

/// Why a scenario is not run against a target, if it is not.
fn not_run(scenario: &Scenario, kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Stunnel | Kind::Haproxy if scenario.is_flood() => {
            Some("not run: flood scenarios are moat and tokio only")
        }
        Kind::Tokio if scenario.limits.max_conns_per_ip.is_some() => {
            Some("not run: moat-tokio-proxy has no per-address cap")
        }
        _ => None,
    }
}

/// How often a run disturbed by other processes is done again.
const RETRIES: usize = 2;

/// [`run_one`], done again (after waiting for quiet) while other processes on the machine
/// used a noticeable share of a CPU during the window. The last attempt stands, with a note.
fn run_clean(
    options: &Options,
    scenario: &Scenario,
    target: &Target,
    certs: &crate::certs::CertFiles,
    backend: &BackendProcess,
    logs: &std::path::Path,
    round: usize,
) -> Result<Measured> {
    let mut attempt = 0;
    loop {
        let measured = run_one(options, scenario, target, certs, backend, logs, round)?;
        let other = measured.num("other_cpu");
        if other < report::FOREIGN_LOAD_PCT || attempt == RETRIES || options.quiet_wait.is_zero() {
            return Ok(measured);
        }
        attempt += 1;
        eprint!("(disturbed: other processes used {other:.0}% of a CPU; again) ");
    }
}

/// One run: a fresh target, the generator against it, the target stopped.
fn run_one(
    options: &Options,
    scenario: &Scenario,
    target: &Target,
    certs: &crate::certs::CertFiles,
    backend: &BackendProcess,
    logs: &std::path::Path,
    round: usize,
) -> Result<Measured> {
    let label = format!("{}-{}-{round}", scenario.name, target.kind.name());
    let launch = Launch {
        certs,
        backend: backend.addr(scenario.backend)?,
        mtls: scenario.mtls,
        work_dir: logs,
        label: &label,
        limits: scenario.limits,
    };
    wait_for_quiet(options.quiet_wait)?;
    let running = target.start(&launch)?;
    let mut args: Vec<String> = vec![
        "--mode".into(),
        scenario.mode.into(),
        "--addr".into(),
        running.addr.to_string(),
        "--ca".into(),
        certs.ca.display().to_string(),
        "--concurrency".into(),
        scenario.concurrency.to_string(),
        "--warmup".into(),
        format!("{}", options.warmup.as_secs_f64()),
        "--duration".into(),
        format!("{}", options.duration.as_secs_f64()),
        "--target-pid".into(),
        running.pid().to_string(),
        "--backend-pid".into(),
        backend.pid().to_string(),
    ];
    if scenario.mtls {
        args.extend([
            "--cert".into(),
            certs.client_cert.display().to_string(),
            "--key".into(),
            certs.client_key.display().to_string(),
        ]);
    }
    if scenario.resume {
        args.push("--resume".into());
    }
    if scenario.profile != ClientProfile::Default {
        args.extend(["--profile".into(), scenario.profile.name().into()]);
    }
    if scenario.tunnels > 0 {
        args.extend(["--tunnels".into(), scenario.tunnels.to_string()]);
    }
    let limit = options.warmup + options.duration + Duration::from_secs(120);
    let result = match &scenario.attack {
        None => procs::run_generator(&args, &logs.join(format!("{label}-load.log")), limit)
            .and_then(|line| {
                Measured::parse(&line)
                    .ok_or_else(|| format!("cannot read the generator's result `{line}`"))
            }),
        Some(attack) => flood::run(&flood::FloodRun {
            scenario,
            attack,
            kind: target.kind,
            running: &running,
            legit_args: &args,
            warmup: options.warmup,
            duration: options.duration,
            logs,
            label: &label,
        }),
    };
    let log = running.log.clone();
    running.stop();
    result.map_err(|e| format!("{e} (target log: {})", log.display()))
}

/// Busy share below which a CPU counts as quiet.
const QUIET_PCT: f64 = 10.0;

/// Waits (up to `limit`) until no CPU is busy with other work, so that a compiler or a test
/// suite running beside the benchmark does not skew it. Says so when it waits.
fn wait_for_quiet(limit: Duration) -> Result<()> {
    if limit.is_zero() {
        return Ok(());
    }
    let started = Instant::now();
    let mut said = false;
    loop {
        let busy = crate::procfs::busy_pct_over(Duration::from_millis(250))?;
        if busy.iter().all(|&b| b < QUIET_PCT) {
            if said {
                eprint!("(quiet after {:.0}s) ", started.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        if started.elapsed() >= limit {
            eprint!("(still busy after {limit:?}: running anyway) ");
            return Ok(());
        }
        if !said {
            let shown: Vec<String> = busy.iter().map(|b| format!("{b:.0}%")).collect();
            eprint!("(other load, CPUs {}; waiting) ", shown.join("/"));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(750));
    }
}

/// `apt-get install -y stunnel4 haproxy` (after an update of the package lists).
fn install_peers() -> Result<()> {
    for args in [
        &["update"][..],
        &["install", "-y", "stunnel4", "haproxy"][..],
    ] {
        eprintln!("moat-bench: apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// Writes `results.md` and `chart.svg` into the output directory.
fn write_results(options: &Options, rows: &[Row], machine: &[String]) -> Result<()> {
    let md_path = options.out.join("results.md");
    let svg_path = options.out.join("chart.svg");
    let mut md = String::from("# moat benchmark results\n\n");
    for line in machine {
        md.push_str(&format!("- {line}\n"));
    }
    md.push_str(&format!(
        "- targets pinned to CPU 0, load generator and backend to CPU 1; warm-up {:?}, window {:?}, {} round(s) (median kept; idle scenarios 1)\n\n",
        options.warmup, options.duration, options.rounds
    ));
    md.push_str(&report::markdown_table(rows));
    md.push_str("\n## Scenarios\n\n");
    for s in &options.scenarios {
        md.push_str(&format!("- `{}`: {}", s.name, s.what));
        if s.profile != ClientProfile::Default {
            md.push_str(&format!(" (client offers {})", s.profile.offer()));
        }
        md.push('\n');
    }
    md.push_str(
        "\n`target CPU` is the target process's user + system time over the window (from \
         `/proc/PID/stat`), as a share of one CPU; `per target-CPU-s` divides the figure by it. \
         `CPU0/CPU1 busy` is the share of each CPU that was not idle, with its interrupt and \
         softirq part in parentheses (on loopback much of the TCP path runs in softirq, charged \
         to no process). `bound` says which side saturated: `target` when CPU 0 (or the target \
         process) was ≥ 90% busy, `generator` when CPU 1 (generator and backend) was. When the \
         generator is the bottleneck, compare the per-target-CPU-second figures.\n",
    );
    fs::write(&md_path, md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    let title = if rows.iter().all(|r| r.scenario.is_flood()) {
        "moat vs the tokio baseline under flood, each figure against its own unloaded run"
    } else {
        "moat vs the tokio baseline and peers, per target-CPU-second"
    };
    fs::write(&svg_path, svg::chart(rows, title))
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}
