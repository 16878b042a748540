//! The plaintext backends the targets forward to, all in one process:
//!
//! * **echo** writes back whatever it reads (handshake, idle and request/response scenarios);
//! * **sink** reads and discards (bulk upload);
//! * **source** writes an endless stream of bytes (bulk download);
//! * **mux** reads one byte first and then acts as source (`d`) or echo (anything else), so
//!   that one target can carry both kinds of tunnel at once (fairness scenario).
//!
//! The process prints one line per backend on stdout — `echo 127.0.0.1:PORT` and so on — and
//! then serves until it is killed. It runs on a tokio current-thread runtime: it shares CPU 1
//! with the load generator, and one thread is all that CPU has.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Result;

/// What a backend does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Sink,
    Source,
    Mux,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Echo, Kind::Sink, Kind::Source, Kind::Mux];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Sink => "sink",
            Kind::Source => "source",
            Kind::Mux => "mux",
        }
    }
}

/// Runs the three backends on `ip` (ports chosen by the kernel) until the process is killed.
pub fn run(ip: IpAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for kind in Kind::ALL {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|e| format!("cannot listen on {ip}: {e}"))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot read the listening address: {e}"))?;
            println!("{} {addr}", kind.name());
            listeners.push((kind, listener));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let mut tasks = Vec::new();
        for (kind, listener) in listeners {
            tasks.push(tokio::spawn(accept_loop(kind, listener)));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}

async fn accept_loop(kind: Kind, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    // A connection ending badly is normal here: targets are killed mid-stream.
                    let _ = serve(kind, stream).await;
                });
            }
            Err(e) => {
                // Out of file descriptors or similar: say so once in a while and retry.
                eprintln!("moat-bench backend: {} accept: {e}", kind.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(kind: Kind, mut stream: TcpStream) -> io::Result<()> {
    match kind {
        Kind::Echo => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return stream.shutdown().await;
                }
                stream.write_all(&buf[..n]).await?;
            }
        }
        Kind::Sink => {
            let mut buf = vec![0u8; 64 * 1024];
            while stream.read(&mut buf).await? > 0 {}
            Ok(())
        }
        Kind::Source => {
            let buf = pattern(64 * 1024);
            loop {
                stream.write_all(&buf).await?;
            }
        }
        Kind::Mux => {
            let mut selector = [0u8; 1];
            stream.read_exact(&mut selector).await?;
            let kind = if selector[0] == MUX_SOURCE {
                Kind::Source
            } else {
                Kind::Echo
            };
            Box::pin(serve(kind, stream)).await
        }
    }
}

/// The first byte that turns a mux connection into a source; any other makes it an echo.
pub const MUX_SOURCE: u8 = b'd';
/// The first byte that turns a mux connection into an echo.
pub const MUX_ECHO: u8 = b'e';

/// Bytes that are not all zero, so nothing along the way can compress them away.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 7) as u8).collect()
}
