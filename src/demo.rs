//! `moat demo`: moat's main job on built-in defaults, in one process and one loop.
//!
//! ```text
//! you ──plain──▶ client leg ──mutual TLS──▶ TLS leg ──plain──▶ echo backend
//!                (client mode)              (server mode)      (a mirror inside moat)
//! ```
//!
//! The development certificates from `certs/` are compiled in, so the demo needs no files.

use crate::address::SocketAddress;
use crate::config::{DemoMode, TlsParams};
use crate::error::StartError;
use crate::listener::{ListenOptions, Listener};
use crate::route::{Route, Target, TargetTls};
use crate::service::Service;
use crate::tls::{self, ClientSettings, Pem, Policy, ServerSettings, Trust};

const CA: &str = include_str!("../certs/ca.pem");
const SERVER_CERT: &str = include_str!("../certs/server.pem");
const SERVER_KEY: &str = include_str!("../certs/server.key");
const CLIENT_CERT: &str = include_str!("../certs/client.pem");
const CLIENT_KEY: &str = include_str!("../certs/client.key");

/// The three demo services, each with its listener: client leg at the base port, TLS leg
/// at base + 1, echo at base + 2 (or three free ports when the base port is 0); and the
/// guide that says how to try them (printed once moat is ready).
/// With `reuse_port`, each listener lets more (one per worker) bind beside it.
pub fn services(
    settings: &DemoMode,
    reuse_port: bool,
) -> Result<(Vec<(Service, Listener)>, String), StartError> {
    let options = ListenOptions {
        reuse_port,
        ..ListenOptions::default()
    };
    let port = |offset: u16| {
        let mut addr = settings.base;
        if addr.port() != 0 {
            addr.set_port(addr.port() + offset);
        }
        SocketAddress::Tcp(addr)
    };
    let ca = Pem::embedded("--client-ca", "certs/ca.pem", CA);

    let (echo, echo_listener) = bound(
        options,
        &port(2),
        Route::new("demo echo backend", None, Target::Mirror),
        "itself",
    )?;
    let echo_addr = echo.listen_at[0].clone();

    let server_tls = ServerSettings {
        identities: vec![(
            Pem::embedded("--cert", "certs/server.pem", SERVER_CERT),
            Pem::embedded("--key", "certs/server.key", SERVER_KEY),
        )],
        client_ca: Some(ca.clone()),
        crls: Vec::new(),
        policy: Policy::default(),
        alpn: Vec::new(),
        params: TlsParams::default(),
    }
    .build()?;
    let tls_route = Route::new(
        "demo tls leg",
        Some(server_tls),
        Target::remote(vec![echo_addr.clone()], None),
    );
    let (tls_leg, tls_listener) = bound(options, &port(1), tls_route, &echo_addr.to_string())?;
    let tls_addr = tls_leg.listen_at[0].clone();

    let client_tls = ClientSettings {
        trust: Trust::Ca(ca),
        identity: Some((
            Pem::embedded("--cert", "certs/client.pem", CLIENT_CERT),
            Pem::embedded("--key", "certs/client.key", CLIENT_KEY),
        )),
        crls: Vec::new(),
        policy: Policy::default(),
        alpn: Vec::new(),
        params: TlsParams::default(),
    }
    .build()?
    .config;
    let client_route = Route::new(
        "demo client leg",
        None,
        Target::remote(
            vec![tls_addr.clone()],
            Some(TargetTls {
                config: client_tls,
                server_name: tls::server_name("--target", "localhost")?,
            }),
        ),
    );
    let (client_leg, client_listener) =
        bound(options, &port(0), client_route, &tls_addr.to_string())?;
    let guide = guide(&client_leg.listen_at[0], &tls_addr, &echo_addr);
    Ok((
        vec![
            (client_leg, client_listener),
            (tls_leg, tls_listener),
            (echo, echo_listener),
        ],
        guide,
    ))
}

/// Binds `at` for `route`: the demo's legs lead to each other, so each must know where
/// the next one listens before it is built.
fn bound(
    options: ListenOptions,
    at: &SocketAddress,
    route: Route,
    targets: &str,
) -> Result<(Service, Listener), StartError> {
    let listener = Listener::bind(at, options)?;
    let local = listener.local().map_err(StartError::Runtime)?;
    Ok((Service::fixed(route, local, targets.to_owned()), listener))
}

fn guide(client: &SocketAddress, tls: &SocketAddress, echo: &SocketAddress) -> String {
    let (ip, port) = match client {
        SocketAddress::Tcp(addr) => (addr.ip().to_string(), addr.port().to_string()),
        SocketAddress::Unix(path) => ("-U".to_owned(), path.display().to_string()),
    };
    format!(
        "\
moat demo: three listeners on one loop (Ctrl-C to stop)
  client leg (plaintext): {client}   -> mutual TLS to the TLS leg
  TLS leg (mutual TLS):   {tls}   -> plaintext to the echo backend
  echo backend:           {echo}

Type a line through the client leg and see it come back through both tunnels:
  curl -sN telnet://{client}        (or: nc {ip} {port})

Talk TLS to the TLS leg yourself, with the demo client certificate (from the repository root):
  openssl s_client -connect {tls} -CAfile certs/ca.pem -cert certs/client.pem -key certs/client.key -quiet

Without a client certificate the TLS leg refuses you:
  openssl s_client -connect {tls} -CAfile certs/ca.pem -quiet
"
    )
}
