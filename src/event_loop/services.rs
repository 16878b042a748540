//! A worker's services: for each, where its tunnels go (swapped at reload) and the sockets
//! it listens on, each with the token the poll reports it by.

use std::sync::Arc;

use mio::{Interest, Registry, Token};

use super::command::Offer;
use crate::listener::Listener;
use crate::metrics::{LoopMetrics, ServiceMetrics};
use crate::route::Route;

/// Listener tokens count down from here; the tokens above are the waker's and the status
/// endpoint's.
const FIRST_LISTENER_TOKEN: usize = usize::MAX - 64;

/// The token of listener `index`.
fn token(index: usize) -> Token {
    Token(FIRST_LISTENER_TOKEN - index)
}

/// Most listeners a worker can have: their tokens lie far above any tunnel's.
const MAX_LISTENERS: usize = 1 << 20;

/// The listener index of `token`, if it is a listener's.
pub(super) fn listener_index(token: Token) -> Option<usize> {
    FIRST_LISTENER_TOKEN
        .checked_sub(token.0)
        .filter(|&index| index < MAX_LISTENERS)
}

/// One service of this worker.
#[derive(Debug)]
struct Entry {
    id: u64,
    route: Arc<Route>,
    targets_shown: String,
    metrics: Arc<ServiceMetrics>,
}

/// A listening socket, the service it belongs to, and whether connections wait on it.
#[derive(Debug)]
struct Slot {
    listener: Listener,
    service: u64,
    /// The kernel said connections are waiting and no accept has said `WouldBlock` since.
    acceptable: bool,
}

/// The services a worker serves and their listeners.
#[derive(Debug, Default)]
pub(super) struct Services {
    entries: Vec<Entry>,
    /// By token; a closed listener leaves a hole, so tokens never move.
    slots: Vec<Option<Slot>>,
}

impl Services {
    /// Serves `offers` from now on: new routes for the services kept, listeners for the new
    /// ones; a service not offered any more stops accepting (its tunnels keep their route).
    pub(super) fn apply(
        &mut self,
        offers: Vec<Offer>,
        registry: &Registry,
        metrics: &LoopMetrics,
    ) -> std::io::Result<()> {
        let offered: Vec<u64> = offers.iter().map(|o| o.id).collect();
        for index in 0..self.slots.len() {
            let stale = self.slots[index]
                .as_ref()
                .is_some_and(|slot| !offered.contains(&slot.service));
            if stale {
                // Dropping the listener closes it, which also takes it out of the poll.
                self.slots[index] = None;
            }
        }
        let mut entries = Vec::with_capacity(offers.len());
        for offer in offers {
            if let Some(listeners) = offer.listeners {
                self.close_listeners_of(offer.id);
                for mut listener in listeners {
                    let index = self.free_slot();
                    registry.register(&mut listener, token(index), Interest::READABLE)?;
                    self.slots[index] = Some(Slot {
                        listener,
                        service: offer.id,
                        acceptable: false,
                    });
                }
            }
            let service_metrics = metrics.service(&offer.route.name);
            // The configured protocols show from the start, with zero counts.
            service_metrics.alpn.configure(offer.route.alpn_protocols());
            entries.push(Entry {
                id: offer.id,
                metrics: service_metrics,
                route: offer.route,
                targets_shown: offer.targets_shown,
            });
        }
        self.entries = entries;
        let names: Vec<Arc<str>> = self.entries.iter().map(|e| e.route.name.clone()).collect();
        metrics.retain_services(|name| names.iter().any(|n| &**n == name));
        Ok(())
    }

    /// Notes that the listener with `index` has connections waiting.
    pub(super) fn mark_acceptable(&mut self, index: usize) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.acceptable = true;
        }
    }

    /// Notes that the listener with `index` has none left.
    pub(super) fn mark_drained(&mut self, index: usize) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.acceptable = false;
        }
    }

    /// Whether any listener has connections waiting.
    pub(super) fn any_acceptable(&self) -> bool {
        self.slots.iter().flatten().any(|s| s.acceptable)
    }

    /// How many listener slots there are (some may be empty).
    pub(super) fn listener_count(&self) -> usize {
        self.slots.len()
    }

    /// The listener with `index`, if it is open and has connections waiting.
    pub(super) fn acceptable(&self, index: usize) -> Option<&Listener> {
        match self.slots.get(index) {
            Some(Some(slot)) if slot.acceptable => Some(&slot.listener),
            _ => None,
        }
    }

    /// The route and metrics of the service that listener `index` belongs to.
    pub(super) fn service_of(&self, index: usize) -> Option<(&Arc<Route>, &Arc<ServiceMetrics>)> {
        let service = self.slots.get(index)?.as_ref()?.service;
        let entry = self.entries.iter().find(|e| e.id == service)?;
        Some((&entry.route, &entry.metrics))
    }

    /// Each listener's service name, address and targets, for the `listening on` lines.
    pub(super) fn listening(&self) -> Vec<(Arc<str>, String, String)> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|slot| {
                let entry = self.entries.iter().find(|e| e.id == slot.service)?;
                let local = slot.listener.local().ok()?;
                Some((
                    entry.route.name.clone(),
                    local.to_string(),
                    entry.targets_shown.clone(),
                ))
            })
            .collect()
    }

    /// Closes every listener (shutdown).
    pub(super) fn close_all(&mut self) {
        self.slots.clear();
    }

    fn close_listeners_of(&mut self, service: u64) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|s| s.service == service) {
                *slot = None;
            }
        }
    }

    fn free_slot(&mut self) -> usize {
        // Past MAX_LISTENERS a token would look like a tunnel's; no real setup gets near.
        match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        }
    }
}
