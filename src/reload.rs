//! A generation: the services moat runs, built from one configuration, with the listeners
//! each worker needs. Start-up builds the first; every reload builds the next from the
//! configuration read again, keeping what did not change — a listener whose address stays,
//! a TLS configuration whose inputs stay (and with it its ticket key and chain cache) —
//! and fails as a whole, so the running generation stays in force when anything is wrong.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::address::{Address, SocketAddress};
use crate::config::{file, Config, ServiceConfig};
use crate::error::StartError;
use crate::event_loop::Offer;
use crate::listener::{ListenOptions, Listener};
use crate::service::{self, Service};

/// The services of one configuration, each with the id of its listeners.
#[derive(Debug)]
pub struct Generation {
    /// The configuration it was built from.
    pub config: Config,
    /// Its services, in order.
    pub services: Vec<Live>,
    /// Whether the process is in the sandbox, which limits what a reload can open: set
    /// once it has entered it, and handed on from generation to generation.
    pub sandboxed: bool,
}

/// A service of a generation and the id of its listener set: a service that keeps its
/// listeners from one generation to the next keeps the id.
#[derive(Debug)]
pub struct Live {
    /// Which listeners it has.
    pub id: u64,
    /// The service.
    pub service: Service,
}

/// What a reload changed, for its log line.
#[derive(Debug, Default)]
pub struct Changes {
    /// Services that are new.
    pub added: Vec<String>,
    /// Services that are gone.
    pub removed: Vec<String>,
    /// Services kept.
    pub kept: usize,
    /// Where the new listeners listen (services added or moved): name, address, targets,
    /// as the `listening on` lines show them.
    pub listening: Vec<(String, String, String)>,
    /// Services whose unix socket stays with the mode it has, though `--unix-mode` changed:
    /// the sandbox does not let moat change a file's mode.
    pub modes_kept: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} service(s) kept", self.kept)?;
        if !self.added.is_empty() {
            write!(f, ", added: {}", self.added.join(", "))?;
        }
        if !self.removed.is_empty() {
            write!(f, ", removed: {}", self.removed.join(", "))?;
        }
        Ok(())
    }
}

impl Generation {
    /// Builds the services of `config` (reading their files and resolving their names) and
    /// binds what `previous` does not already listen on, with one listener per worker.
    /// Returns the generation and, for each worker, its offers.
    pub fn build(
        config: Config,
        previous: Option<&Self>,
        workers: usize,
        ids: &mut u64,
    ) -> Result<(Self, Vec<Vec<Offer>>, Changes), StartError> {
        let mut services = Vec::with_capacity(config.services.len());
        let mut offers: Vec<Vec<Offer>> = (0..workers).map(|_| Vec::new()).collect();
        let mut changes = Changes::default();
        // Listener sets already handed on: two new services never share one (two written
        // the same, `127.0.0.1:0`, are two sockets, as at start-up).
        let mut claimed = Vec::new();
        let sandboxed = previous.is_some_and(|p| p.sandboxed);
        for settings in &config.services {
            let in_file = |e| file::service_error(config.file.as_deref(), settings, e);
            let before = previous.and_then(|p| p.find(&settings.name, &settings.listen));
            let service = service::build(settings, before.map(|l| &l.service)).map_err(in_file)?;
            let (id, listeners) = match before {
                Some(live)
                    if live.service.listen == service.listen && !claimed.contains(&live.id) =>
                {
                    claimed.push(live.id);
                    if service.unix_mode.is_some() && service.unix_mode != live.service.unix_mode {
                        if sandboxed {
                            changes.modes_kept.push(settings.name.clone());
                        } else {
                            set_modes(&service).map_err(in_file)?;
                        }
                    }
                    (live.id, None)
                }
                _ => {
                    *ids += 1;
                    let options = ListenOptions {
                        unix_mode: service.unix_mode,
                        reuse_port: workers > 1,
                        sandboxed,
                    };
                    let listeners = bind(&service.listen_at, options, workers).map_err(in_file)?;
                    changes
                        .listening
                        .extend(shown(settings, &service, &listeners));
                    (*ids, Some(listeners))
                }
            };
            match before {
                Some(live) if live.id == id || *live.service.route.name == *settings.name => {
                    changes.kept += 1
                }
                _ => changes.added.push(settings.name.clone()),
            }
            offer(&mut offers, id, &service, listeners);
            services.push(Live { id, service });
        }
        if let Some(previous) = previous {
            changes.removed = previous
                .services
                .iter()
                .filter(|old| !services.iter().any(|new| new.id == old.id))
                .map(|old| old.service.route.name.to_string())
                .collect();
        }
        let generation = Self {
            config,
            services,
            sandboxed,
        };
        Ok((generation, offers, changes))
    }

