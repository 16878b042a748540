//! Request/response beside idle tunnels: the `rr` scenario's connections measured for one
//! window with nothing else open, then `tunnels` more tunnels are opened (each echo-checked)
//! and held idle, and the same connections are measured again beside them. A loop whose
//! turn costs something per tunnel, idle ones included, stretches the second window's p99.
//! Both windows run in one target process, so the ratio holds no run-to-run difference.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::idle::{count_alive, open_tunnels};
use super::rr::{put_base_window, put_percentiles, RrTasks};
use super::{measure, Args, Client, Counters, Report};
use crate::procfs::rss_kib;
use crate::Result;

/// Tasks that open the idle tunnels, as in the idle scenario.
const OPENING_TASKS: usize = 64;

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let rr = RrTasks::start(args, &client, &counters, None).await?;
    let phase = rr.phase.clone();
    let alone = measure(args, &counters, Some((&phase, 1))).await?;

    // The opening's failures are its own: they must not count as request errors.
    let opening_counters = Arc::new(Counters::default());
    let rss_before = rss_kib(args.target_pid)?;
    let opening = Instant::now();
    let mut held = open_tunnels(&client, &opening_counters, args.tunnels, OPENING_TASKS).await?;
    let open_secs = opening.elapsed().as_secs_f64();
    // measure() waits out the warm-up first, so the target settles after the opening.
    let beside = measure(args, &counters, Some((&phase, 2))).await?;
    let rss_beside = rss_kib(args.target_pid)?;
    counters.stop.store(true, Ordering::Relaxed);
    let latencies = rr.finish().await?;
    let alive = count_alive(&mut held).await;

    let mut report = Report::from_window(&beside, &counters);
    report.put("connections", args.concurrency);
    put_base_window(&mut report, &alone);
    put_percentiles(&mut report, &latencies[1], false);
    put_percentiles(&mut report, &latencies[0], true);
    report.put("tunnels", held.len());
    report.put("alive", alive);
    report.put(
        "open_errors",
        opening_counters.errors.load(Ordering::Relaxed),
    );
    report.put("open_secs", format!("{open_secs:.3}"));
    report.put("rss_base_kib", rss_before);
    report.put("rss_kib", rss_beside);
    Ok(report)
}
