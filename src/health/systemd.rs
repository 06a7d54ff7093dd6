//! The systemd notification protocol (`sd_notify(3)`): `READY=1` once the service can do
//! its job, `WATCHDOG=1` while it is healthy, `STOPPING=1` when it begins to shut down.
//!
//! The socket and watchdog interval are read once from the environment systemd sets
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) into a [`Notifier`]; everything else
//! takes the notifier as a value, so tests hand in their own socket instead of mutating
//! the process environment. Outside systemd the notifier is disabled and every call is a
//! no-op.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Where notifications go: a filesystem path or a Linux abstract socket name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddress {
    /// A socket file, as systemd's `/run/systemd/notify`.
    Path(PathBuf),
    /// An abstract socket (`NOTIFY_SOCKET=@name`), as used by some service managers.
    Abstract(Vec<u8>),
}

impl NotifyAddress {
    /// Parses a `NOTIFY_SOCKET` value (`/path` or `@abstract`).
    pub fn parse(value: &OsStr) -> Option<NotifyAddress> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        match bytes.first()? {
            b'@' => Some(NotifyAddress::Abstract(bytes[1..].to_vec())),
            b'/' => Some(NotifyAddress::Path(PathBuf::from(value))),
            _ => None,
        }
    }
}

/// Sends service-manager notifications; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, NotifyAddress)>,
    watchdog: Option<Duration>,
    /// A send failure is logged once, not on every watchdog tick.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing (not started by systemd, or `sync --once`).
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as systemd sets them.
    /// The watchdog applies when `WATCHDOG_PID` is unset or names this process, as in
    /// `sd_watchdog_enabled(3)`.
    pub fn from_env() -> Notifier {
        let address = std::env::var_os("NOTIFY_SOCKET").and_then(|v| NotifyAddress::parse(&v));
        let watchdog_pid_matches = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.trim().parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_pid_matches)
            .map(Duration::from_micros);
        match address {
            Some(address) => match Notifier::new(address, watchdog) {
                Ok(notifier) => notifier,
                Err(e) => {
                    tracing::warn!(error = %e, "NOTIFY_SOCKET is set but no socket could be created; systemd will not be notified");
                    Notifier::disabled()
                }
            },
            None => Notifier::disabled(),
        }
    }

    /// A notifier sending to `address`, with the watchdog interval the service manager
    /// expects pings within (`None`: no watchdog).
    pub fn new(address: NotifyAddress, watchdog: Option<Duration>) -> io::Result<Notifier> {
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, address)),
            watchdog,
            warned: AtomicBool::new(false),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The service manager's watchdog timeout, if it set one.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up is complete: configuration validated, database migrated, endpoint bound.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The service is healthy: resets the service manager's watchdog timer.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// A human-readable status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Shutdown has begun; in-flight pages are being finished.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing in-flight pages"),
        ]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = send_to(socket, address, message.as_bytes())
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, ?address, "cannot notify the service manager");
        }
    }
}

fn send_to(socket: &UnixDatagram, address: &NotifyAddress, message: &[u8]) -> io::Result<usize> {
    match address {
        NotifyAddress::Path(path) => socket.send_to(message, path),
        NotifyAddress::Abstract(name) => {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message, &addr)
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract sockets need Linux",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values_are_paths_or_abstract_names() {
        assert_eq!(
            NotifyAddress::parse(OsStr::new("/run/systemd/notify")),
            Some(NotifyAddress::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyAddress::parse(OsStr::new("@convsync/notify")),
            Some(NotifyAddress::Abstract(b"convsync/notify".to_vec()))
        );
        assert_eq!(NotifyAddress::parse(OsStr::new("relative")), None);
        assert_eq!(NotifyAddress::parse(OsStr::new("")), None);
    }

    #[test]
    fn messages_reach_the_socket_one_datagram_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier =
            Notifier::new(NotifyAddress::Path(path), Some(Duration::from_secs(30))).unwrap();
        notifier.ready("syncing 2 sources");
        notifier.watchdog();
        notifier.stopping();
        let mut buf = [0u8; 256];
        let mut next = || {
            let n = receiver.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(next(), "READY=1\nSTATUS=syncing 2 sources\n");
        assert_eq!(next(), "WATCHDOG=1\n");
        assert!(next().starts_with("STOPPING=1\n"));
    }
}