    /// A generation of services built by hand (the demo), each with the listener it is
    /// already bound to.
    pub fn prebuilt(
        config: Config,
        built: Vec<(Service, Listener)>,
        workers: usize,
        ids: &mut u64,
    ) -> Result<(Self, Vec<Vec<Offer>>), StartError> {
        let mut services = Vec::new();
        let mut offers: Vec<Vec<Offer>> = (0..workers).map(|_| Vec::new()).collect();
        for (service, listener) in built {
            *ids += 1;
            let options = ListenOptions {
                unix_mode: service.unix_mode,
                reuse_port: workers > 1,
                sandboxed: false,
            };
            let mut siblings = Vec::with_capacity(workers);
            for _ in 1..workers {
                siblings.push(vec![listener.sibling(options)?]);
            }
            let mut per_worker = vec![vec![listener]];
            per_worker.extend(siblings);
            offer(&mut offers, *ids, &service, Some(per_worker));
            services.push(Live { id: *ids, service });
        }
        let generation = Self {
            config,
            services,
            sandboxed: false,
        };
        Ok((generation, offers))
    }

    /// The service that a new `name` listening at `listen` continues: the one of that
    /// name, or else one that listened at that address (a renamed service).
    fn find(&self, name: &str, listen: &Address) -> Option<&Live> {
        self.services
            .iter()
            .find(|l| &*l.service.route.name == name)
            .or_else(|| self.services.iter().find(|l| l.service.listen == *listen))
    }

    /// Every file the generation reads: what `--reload-interval` watches, and what the
    /// sandbox lets moat read again.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .services
            .iter()
            .flat_map(|l| l.service.files.iter().cloned())
            .collect();
        files.extend(self.config.file.iter().cloned());
        files
    }

    /// The unix sockets the generation listens on.
    pub fn unix_sockets(&self) -> Vec<PathBuf> {
        self.services
            .iter()
            .flat_map(|l| l.service.listen_at.iter())
            .filter_map(|at| match at {
                SocketAddress::Unix(path) => Some(path.clone()),
                SocketAddress::Tcp(_) => None,
            })
            .collect()
    }

    /// The TCP ports the generation's targets are on.
    pub fn target_ports(&self) -> Vec<u16> {
        self.services
            .iter()
            .flat_map(|l| l.service.target_ports())
            .collect()
    }

    /// Whether a reload would resolve host names again.
    pub fn resolves_names(&self) -> bool {
        self.config.services.iter().any(|s| {
            let targets = match &s.kind {
                crate::config::ServiceKind::Server(server) => &server.targets,
                crate::config::ServiceKind::Client(client) => &client.targets,
            };
            matches!(s.listen, Address::Host(..))
                || targets.iter().any(|t| matches!(t, Address::Host(..)))
        })
    }
}

/// Adds `service` to every worker's offers; `listeners[i]` are worker i's new ones.
fn offer(
    offers: &mut [Vec<Offer>],
    id: u64,
    service: &Service,
    mut listeners: Option<Vec<Vec<Listener>>>,
) {
    for (worker, list) in offers.iter_mut().enumerate() {
        let mine = listeners
            .as_mut()
            .and_then(|l| l.get_mut(worker))
            .map(std::mem::take);
        list.push(Offer {
            id,
            route: service.route.clone(),
            targets_shown: service.targets_shown.clone(),
            listeners: mine,
        });
    }
}

