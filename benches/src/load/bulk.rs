//! Bulk scenarios: `concurrency` TLS streams through the target, either writing into the
//! sink backend (upload) or reading from the source backend (download) as fast as they can.
//! The figure is plaintext bytes moved by the generator in the window.
//!
//! With `--verify` (and a backend started with `--verify`) upload writes the backend's
//! [`Stream`] for the sink to check, and download checks every byte the source sent: a
//! difference is an error, and that stream stops.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{measure, Args, Client, Counters, Mode, Report};
use crate::backend::Stream;
use crate::Result;

/// Size of each write or read buffer.
const CHUNK: usize = 64 * 1024;

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let upload = args.mode == Mode::Upload;
    let verify = args.verify;
    for _ in 0..args.concurrency {
        let client = client.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tls = match client.connect().await {
                Ok(tls) => tls,
                Err(e) => return counters.error("connect", e),
            };
            counters.note_negotiated(tls.get_ref().1);
            let mut stream = Stream::default();
            let result = if upload {
                let mut buf = crate::backend::pattern(CHUNK);
                loop {
                    if verify {
                        stream.fill(&mut buf);
                    }
                    if let Err(e) = tls.write_all(&buf).await {
                        break Err(e);
                    }
                    counters.add(&counters.bytes, CHUNK as u64);
                }
            } else {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            if verify {
                                if let Err(e) = stream.check(&buf[..n]) {
                                    break Err(e);
                                }
                            }
                            counters.add(&counters.bytes, n as u64)
                        }
                        Err(e) => break Err(e),
                    }
                }
            };
            if let Err(e) = result {
                counters.error("stream", e);
            } else if !counters.stopped() {
                counters.error("stream", "target closed the stream");
            }
        });
    }
    let window = measure(args, &counters, None).await?;
    counters
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut report = Report::from_window(&window, &counters);
    report.put("streams", args.concurrency);
    Ok(report)
}
