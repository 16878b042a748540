//! Telling the service manager how start-up, reload and shutdown go: the `sd_notify`
//! protocol.
//!
//! systemd (with `Type=notify`) starts moat with `NOTIFY_SOCKET` naming a unix datagram
//! socket, either a path (`/run/systemd/notify`) or an abstract address (`@name`). Each
//! message is one datagram of `KEY=VALUE` lines: `READY=1` once moat serves, `RELOADING=1`
//! while it re-reads its files, `STOPPING=1` when a graceful shutdown begins, and `STATUS=`
//! with a line for `systemctl status`. Without `NOTIFY_SOCKET` nothing is sent.
//!
//! The protocol is a few lines of text on a socket, so it is written here rather than taken
//! from a crate. Sending never blocks the loop: the socket is nonblocking, and a message the
//! manager cannot take at once is dropped with a debug line — moat goes on serving either way.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable through which the service manager names its socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    manager: SocketAddr,
    /// The address as the environment gave it, for log lines.
    shown: String,
}

impl Notifier {
    /// The notifier that `NOTIFY_SOCKET` asks for, or `None` when moat runs without a
    /// service manager that wants to hear (or with an address it cannot use, said at debug
    /// level).
    pub fn from_env() -> Option<Self> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        let Some(value) = value.to_str() else {
            log::debug!("{NOTIFY_SOCKET} is not valid UTF-8: not notifying");
            return None;
        };
        match Self::for_address(value) {
            Ok(notifier) => {
                // The first read of the clock finds the vDSO; do it now, before the sandbox.
                let _ = monotonic_micros();
                Some(notifier)
            }
            Err(e) => {
                log::debug!(
                    "{NOTIFY_SOCKET}={value}: {}: not notifying",
                    crate::error::plain_io(&e)
                );
                None
            }
        }
    }

    /// A notifier that sends to `address`: an absolute path, or `@name` for an abstract
    /// socket address.
    pub fn for_address(address: &str) -> io::Result<Self> {
        let manager = match address.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if address.starts_with('/') => SocketAddr::from_pathname(address)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected an absolute path or @name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            manager,
            shown: address.to_owned(),
        })
    }

    /// moat serves: every listener is bound and the signal handlers are installed, so the
    /// manager may send signals from now on. Also sent when a reload has finished.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// moat is re-reading its configuration; [`Self::ready`] follows when it is done.
    ///
    /// systemd wants the time of the request on `CLOCK_MONOTONIC`, to tell this reload
    /// from an earlier one.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            monotonic_micros()
        ));
    }

    /// A graceful shutdown has begun: no new connections, open tunnels are finishing.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// A line for `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.manager) {
            let first = message.lines().next().unwrap_or_default();
            log::debug!(
                "cannot notify the service manager at {} ({first}): {}",
                self.shown,
                crate::error::plain_io(&e)
            );
        }
    }
}

/// Newlines would start a new `KEY=VALUE` assignment: a status stays on one line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Microseconds on `CLOCK_MONOTONIC`, the clock systemd compares `MONOTONIC_USEC` with.
/// (`std::time::Instant` reads that clock too, but does not reveal its value.)
fn monotonic_micros() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec / 1_000).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A fresh directory for this test's socket.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn receive(manager: &UnixDatagram) -> String {
        manager
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = manager.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_message_to_a_path() {
        let dir = temp_dir("path");
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::for_address(path.to_str().unwrap()).unwrap();

        notifier.ready("serving 1 listener\nsecond line");
        assert_eq!(
            receive(&manager),
            "READY=1\nSTATUS=serving 1 listener second line"
        );
        notifier.status("draining");
        assert_eq!(receive(&manager), "STATUS=draining");
        notifier.stopping();
        assert_eq!(receive(&manager), "STOPPING=1");

        let before = monotonic_micros();
        notifier.reloading();
        let message = receive(&manager);
        let after = monotonic_micros();
        let usec: u64 = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {message:?}"));
        assert!((before..=after).contains(&usec), "{before} {usec} {after}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_address() {
        let name = format!("moat-notify-test-{}", std::process::id());
        let manager =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::for_address(&format!("@{name}")).unwrap();
        notifier.stopping();
        assert_eq!(receive(&manager), "STOPPING=1");
    }

    #[test]
    fn a_missing_manager_is_no_error() {
        let dir = temp_dir("gone");
        let notifier = Notifier::for_address(dir.join("nobody").to_str().unwrap()).unwrap();
        notifier.ready("nobody listens"); // logs at debug, returns
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relative_addresses_are_refused() {
        assert!(Notifier::for_address("notify").is_err());
        assert!(Notifier::for_address("").is_err());
    }
}
