//! The accepting side of the loop: taking connections from the listeners within the caps
//! and the per-turn budget, making room in the handshake budget, and starting tunnels.

use std::io;
use std::time::Instant;

use mio::Interest;

use super::{EventLoop, ACCEPT_BUDGET};
use crate::address::Peer;
use crate::admission::HandshakeRoom;
use crate::endpoint::{Conn, Socket};
use crate::metrics::Refusal;
use crate::tunnel::{EndReason, Side, Tunnel};

impl EventLoop {
    pub(super) fn can_accept(&mut self, now: Instant) -> bool {
        !self.admission.at_cap()
            && !self.admission.paused(now)
            && !matches!(
                self.admission.handshake_room(now),
                HandshakeRoom::FullUntil(_)
            )
            && self.services.any_acceptable()
    }

    /// Accepts what the listeners hold, up to the caps and the per-turn budget.
    pub(super) fn accept(&mut self, now: Instant) {
        if self.admission.paused(now) {
            return;
        }
        for index in 0..self.services.listener_count() {
            for _ in 0..ACCEPT_BUDGET {
                if self.services.acceptable(index).is_none() {
                    break;
                }
                let room = self.admission.handshake_room(now);
                if let HandshakeRoom::FullUntil(_) = room {
                    return;
                }
                if !self.admission.reserve() {
                    self.metrics.refusals.inc(Refusal::MaxConns);
                    return;
                }
                // Behind a load balancer the address to count comes in the PROXY header.
                let counts_at_accept = self
                    .services
                    .service_of(index)
                    .is_some_and(|(route, _)| route.accept_proxy.is_none());
                let Some(listener) = self.services.acceptable(index) else {
                    self.admission.shared().release();
                    break;
                };
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let counted = peer.ip().filter(|_| counts_at_accept);
                        if !self.admission.shared().admit_ip(counted, now) {
                            self.admission.shared().release();
                            self.metrics.refusals.inc(Refusal::PerIp);
                            continue; // dropping the stream closes it
                        }
                        if let HandshakeRoom::Evict(key) = room {
                            self.evict(key, now);
                        }
                        self.open_tunnel(index, stream, peer, counted, now);
                    }
                    Err(e) => {
                        self.admission.shared().release();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => self.services.mark_drained(index),
                            // The client gave up before we got to it; the next may be fine.
                            io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                            _ => {
                                self.admission.accept_failed(&e, now);
                                self.metrics.accept_pauses.inc();
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Ends the oldest handshake to make room for a newcomer (slowloris defence).
    pub(super) fn evict(&mut self, key: usize, now: Instant) {
        self.admission.note_eviction(now);
        self.metrics.refusals.inc(Refusal::HandshakeBudgetEviction);
        // Near the connection cap the descriptor is worth more than slowing the attacker.
        let (open, max) = (
            self.admission.shared().open(),
            self.admission.shared().max(),
        );
        if open < max / 4 * 3 {
            if let Some(tunnel) = self.tunnels.get_mut(key) {
                tunnel.hold(&mut self.pool);
            }
            self.admission.forget(key);
        } else {
            self.end_tunnel(key, EndReason::Evicted, now);
        }
    }

    /// A tunnel for a connection just accepted on listener `index`. Its place under the
    /// connection cap is already reserved, and `peer` counted.
    fn open_tunnel(
        &mut self,
        index: usize,
        mut stream: Conn,
        peer: Peer,
        counted: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        let Some((route, metrics)) = self.services.service_of(index) else {
            self.give_back(counted);
            return;
        };
        let (route, metrics) = (route.clone(), metrics.clone());
        let entry = self.tunnels.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Side::Client.token(key), interest)
        {
            log::warn!(
                "cannot watch connection from {peer}: {}",
                crate::error::plain_io(&e)
            );
            self.give_back(counted);
            return;
        }
        let id = self.next_id;
        let mut tunnel = match Tunnel::new(id, route, metrics, Socket::new(stream), peer, now) {
            Ok(tunnel) => tunnel,
            Err(e) => {
                log::warn!("cannot start tunnel for {peer}: {e}");
                self.give_back(counted);
                return;
            }
        };
        tunnel.counted_ip = counted;
        self.next_id += self.id_step;
        log::debug!(tunnel = id; "tunnel {id}: accepted {peer} on {}", tunnel.route.name);
        if crate::trace::wanted(&self.trace, peer.ip()) {
            tunnel.trace();
            tunnel.trace_line(format_args!(
                "accepted from {peer} on {}; registered for readable|writable, \
                 edge-triggered, token {}",
                tunnel.route.name,
                Side::Client.token(key).0
            ));
        }
        tunnel.metrics.tunnel_opened();
        // Queue it once: client mode dials right away, and a server-mode client's hello may
        // already be in the socket.
        tunnel.queued = true;
        self.ready.push_back((key, id));
        let class = tunnel.timer_class();
        let duration = tunnel.route.deadline(class);
        self.timers.set(key, class, duration, now);
        tunnel.trace_line(format_args!(
            "deadline {} armed: {duration:?}",
            class.name()
        ));
        self.admission
            .track(key, tunnel.handshake_stage(), false, now);
        entry.insert(tunnel);
    }

    /// Gives back the places a tunnel that never started had taken.
    fn give_back(&self, counted: Option<std::net::IpAddr>) {
        self.admission.shared().release_ip(counted);
        self.admission.shared().release();
    }
}
