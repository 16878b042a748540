//! From a [`Config`] to a running loop: load certificates, resolve targets, bind listeners.
//!
//! Everything that can fail because of the operator's input fails here, before moat
//! listens, with a [`StartError`] naming the flag or file.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::{ClientAuth, ClientMode, Config, Mode, ServerMode};
use crate::demo;
use crate::error::StartError;
use crate::event_loop::{EventLoop, Service};
use crate::listener;
use crate::notify::Notifier;
use crate::route::{Route, Target, TargetTls};
use crate::sandbox::{self, Plan};
use crate::tls::{self, Pem};

/// Builds everything `config` describes and runs the loop until shutdown.
pub fn run(config: &Config) -> Result<(), StartError> {
    let services = match &config.mode {
        Mode::Server(server) => vec![server_service(server)?],
        Mode::Client(client) => vec![client_service(client)?],
        Mode::Demo(settings) => demo::services(settings)?,
    };
    let listening: Vec<SocketAddr> = services
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .collect();
    let mut event_loop =
        EventLoop::new(services, config.limits, config.timeouts).map_err(StartError::Runtime)?;
    let notifier = Notifier::from_env();
    if config.sandbox {
        sandbox::enter(&Plan::for_config(config, &listening))?;
    }
    // Listeners bound, signal handlers installed, sandbox entered: moat is ready.
    if let Some(notifier) = &notifier {
        let shown: Vec<String> = listening.iter().map(ToString::to_string).collect();
        notifier.ready(&format!("listening on {}", shown.join(", ")));
    }
    event_loop.notify_with(notifier);
    event_loop.run().map_err(StartError::Runtime)
}

fn server_service(server: &ServerMode) -> Result<Service, StartError> {
    let cert = Pem::read("--cert", &server.cert)?;
    let key = Pem::read("--key", &server.key)?;
    let client_ca = match &server.client_auth {
        ClientAuth::Required { ca } => Some(Pem::read("--client-ca", ca)?),
        ClientAuth::Disabled => None,
    };
    let tls = tls::server_config(&cert, &key, client_ca.as_ref())?;
    let route = Route {
        name: "server",
        accept_tls: Some(tls),
        target: Target::tcp(server.targets.clone(), None),
    };
    let shown: Vec<String> = server.targets.iter().map(ToString::to_string).collect();
    listen(server.listen, route, &shown.join(", "))
}

fn client_service(client: &ClientMode) -> Result<Service, StartError> {
    let ca = Pem::read("--ca", &client.ca)?;
    let identity = match &client.identity {
        Some(id) => Some((Pem::read("--cert", &id.cert)?, Pem::read("--key", &id.key)?)),
        None => None,
    };
    let config = tls::client_config(&ca, identity.as_ref().map(|(c, k)| (c, k)))?;
    let first = client
        .targets
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let (host, _) = crate::config::split_host_port("--target", first)?;
    let server_name = match &client.server_name {
        Some(name) => tls::server_name("--server-name", name)?,
        None => tls::server_name("--target", &host).map_err(|_| {
            StartError::invalid(
                "--target",
                first,
                "the host is not a valid DNS name or IP address",
            )
        })?,
    };
    let mut addrs = Vec::new();
    for target in &client.targets {
        addrs.extend(resolve("--target", target)?);
    }
    let route = Route {
        name: "client",
        accept_tls: None,
        target: Target::tcp(
            addrs,
            Some(TargetTls {
                config,
                server_name,
            }),
        ),
    };
    listen(client.listen, route, &client.targets.join(", "))
}

/// Resolves `HOST:PORT` once, at start-up: the loop never waits on DNS.
pub fn resolve(flag: &'static str, target: &str) -> Result<Vec<SocketAddr>, StartError> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|source| StartError::Resolve {
            flag,
            value: target.into(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found");
        return Err(StartError::Resolve {
            flag,
            value: target.into(),
            source,
        });
    }
    Ok(addrs)
}

/// Binds `addr` for `route` and says so in the log (tests read the port from this line).
pub fn listen(addr: SocketAddr, route: Route, target: &str) -> Result<Service, StartError> {
    let listener = listener::bind(addr)?;
    let bound = listener.local_addr().map_err(StartError::Runtime)?;
    log::info!(
        "{}: listening on {bound}, forwarding to {target}",
        route.name
    );
    Ok(Service::new(listener, route))
}
