//! Request/response scenario: `concurrency` connections, each sending a `size`-byte message
//! and waiting for the echo before sending the next. Reports requests per second and the
//! latency percentiles of the requests completed inside the measured window. With
//! `--verify` each request carries its number in its first 8 bytes, and an echo that is not
//! the request it answers is an error that ends the connection's loop.
//!
//! The fairness scenario reuses the same tasks for two windows (without, then with a bulk
//! stream beside them): each task files its latencies under the window that is open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::{measure, Args, Client, Counters, Report, Window};
use crate::Result;

/// Windows a set of request tasks can file latencies under.
pub const WINDOWS: usize = 2;

/// Request/response tasks on established connections.
pub struct RrTasks {
    /// 0 outside a window, `n` while window `n - 1` is measured.
    pub phase: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Vec<u64>>>>,
}

impl RrTasks {
    /// Opens `args.concurrency` connections (each first sending `selector`, when given, for
    /// the mux backend), then starts one ping-pong task per connection.
    pub async fn start(
        args: &Args,
        client: &Client,
        counters: &Arc<Counters>,
        selector: Option<u8>,
    ) -> Result<RrTasks> {
        // Establish every connection first, so the window holds no handshakes.
        let mut streams = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            let mut tls = client
                .connect()
                .await
                .map_err(|e| format!("cannot open a connection through the target: {e}"))?;
            counters.note_negotiated(tls.get_ref().1);
            if let Some(byte) = selector {
                tls.write_all(&[byte])
                    .await
                    .map_err(|e| format!("cannot choose the mux backend's echo: {e}"))?;
            }
            streams.push(tls);
        }
        let phase = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for mut tls in streams {
            let counters = counters.clone();
            let phase = phase.clone();
            let (size, verify) = (args.size, args.verify);
            tasks.push(tokio::spawn(async move {
                let mut request = crate::backend::pattern(size);
                let mut reply = vec![0u8; size];
                let mut number = 0u64;
                let mut latencies_ns: Vec<Vec<u64>> = (0..WINDOWS)
                    .map(|_| Vec::with_capacity(64 * 1024))
                    .collect();
                while !counters.stopped() {
                    if verify {
                        number += 1;
                        let tag = number.to_le_bytes();
                        let n = tag.len().min(size);
                        request[..n].copy_from_slice(&tag[..n]);
                    }
                    let start = Instant::now();
                    let done = async {
                        tls.write_all(&request).await?;
                        tls.read_exact(&mut reply).await
                    };
                    if let Err(e) = done.await {
                        counters.error("request", e);
                        break;
                    }
                    if verify && reply != request {
                        counters.error("request", format!("echo of request {number} differs"));
                        break;
                    }
                    counters.add(&counters.ops, 1);
                    let window = phase.load(Ordering::Relaxed);
                    if let Some(list) = window.checked_sub(1).and_then(|w| latencies_ns.get_mut(w))
                    {
                        list.push(start.elapsed().as_nanos() as u64);
                    }
                }
                latencies_ns
            }));
        }
        Ok(RrTasks { phase, tasks })
    }

    /// Waits for every task (after `counters.stop`) and returns each window's sorted
    /// latencies in nanoseconds.
    pub async fn finish(self) -> Result<Vec<Vec<u64>>> {
        let mut all = vec![Vec::new(); WINDOWS];
        for task in self.tasks {
            let lists = task
                .await
                .map_err(|e| format!("a request task failed: {e}"))?;
            for (into, from) in all.iter_mut().zip(lists) {
                into.extend(from);
            }
        }
        for list in &mut all {
            list.sort_unstable();
        }
        Ok(all)
    }
}

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let rr = RrTasks::start(args, &client, &counters, None).await?;
    let phase = rr.phase.clone();
    let window = measure(args, &counters, Some((&phase, 1))).await?;
    counters.stop.store(true, Ordering::Relaxed);
    let latencies = rr.finish().await?;
    let mut report = Report::from_window(&window, &counters);
    report.put("connections", args.concurrency);
    put_percentiles(&mut report, &latencies[0], false);
    Ok(report)
}

/// Puts `samples`, `p50_us`, `p99_us` and `p999_us` into the report, each with a `base_`
/// prefix for the window without load beside it.
pub fn put_percentiles(report: &mut Report, sorted_ns: &[u64], base: bool) {
    let keys = if base {
        ["base_samples", "base_p50_us", "base_p99_us", "base_p999_us"]
    } else {
        ["samples", "p50_us", "p99_us", "p999_us"]
    };
    report.put(keys[0], sorted_ns.len());
    for (key, q) in keys[1..].iter().zip([0.50, 0.99, 0.999]) {
        report.put(key, format!("{:.1}", percentile(sorted_ns, q) / 1000.0));
    }
}

/// Puts the figures of the window without load beside it (`base_ops`, `base_secs`,
/// `base_target_cpu`, `base_cpu0_busy`, `base_cpu1_busy`) into the report.
pub fn put_base_window(report: &mut Report, alone: &Window) {
    report.put("base_ops", alone.ops);
    report.put("base_secs", format!("{:.3}", alone.secs));
    let (a, b) = (&alone.cpu_start, &alone.cpu_end);
    report.put(
        "base_target_cpu",
        format!("{:.3}", (b.target - a.target).as_secs_f64()),
    );
    for (i, (end, start)) in b.cpus.iter().zip(&a.cpus).enumerate().take(2) {
        let key = ["base_cpu0_busy", "base_cpu1_busy"][i];
        report.put(key, format!("{:.1}", end.busy_pct_since(start)));
    }
}

/// The `q` quantile of sorted samples (nearest rank); 0 when there are none.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500.0);
        assert_eq!(percentile(&samples, 0.99), 990.0);
        assert_eq!(percentile(&samples, 0.999), 999.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
