//! What the control thread tells a worker's loop, through a channel and a `mio::Waker`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::Listener;
use crate::route::Route;

/// A message to a worker.
#[derive(Debug)]
pub enum Command {
    /// Serve these services from now on, in this order (start-up and every reload). A
    /// service the worker has that is not offered stops accepting; its tunnels finish.
    Serve(Vec<Offer>),
    /// A new share of the handshake budget (reload).
    MaxHandshakes(usize),
    /// Stop accepting; let open tunnels finish for this long, then close them. The worker
    /// answers once its listeners are closed.
    Shutdown(Duration, mpsc::Sender<()>),
    /// Close every tunnel now (a second SIGTERM).
    StopNow,
    /// Report how many tunnels and buffers the worker holds.
    Stats(mpsc::Sender<Stats>),
}

/// One service offered to a worker.
#[derive(Debug)]
pub struct Offer {
    /// Which listeners it has: the same id as before means the same listeners.
    pub id: u64,
    /// Where its new tunnels go.
    pub route: Arc<Route>,
    /// Its targets as the `listening on` line shows them.
    pub targets_shown: String,
    /// Listeners for this worker, when they are new (a new service, or a moved one);
    /// `None` keeps the ones the worker has for `id`.
    pub listeners: Option<Vec<Listener>>,
}

/// What a worker holds, for the `stats:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tunnels open, lingering ones included.
    pub tunnels: usize,
    /// Relay buffers lent out.
    pub buffers_in_use: usize,
    /// Buffers kept for reuse.
    pub buffers_spare: usize,
}

impl std::ops::Add for Stats {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            tunnels: self.tunnels + other.tunnels,
            buffers_in_use: self.buffers_in_use + other.buffers_in_use,
            buffers_spare: self.buffers_spare + other.buffers_spare,
        }
    }
}
