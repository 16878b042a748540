//! Fairness scenario: request/response connections on the mux backend's echo, measured for
//! one window alone and then for a second window beside one TLS stream downloading from the
//! mux backend's source as fast as it can. Reports both windows' latency percentiles; the
//! figure is how much the bulk stream stretches the p99.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rr::{put_base_window, put_percentiles, RrTasks};
use super::{measure, Args, Client, Counters, Report};
use crate::backend::{MUX_ECHO, MUX_SOURCE};
use crate::Result;

/// Size of the bulk stream's reads.
const CHUNK: usize = 64 * 1024;

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let rr = RrTasks::start(args, &client, &counters, Some(MUX_ECHO)).await?;
    let phase = rr.phase.clone();
    let alone = measure(args, &counters, Some((&phase, 1))).await?;

    // The bulk stream counts its bytes in `counters.bytes`, which nothing else touches.
    let bulk = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tls = match client.connect().await {
                Ok(tls) => tls,
                Err(e) => return counters.error("bulk connect", e),
            };
            if let Err(e) = tls.write_all(&[MUX_SOURCE]).await {
                return counters.error("bulk", e);
            }
            let mut buf = vec![0u8; CHUNK];
            while !counters.stopped() {
                match tls.read(&mut buf).await {
                    Ok(0) => return counters.error("bulk", "target closed the stream"),
                    Ok(n) => counters.add(&counters.bytes, n as u64),
                    Err(e) => return counters.error("bulk", e),
                }
            }
        })
    };
    let beside = measure(args, &counters, Some((&phase, 2))).await?;
    counters.stop.store(true, Ordering::Relaxed);
    bulk.abort();
    let latencies = rr.finish().await?;

    let mut report = Report::from_window(&beside, &counters);
    report.put("connections", args.concurrency);
    put_base_window(&mut report, &alone);
    put_percentiles(&mut report, &latencies[1], false);
    put_percentiles(&mut report, &latencies[0], true);
    Ok(report)
}
