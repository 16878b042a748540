//! A service as moat runs it: its config made real — files read, names resolved, TLS
//! configured — into a [`Route`] and the places to listen on. This runs at start-up and
//! at every reload, on the control thread, never in a poll loop.

use std::sync::Arc;

use crate::address::{Address, SocketAddress};
use crate::config::{ServiceConfig, ServiceKind};
use crate::error::StartError;
use crate::route::{Route, Target, TargetTls};
use crate::tls::{self, ClientSettings, ServerSettings};

/// A service ready to serve.
#[derive(Debug)]
pub struct Service {
    /// Where its connections go, and how.
    pub route: Arc<Route>,
    /// Where it listens, as written (a reload that keeps it keeps the listeners).
    pub listen: Address,
    /// Where it listens, resolved.
    pub listen_at: Vec<SocketAddress>,
    /// File mode of a unix socket listener.
    pub unix_mode: Option<u32>,
    /// Its targets as the `listening on` line shows them.
    pub targets_shown: String,
    /// The TLS inputs it was built from, so that a reload that changes none of them keeps
    /// the TLS configuration — and with it the ticket key and the verified-chain cache.
    tls_inputs: TlsInputs,
    /// The files the service reads, for `--reload-interval` to watch.
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
enum TlsInputs {
    Server(ServerSettings),
    Client(ClientSettings),
    /// Built by hand: nothing to compare.
    None,
}

/// Builds `config`. `previous`, the service of the same name before a reload, lends its
/// TLS configuration when nothing it was built from has changed.
pub fn build(config: &ServiceConfig, previous: Option<&Service>) -> Result<Service, StartError> {
    let listen_at = config.listen.resolve("--listen")?;
    let (targets_given, must_be_local) = match &config.kind {
        ServiceKind::Server(server) => (&server.targets, !server.unsafe_target),
        ServiceKind::Client(client) => (&client.targets, false),
    };
    let mut targets = Vec::new();
    for target in targets_given {
        let places = target.resolve("--target")?;
        if must_be_local && !target.is_local(&places) {
            return Err(not_local(target));
        }
        targets.extend(places);
    }
    let targets_shown = targets_given
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (route, tls_inputs) = match &config.kind {
        ServiceKind::Server(server) => {
            let settings = ServerSettings::read(server)?;
            let tls = match previous.map(|p| (&p.tls_inputs, &p.route.accept_tls)) {
                Some((TlsInputs::Server(old), Some(tls))) if *old == settings => tls.clone(),
                _ => settings.build()?,
            };
            let mut route = Route::new(&config.name, Some(tls), Target::remote(targets, None));
            route.proxy_protocol = server.proxy_protocol;
            (route, TlsInputs::Server(settings))
        }
        ServiceKind::Client(client) => {
            let settings = ClientSettings::read(client)?;
            let previous_tls = previous.and_then(|p| match (&p.tls_inputs, &p.route.target) {
                (TlsInputs::Client(old), Target::Remote { tls: Some(tls), .. })
                    if *old == settings =>
                {
                    Some(tls.config.clone())
                }
                _ => None,
            });
            let tls_config = match previous_tls {
                Some(config) => config,
                None => settings.build()?.config,
            };
            let target_tls = TargetTls {
                config: tls_config,
                server_name: server_name(client.server_name.as_deref(), targets_given)?,
            };
            let route = Route::new(
                &config.name,
                None,
                Target::remote(targets, Some(target_tls)),
            );
            (route, TlsInputs::Client(settings))
        }
    };
    let route = Route {
        timeouts: config.timeouts,
        accept_proxy: config.accept_proxy,
        ..route
    };
    Ok(Service {
        route: Arc::new(route),
        listen: config.listen.clone(),
        listen_at,
        unix_mode: config.unix_mode,
        targets_shown,
        tls_inputs,
        files: config.files(),
    })
}

impl Service {
    /// The TCP ports of its targets.
    pub fn target_ports(&self) -> Vec<u16> {
        match &self.route.target {
            Target::Remote { addrs, .. } => addrs
                .iter()
                .filter_map(|a| match a {
                    SocketAddress::Tcp(addr) => Some(addr.port()),
                    SocketAddress::Unix(_) => None,
                })
                .collect(),
            Target::Mirror => Vec::new(),
        }
    }

    /// A service built by hand (the demo's), with no files to reload.
    pub fn fixed(route: Route, listen: SocketAddress, targets_shown: String) -> Self {
        let listen_written = match &listen {
            SocketAddress::Tcp(addr) => Address::Ip(*addr),
            SocketAddress::Unix(path) => Address::Unix(path.clone()),
        };
        Self {
            route: Arc::new(route),
            listen: listen_written,
            listen_at: vec![listen],
            unix_mode: None,
            targets_shown,
            tls_inputs: TlsInputs::None,
            files: Vec::new(),
        }
    }
}

/// The name to verify in the server's certificate: `--server-name`, or the first target's
/// host.
fn server_name(
    given: Option<&str>,
    targets: &[Address],
) -> Result<rustls::pki_types::ServerName<'static>, StartError> {
    if let Some(name) = given {
        return tls::server_name("--server-name", name);
    }
    let first = targets.first();
    let host = first.and_then(Address::host).ok_or_else(|| {
        StartError::Usage("client mode needs --server-name for this --target".into())
    })?;
    tls::server_name("--target", &host).map_err(|_| {
        StartError::invalid(
            "--target",
            &first.map(ToString::to_string).unwrap_or_default(),
            "the host is not a valid DNS name or IP address",
        )
    })
}

/// Server mode's plaintext leg must stay on this host, unless `--unsafe-target` says the
/// network to the backend is trusted.
fn not_local(target: &Address) -> StartError {
    StartError::invalid(
        "--target",
        &target.to_string(),
        "not a loopback address or unix socket: server mode sends the backend plaintext, \
         unencrypted, so the target must be on this host; give --unsafe-target if the \
         network between moat and the backend is trusted",
    )
}
