//! moat: a TLS tunnel on one `mio` poll loop.
//!
//! moat puts mutual TLS in front of a service that was never meant to face the internet
//! (*server mode*), or gives a plaintext client a TLS leg to such a tunnel (*client mode*).
//! One thread runs one poll loop ([`event_loop`]) that drives `rustls` connection state
//! machines directly over nonblocking sockets.
//!
//! A reader who wants to follow the bytes should read, in order:
//! [`event_loop`] (accept, readiness, timers), [`tunnel`] (one tunnel's life),
//! [`endpoint`] (one end: plain TCP or TLS), and [`timer`] (deadlines at O(1)).
//! `docs/ARCHITECTURE.md` tells how the pieces fit.

// One system call has no safe wrapper in any maintained crate: the ioctl that tells how
// many bytes the kernel still holds for a peer (`endpoint::socket`). It is the only unsafe
// block in moat, allowed where it stands; everything else is denied.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::use_self
)]

pub mod address;
pub mod admission;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod event_loop;
#[doc(hidden)]
pub mod fuzzing;
pub mod key_list;
pub mod listener;
pub mod log_format;
pub mod logger;
pub mod metrics;
pub mod notify;
pub mod proxy_protocol;
pub mod reload;
pub mod route;
pub mod sandbox;
pub mod service;
pub mod status;
pub mod timer;
pub mod tls;
pub mod trace;
pub mod tunnel;

pub use config::Config;
pub use error::StartError;

/// Runs moat with the arguments after the program name: parse, build, run.
///
/// Returns when moat has shut down (exit 0), or with the error `main` prints.
pub fn run_command_line(args: &[String]) -> Result<(), StartError> {
    let descriptor_limit = raise_descriptor_limit();
    match cli::parse(args, descriptor_limit)? {
        cli::Command::Help(text) => println!("{text}"),
        cli::Command::Version => println!("moat {}", env!("CARGO_PKG_VERSION")),
        cli::Command::Check(config) => check(&config)?,
        cli::Command::Run(config) => {
            let format = match config.global.log_format {
                config::LogFormat::Text => logger::Format::Text,
                config::LogFormat::Json => logger::Format::Json,
            };
            logger::init(config.global.log_level, format);
            let max_conns = config.global.limits.max_conns;
            let needed = (max_conns as u64).saturating_mul(2) + config::DESCRIPTOR_HEADROOM;
            if needed > descriptor_limit {
                log::warn!(
                    "--max-conns {max_conns} needs about {needed} open files but the limit is \
                     {descriptor_limit}: accepts will pause when descriptors run out"
                );
            }
            let args = args.to_vec();
            let reparse = move || match cli::parse(&args, descriptor_limit)? {
                cli::Command::Run(config) => Ok(*config),
                _ => Err(StartError::Usage("the command line changed meaning".into())),
            };
            let result = control::run(*config, reparse);
            logger::finish();
            result?;
        }
    }
    Ok(())
}

/// `moat check`: builds every service — reading its files, resolving its names, making
/// its TLS configuration — without listening, and says so.
fn check(config: &Config) -> Result<(), StartError> {
    let mut names = Vec::new();
    for service in &config.services {
        service::build(service, None)
            .map_err(|e| config::file::service_error(config.file.as_deref(), service, e))?;
        names.push(service.name.as_str());
    }
    let source = config
        .file
        .as_ref()
        .map_or("the command line".to_owned(), |f| f.display().to_string());
    println!(
        "moat: {source}: ok, {} service(s): {}",
        names.len(),
        names.join(", ")
    );
    Ok(())
}

/// Raises the soft open-file limit to the hard limit (each tunnel holds two descriptors)
/// and returns the limit now in force.
fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
    }
}
