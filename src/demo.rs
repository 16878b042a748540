//! `moat demo`: moat's main job on built-in defaults, in one process and one loop.
//!
//! ```text
//! you ──plain──▶ client leg ──mutual TLS──▶ TLS leg ──plain──▶ echo backend
//!                (client mode)              (server mode)      (a mirror inside moat)
//! ```
//!
//! The development certificates from `certs/` are compiled in, so the demo needs no files.

use std::net::SocketAddr;

use crate::config::{DemoMode, TlsParams};
use crate::error::StartError;
use crate::event_loop::Service;
use crate::route::{Route, Target, TargetTls};
use crate::start::listen;
use crate::tls::{self, ClientSettings, Pem, Policy, ServerSettings, Trust};

const CA: &str = include_str!("../certs/ca.pem");
const SERVER_CERT: &str = include_str!("../certs/server.pem");
const SERVER_KEY: &str = include_str!("../certs/server.key");
const CLIENT_CERT: &str = include_str!("../certs/client.pem");
const CLIENT_KEY: &str = include_str!("../certs/client.key");

/// The three demo listeners: client leg at the base port, TLS leg at base + 1, echo at
/// base + 2 (or three free ports when the base port is 0). Prints how to try them.
pub fn services(settings: &DemoMode) -> Result<Vec<Service>, StartError> {
    let port = |offset: u16| {
        let mut addr = settings.base;
        if addr.port() != 0 {
            addr.set_port(addr.port() + offset);
        }
        addr
    };
    let ca = Pem::embedded("--client-ca", "certs/ca.pem", CA);

    let echo = listen(
        port(2),
        Route {
            name: "demo echo backend",
            accept_tls: None,
            target: Target::Mirror,
        },
        "itself",
    )?;
    let echo_addr = bound(&echo)?;

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
    let tls_route = Route {
        name: "demo tls leg",
        accept_tls: Some(server_tls),
        target: Target::tcp(vec![echo_addr], None),
    };
    let tls_leg = listen(port(1), tls_route, &echo_addr.to_string())?;
    let tls_addr = bound(&tls_leg)?;

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
    let client_route = Route {
        name: "demo client leg",
        accept_tls: None,
        target: Target::tcp(
            vec![tls_addr],
            Some(TargetTls {
                config: client_tls,
                server_name: tls::server_name("--target", "localhost")?,
            }),
        ),
    };
    let client_leg = listen(port(0), client_route, &tls_addr.to_string())?;
    let client_addr = bound(&client_leg)?;

    print_guide(client_addr, tls_addr, echo_addr);
    Ok(vec![client_leg, tls_leg, echo])
}

fn bound(service: &Service) -> Result<SocketAddr, StartError> {
    service.local_addr().map_err(StartError::Runtime)
}

fn print_guide(client: SocketAddr, tls: SocketAddr, echo: SocketAddr) {
    let (ip, port) = (client.ip(), client.port());
    println!(
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
    );
}
