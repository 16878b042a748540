//! Handshake scenarios: each of `concurrency` tasks loops over connect → TLS 1.3 handshake →
//! 16-byte echo through the backend → close_notify and close. With `--resume` the client
//! offers a ticket from the deep pool, and the report counts how many handshakes resumed.

use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{measure, Args, Client, Counters, Report};
use crate::Result;

/// The message echoed through each new tunnel.
pub const PING: &[u8; 16] = b"moat-bench ping\n";

pub async fn run(args: &Args, client: Client) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    for _ in 0..args.concurrency {
        let client = client.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while !counters.stopped() {
                match once(&client, &counters).await {
                    Ok(resumed) => {
                        counters.add(&counters.ops, 1);
                        if resumed {
                            counters.add(&counters.resumed, 1);
                        }
                    }
                    Err(e) => {
                        counters.error("handshake", e);
                        // Do not spin on a target that refuses connections.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let window = measure(args, &counters, None).await?;
    counters
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Report::from_window(&window, &counters))
}

/// One tunnel's life. Returns whether the handshake resumed a session.
async fn once(client: &Client, counters: &Counters) -> std::io::Result<bool> {
    let mut tls = client.connect().await?;
    counters.note_negotiated(tls.get_ref().1);
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    echo_check(&mut tls, PING).await?;
    tls.shutdown().await?;
    Ok(resumed)
}

/// Writes `msg` and reads it back; anything else is an error.
pub async fn echo_check<S>(stream: &mut S, msg: &[u8]) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "echo came back different",
        ));
    }
    Ok(())
}
