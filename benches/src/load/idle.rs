//! Idle scenario: open `tunnels` tunnels (each echo-checked), hold them, and sample the
//! target's resident memory; then echo-check every tunnel again to prove it is still there.
//!
//! The baseline is the target's RSS after one tunnel has come and gone (so lazily built
//! state such as the TLS configuration is paid for); the figure is
//! `(RSS with N tunnels − baseline) / N`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::handshake::{echo_check, PING};
use super::{Args, Client, Counters, Report, Window};
use crate::procfs::{rss_kib, CpuSample};
use crate::Result;

/// How often the target's RSS is read while the tunnels are held.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());

    let mut warm = client
        .connect()
        .await
        .map_err(|e| format!("first connection to the target failed: {e}"))?;
    echo_check(&mut warm, PING)
        .await
        .map_err(|e| format!("first echo through the target failed: {e}"))?;
    let _ = warm.shutdown().await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_kib = rss_kib(args.target_pid)?;

    let opening = Instant::now();
    let mut held = open_tunnels(&client, &counters, args.tunnels, args.concurrency).await?;
    let open_secs = opening.elapsed().as_secs_f64();

    // Let the target settle, then sample while nothing happens.
    tokio::time::sleep(args.warmup).await;
    let cpu_start = CpuSample::take(args.target_pid, args.backend_pid)?;
    let t0 = Instant::now();
    let mut samples = Vec::new();
    while t0.elapsed() < args.duration {
        samples.push(rss_kib(args.target_pid)?);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    samples.push(rss_kib(args.target_pid)?);
    let cpu_end = CpuSample::take(args.target_pid, args.backend_pid)?;
    let secs = t0.elapsed().as_secs_f64();
    samples.sort_unstable();
    let median_kib = samples[samples.len() / 2];
    let max_kib = samples[samples.len() - 1];

    let alive = count_alive(&mut held).await;

    let window = Window {
        secs,
        ops: held.len() as u64,
        resumed: 0,
        bytes: 0,
        errors: counters.errors.load(std::sync::atomic::Ordering::Relaxed),
        cpu_start,
        cpu_end,
    };
    let mut report = Report::from_window(&window, &counters);
    let per_tunnel = if held.is_empty() {
        0.0
    } else {
        median_kib.saturating_sub(base_kib) as f64 * 1024.0 / held.len() as f64
    };
    report.put("tunnels", held.len());
    report.put("alive", alive);
    report.put("open_secs", format!("{open_secs:.3}"));
    report.put("rss_base_kib", base_kib);
    report.put("rss_kib", median_kib);
    report.put("rss_max_kib", max_kib);
    report.put("bytes_per_tunnel", format!("{per_tunnel:.0}"));
    Ok(report)
}

/// Opens `tunnels` tunnels from `tasks` tasks, each opening its share in turn, and
/// echo-checks each one. Failures are counted in `counters`; the tunnels that work are held.
pub async fn open_tunnels(
    client: &Client,
    counters: &Arc<Counters>,
    tunnels: usize,
    tasks: usize,
) -> Result<Vec<TlsStream<TcpStream>>> {
    let tasks = tasks.max(1);
    let mut handles = Vec::new();
    for i in 0..tasks {
        let share = tunnels / tasks + usize::from(i < tunnels % tasks);
        let client = client.clone();
        let counters = counters.clone();
        handles.push(tokio::spawn(async move {
            let mut held = Vec::with_capacity(share);
            for _ in 0..share {
                match client.connect().await {
                    Ok(mut tls) => {
                        counters.note_negotiated(tls.get_ref().1);
                        match echo_check(&mut tls, PING).await {
                            Ok(()) => held.push(tls),
                            Err(e) => counters.error("echo", e),
                        }
                    }
                    Err(e) => counters.error("connect", e),
                }
            }
            held
        }));
    }
    let mut held = Vec::with_capacity(tunnels);
    for handle in handles {
        held.extend(
            handle
                .await
                .map_err(|e| format!("an opening task failed: {e}"))?,
        );
    }
    Ok(held)
}

/// How many of the held tunnels still echo.
pub async fn count_alive(held: &mut [TlsStream<TcpStream>]) -> usize {
    let mut alive = 0;
    for tls in held.iter_mut() {
        if echo_check(tls, PING).await.is_ok() {
            alive += 1;
        }
    }
    alive
}