/// Gives the unix sockets `service` keeps listening on its new `--unix-mode`.
fn set_modes(service: &Service) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(mode) = service.unix_mode else {
        return Ok(());
    };
    for at in &service.listen_at {
        if let SocketAddress::Unix(path) = at {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                |source| StartError::Listen {
                    addr: at.to_string(),
                    source,
                },
            )?;
        }
    }
    Ok(())
}

/// The `listening on` lines of a service's new listeners (worker 0's; the others listen
/// on the same places).
fn shown(
    settings: &ServiceConfig,
    service: &Service,
    listeners: &[Vec<Listener>],
) -> Vec<(String, String, String)> {
    listeners
        .first()
        .into_iter()
        .flatten()
        .filter_map(|l| l.local().ok())
        .map(|local| {
            (
                settings.name.clone(),
                local.to_string(),
                service.targets_shown.clone(),
            )
        })
        .collect()
}

/// Binds every place of `at` for worker 0, and a sibling of each for every other worker.
fn bind(
    at: &[SocketAddress],
    options: ListenOptions,
    workers: usize,
) -> Result<Vec<Vec<Listener>>, StartError> {
    let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    for place in at {
        let first = Listener::bind(place, options)?;
        for list in per_worker.iter_mut().skip(1) {
            list.push(first.sibling(options)?);
        }
        per_worker[0].push(first);
    }
    Ok(per_worker)
}

/// What `--reload-interval` compares: each file's identity and modification time, so that
/// a rewritten file, or a symlink pointed elsewhere (certbot's renewals), is a change.
///
/// Each state must be taken *before* moat reads the file: a change made after the read is
/// then a difference the next check finds. Taken after, a file replaced while moat was
/// reading it would look as if moat had read the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<FileState>)>);

/// A file's device, inode, length and modification time.
type FileState = (u64, u64, u64, Option<SystemTime>);

impl Fingerprint {
    /// The current state of the same files.
    pub fn again(&self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(path, _)| (path.clone(), state(path)))
                .collect(),
        )
    }

    /// The current state of `files` (a missing file is a state too).
    pub fn of(files: &[PathBuf]) -> Self {
        Self(
            files
                .iter()
                .map(|path| (path.clone(), state(path)))
                .collect(),
        )
    }

    /// The fingerprint of `files` as the first of `seen` that has each saw it (states
    /// taken before the file was read), or as it is now.
    pub fn as_seen(files: &[PathBuf], seen: &[&Self]) -> Self {
        Self(
            files
                .iter()
                .map(|path| {
                    let earlier = seen.iter().find_map(|f| f.state_of(path));
                    (path.clone(), earlier.unwrap_or_else(|| state(path)))
                })
                .collect(),
        )
    }

    /// The files it covers.
    pub fn files(&self) -> Vec<PathBuf> {
        self.0.iter().map(|(path, _)| path.clone()).collect()
    }

    fn state_of(&self, path: &Path) -> Option<Option<FileState>> {
        self.0.iter().find(|(p, _)| p == path).map(|(_, s)| *s)
    }
}

fn state(path: &Path) -> Option<FileState> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_keeps_the_state_seen_before_the_read() {
        let dir = std::env::temp_dir().join(format!("moat-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "one").unwrap();
        let before = Fingerprint::of(std::slice::from_ref(&a));
        // Replaced after the state was taken, as if while moat read it:
        std::fs::write(&a, "three").unwrap();
        std::fs::write(&b, "b").unwrap();
        let stored = Fingerprint::as_seen(&[a.clone(), b.clone()], &[&before]);
        assert_ne!(
            stored.again(),
            stored,
            "the change after the read went unseen"
        );
        assert_eq!(stored.state_of(&b), Some(state(&b)));
        let settled = stored.again();
        assert_eq!(settled.again(), settled);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
