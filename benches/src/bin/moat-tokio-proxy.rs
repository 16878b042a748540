//! moat-tokio-proxy: the baseline moat is measured against.
//!
//! A TLS-terminating TCP proxy written the idiomatic tokio way: one current-thread runtime,
//! accept → TLS handshake (tokio-rustls) → connect the backend → `copy_bidirectional`. It uses
//! the same rustls version, crypto provider (aws-lc-rs), certificates and settings as
//! `moat server`: TCP_NODELAY on both legs, a session-ticket issuer, optional client
//! certificates, a handshake timeout. It takes the same flags as `moat server` for what they share:
//!
//! ```text
//! moat-tokio-proxy --listen ADDR --target ADDR --cert FILE --key FILE
//!                  (--client-ca FILE | --no-client-auth) [--handshake-timeout DUR]
//!                  [--copy-buffer BYTES]
//! ```
//!
//! `--copy-buffer` gives `copy_bidirectional_with_sizes` buffers of that size instead of
//! tokio's default (8 KiB each way); the benchmarks run the default, and BENCHMARKS.md
//! reports a run with moat's buffer size beside it.
//!
//! It prints `listening on ADDR` to stderr once it accepts, and ends on SIGTERM (the default
//! action; it keeps no state worth saving).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moat_bench::tls::server_config;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Like moat's default `--handshake-timeout`: a client that never finishes its handshake
/// does not hold a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    listen: SocketAddr,
    target: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    handshake_timeout: Duration,
    copy_buffer: Option<usize>,
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("moat-tokio-proxy: {e}");
            std::process::exit(2);
        }
    };
    let config = match server_config(&options.cert, &options.key, options.client_ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat-tokio-proxy: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("moat-tokio-proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(options, Arc::new(config))) {
        eprintln!("moat-tokio-proxy: {e}");
        std::process::exit(1);
    }
}

fn parse(argv: &[String]) -> Result<Options, String> {
    let mut opts = getopts::Options::new();
    opts.reqopt("", "listen", "address to accept TLS on", "ADDR");
    opts.reqopt("", "target", "plaintext backend address", "ADDR");
    opts.reqopt("", "cert", "server certificate chain (PEM)", "FILE");
    opts.reqopt("", "key", "server private key (PEM)", "FILE");
    opts.optopt(
        "",
        "client-ca",
        "require client certificates issued by this CA",
        "FILE",
    );
    opts.optflag("", "no-client-auth", "accept clients without a certificate");
    opts.optopt(
        "",
        "handshake-timeout",
        "limit on a TLS handshake (default 10s)",
        "DUR",
    );
    opts.optopt(
        "",
        "copy-buffer",
        "relay buffer size each way (default: tokio's copy_bidirectional, 8 KiB)",
        "BYTES",
    );
    let m = opts
        .parse(argv)
        .map_err(|e| format!("{e}\n{}", opts.usage("Usage: moat-tokio-proxy [options]")))?;
    let addr = |name: &str| -> Result<SocketAddr, String> {
        let text = m.opt_str(name).unwrap_or_default();
        text.parse()
            .map_err(|_| format!("--{name}: `{text}` is not an IP:PORT address"))
    };
    let client_ca = m.opt_str("client-ca").map(PathBuf::from);
    if client_ca.is_some() == m.opt_present("no-client-auth") {
        return Err("give exactly one of --client-ca FILE and --no-client-auth".into());
    }
    Ok(Options {
        listen: addr("listen")?,
        target: addr("target")?,
        cert: PathBuf::from(m.opt_str("cert").unwrap_or_default()),
        key: PathBuf::from(m.opt_str("key").unwrap_or_default()),
        client_ca,
        handshake_timeout: match m.opt_str("handshake-timeout") {
            Some(text) => moat_bench::parse_duration(&text)
                .map_err(|e| format!("--handshake-timeout: {e}"))?,
            None => HANDSHAKE_TIMEOUT,
        },
        copy_buffer: match m.opt_str("copy-buffer") {
            Some(text) => Some(
                text.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--copy-buffer: `{text}` is not a size in bytes"))?,
            ),
            None => None,
        },
    })
}

async fn serve(options: Options, config: Arc<rustls::ServerConfig>) -> Result<(), String> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    eprintln!("moat-tokio-proxy: listening on {local}");
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (downstream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                eprintln!("moat-tokio-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let target = options.target;
        let limit = options.handshake_timeout;
        let copy_buffer = options.copy_buffer;
        tokio::spawn(async move {
            // One tunnel failing (bad certificate, backend down, reset) is its own business.
            let _ = tunnel(acceptor, downstream, target, limit, copy_buffer).await;
        });
    }
}

async fn tunnel(
    acceptor: TlsAcceptor,
    downstream: TcpStream,
    target: SocketAddr,
    handshake_timeout: Duration,
    copy_buffer: Option<usize>,
) -> std::io::Result<()> {
    downstream.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(handshake_timeout, acceptor.accept(downstream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let mut upstream = TcpStream::connect(target).await?;
    upstream.set_nodelay(true)?;
    match copy_buffer {
        None => tokio::io::copy_bidirectional(&mut tls, &mut upstream).await?,
        Some(size) => {
            tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut upstream, size, size).await?
        }
    };
    Ok(())
}
