//! The plaintext backends the targets forward to, all in one process:
//!
//! * **echo** writes back whatever it reads (handshake, idle and request/response scenarios);
//! * **sink** reads and discards (bulk upload);
//! * **source** writes an endless stream of bytes (bulk download);
//! * **mux** reads one byte first and then acts as source (`d`) or echo (anything else), so
//!   that one target can carry both kinds of tunnel at once (fairness scenario).
//!
//! With `--verify` the source writes the [`Stream`] bytes instead of a repeated pattern and
//! the sink checks every byte it reads against them (the generator's `load --verify` writes
//! and checks the same stream): a byte lost, duplicated, reordered or changed on the way
//! through the target shows up as a line `sink: ... differs` on stderr, and that connection
//! is closed.
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

/// Parses `moat-bench backend [IP] [--verify]` and runs the backends.
pub fn main(args: &[String]) -> Result<()> {
    let mut ip = IpAddr::from([127, 0, 0, 1]);
    let mut verify = false;
    for arg in args {
        if arg == "--verify" {
            verify = true;
        } else {
            ip = arg
                .parse()
                .map_err(|_| format!("backend: `{arg}` is not an IP address (or --verify)"))?;
        }
    }
    run(ip, verify)
}

/// Runs the backends on `ip` (ports chosen by the kernel) until the process is killed.
/// `verify`: the source writes and the sink checks the [`Stream`] bytes.
pub fn run(ip: IpAddr, verify: bool) -> Result<()> {
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
            tasks.push(tokio::spawn(accept_loop(kind, listener, verify)));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}

async fn accept_loop(kind: Kind, listener: TcpListener, verify: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    // A connection ending badly is normal here: targets are killed mid-stream.
                    let result = if verify {
                        serve_verified(kind, stream).await
                    } else {
                        serve(kind, stream).await
                    };
                    if let Err(e) = result {
                        if e.kind() == io::ErrorKind::InvalidData {
                            eprintln!("moat-bench backend: {}: {e}", kind.name());
                        }
                    }
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

/// `serve` with the sink and the source on the [`Stream`] bytes: the sink checks them (an
/// `InvalidData` error names the first byte that differs), the source writes them.
async fn serve_verified(kind: Kind, mut stream: TcpStream) -> io::Result<()> {
    match kind {
        Kind::Sink => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut check = Stream::default();
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                check.check(&buf[..n])?;
            }
        }
        Kind::Source => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut next = Stream::default();
            loop {
                next.fill(&mut buf);
                stream.write_all(&buf).await?;
            }
        }
        Kind::Echo | Kind::Mux => serve(kind, stream).await,
    }
}

/// A byte stream in which no run of bytes repeats: the 8 bytes at offset `8 × i` are
/// `i × K` (little-endian, K odd), so a lost, doubled or reordered piece of any length
/// changes what comes next. The bulk scenarios write and check it under `--verify`.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    /// Offset of the next byte.
    pub offset: u64,
    scratch: Vec<u8>,
}

impl Stream {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut at = 0;
        while at < buf.len() {
            let word = (self.offset / 8).wrapping_mul(Self::K).to_le_bytes();
            let start = (self.offset % 8) as usize;
            let n = (8 - start).min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&word[start..start + n]);
            at += n;
            self.offset += n as u64;
        }
    }

    /// Checks that `got` is the next bytes of the stream; the error names the first
    /// offset that differs.
    pub fn check(&mut self, got: &[u8]) -> io::Result<()> {
        let start = self.offset;
        let mut expected = std::mem::take(&mut self.scratch);
        expected.resize(got.len(), 0);
        self.fill(&mut expected);
        let result = match got.iter().zip(&expected).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "byte at offset {} differs (read {:#04x}, expected {:#04x})",
                    start + i as u64,
                    got[i],
                    expected[i]
                ),
            )),
        };
        self.scratch = expected;
        result
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

#[cfg(test)]
mod tests {
    use super::Stream;

    #[test]
    fn stream_checks_what_it_fills_in_any_pieces() {
        let mut all = vec![0u8; 1000];
        Stream::default().fill(&mut all);
        let mut check = Stream::default();
        let mut at = 0;
        for len in [1, 7, 8, 3, 100, 381, 500] {
            check.check(&all[at..at + len]).unwrap();
            at += len;
        }
        assert_eq!(check.offset, 1000);
        // Filling in pieces gives the same bytes as filling at once.
        let mut pieces = vec![0u8; 1000];
        let mut fill = Stream::default();
        fill.fill(&mut pieces[..13]);
        fill.fill(&mut pieces[13..]);
        assert_eq!(pieces, all);
    }

    #[test]
    fn stream_catches_a_lost_piece() {
        let mut all = vec![0u8; 4096];
        Stream::default().fill(&mut all);
        for lost in [1usize, 8, 256, 1024] {
            let mut check = Stream::default();
            check.check(&all[..100]).unwrap();
            let err = check.check(&all[100 + lost..]).unwrap_err();
            assert!(err.to_string().contains("offset 10"), "{err}");
        }
        let mut changed = all.clone();
        changed[2000] ^= 1;
        let err = Stream::default().check(&changed).unwrap_err();
        assert!(err.to_string().contains("offset 2000"), "{err}");
    }
}
