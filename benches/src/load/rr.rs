//! Request/response scenario: `concurrency` connections, each sending a `size`-byte message
//! and waiting for the echo before sending the next. Reports requests per second and the
//! latency percentiles of the requests completed inside the measured window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{measure, Args, Client, Counters, Report};
use crate::Result;

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let measuring = Arc::new(AtomicBool::new(false));

    // Establish every connection first, so the window holds no handshakes.
    let mut streams = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        streams.push(
            client
                .connect()
                .await
                .map_err(|e| format!("cannot open a connection through the target: {e}"))?,
        );
    }

    let mut tasks = Vec::new();
    for mut tls in streams {
        let counters = counters.clone();
        let measuring = measuring.clone();
        let size = args.size;
        tasks.push(tokio::spawn(async move {
            let request = crate::backend::pattern(size);
            let mut reply = vec![0u8; size];
            let mut latencies_ns: Vec<u64> = Vec::with_capacity(64 * 1024);
            while !counters.stopped() {
                let start = Instant::now();
                let done = async {
                    tls.write_all(&request).await?;
                    tls.read_exact(&mut reply).await
                };
                if let Err(e) = done.await {
                    counters.error("request", e);
                    break;
                }
                counters.add(&counters.ops, 1);
                if measuring.load(Ordering::Relaxed) {
                    latencies_ns.push(start.elapsed().as_nanos() as u64);
                }
            }
            latencies_ns
        }));
    }

    let window = measure(args, &counters, Some(&measuring)).await?;
    counters.stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|e| format!("a request task failed: {e}"))?,
        );
    }
    latencies.sort_unstable();
    let mut report = Report::from_window(&window, &counters);
    report.put("connections", args.concurrency);
    report.put("samples", latencies.len());
    for (key, q) in [("p50_us", 0.50), ("p99_us", 0.99), ("p999_us", 0.999)] {
        report.put(key, format!("{:.1}", percentile(&latencies, q) / 1000.0));
    }
    Ok(report)
}

/// The `q` quantile of sorted samples (nearest rank); 0 when there are none.
fn percentile(sorted: &[u64], q: f64) -> f64 {
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
