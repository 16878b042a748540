//! From a [`Config`] to a running loop: load certificates, resolve targets, bind listeners.
//!
//! Everything that can fail because of the operator's input fails here, before moat
//! listens, with a [`StartError`] naming the flag or file.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::address::SocketAddress;
use crate::config::{ClientMode, Config, Mode, ServerMode};
use crate::demo;
use crate::error::StartError;
use crate::event_loop::{EventLoop, Service};
use crate::listener::{ListenOptions, Listener};
use crate::notify::Notifier;
use crate::route::{Route, Target, TargetTls};
use crate::sandbox;
use crate::tls::{self, ClientSettings, ServerSettings};

/// The services to run and the listeners bound for them, before the loop exists.
#[derive(Debug, Default)]
pub struct Services {
    services: Vec<Service>,
    listeners: Vec<(usize, Listener)>,
}

impl Services {
    /// Binds `addr` for `route`, whose tunnels go to `target` (as the log shows it), and
    /// returns where it listens. The `listening on` line is logged once the loop is ready
    /// ([`EventLoop::announce`]).
    pub fn listen(
        &mut self,
        addr: &SocketAddress,
        route: Route,
        target: &str,
    ) -> Result<SocketAddress, StartError> {
        let listener = Listener::bind(addr, ListenOptions::default())?;
        let local = listener.local().map_err(StartError::Runtime)?;
        self.listeners.push((self.services.len(), listener));
        self.services.push(Service::new(route, target.to_owned()));
        Ok(local)
    }
}

/// Builds everything `config` describes and runs the loop until shutdown.
pub fn run(config: &Config) -> Result<(), StartError> {
    let mut plan = Services::default();
    let guide = match &config.mode {
        Mode::Server(server) => server_service(server, &mut plan).map(|_| None)?,
        Mode::Client(client) => client_service(client, &mut plan).map(|_| None)?,
        Mode::Demo(settings) => Some(demo::services(settings, &mut plan)?),
    };
    let mut event_loop = EventLoop::new(
        plan.services,
        plan.listeners,
        config.limits,
        config.timeouts,
    )
    .map_err(StartError::Runtime)?;
    let listening: Vec<SocketAddr> = event_loop
        .local_addresses()
        .into_iter()
        .filter_map(|a| match a {
            Some(SocketAddress::Tcp(addr)) => Some(addr),
            _ => None,
        })
        .collect();
    let notifier = Notifier::from_env();
    if config.sandbox {
        sandbox::enter(&sandbox::Plan::for_config(config, &listening))?;
    }
    // Only now, with every listener bound, the signal handlers installed and the sandbox
    // entered, is moat ready: a supervisor that signals it as soon as it says so must find
    // it able to shut down.
    event_loop.announce();
    if let Some(guide) = guide {
        println!("{guide}");
    }
    if let Some(notifier) = &notifier {
        let shown: Vec<String> = listening.iter().map(ToString::to_string).collect();
        notifier.ready(&format!("listening on {}", shown.join(", ")));
    }
    event_loop.notify_with(notifier);
    event_loop.run().map_err(StartError::Runtime)
}

fn server_service(server: &ServerMode, plan: &mut Services) -> Result<(), StartError> {
    let tls = ServerSettings::read(server)?.build()?;
    let route = Route {
        name: "server",
        accept_tls: Some(tls),
        target: Target::remote(
            server
                .targets
                .iter()
                .map(|a| SocketAddress::Tcp(*a))
                .collect(),
            None,
        ),
    };
    let shown: Vec<String> = server.targets.iter().map(ToString::to_string).collect();
    plan.listen(&SocketAddress::Tcp(server.listen), route, &shown.join(", "))?;
    Ok(())
}

fn client_service(client: &ClientMode, plan: &mut Services) -> Result<(), StartError> {
    let config = ClientSettings::read(client)?.build()?.config;
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
        target: Target::remote(
            addrs.into_iter().map(SocketAddress::Tcp).collect(),
            Some(TargetTls {
                config,
                server_name,
            }),
        ),
    };
    plan.listen(
        &SocketAddress::Tcp(client.listen),
        route,
        &client.targets.join(", "),
    )?;
    Ok(())
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
