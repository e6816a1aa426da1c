//! Accepting connections under the cap, turning away the rest, and
//! stopping.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::connection::{self, Limits, Render, Service};
use super::reject;

/// A running `/metrics` endpoint; see [`serve`](crate::serve) and
/// [`ServerOptions`](super::ServerOptions).
///
/// It runs on one thread accepting connections, one thread per open
/// connection (at most [`ServerOptions::max_connections`](super::ServerOptions::max_connections)) and one
/// turning away connections past that cap with 503.
///
/// Dropping the handle leaves the endpoint running for the rest of the
/// process; call [`shutdown`](MetricsServer::shutdown) to stop it.
pub struct MetricsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    service: Service,
    stopping: AtomicBool,
    open: Mutex<Open>,
    /// Signalled when a connection ends.
    closed: Condvar,
}

/// The open connections, so that `shutdown` can end them.
#[derive(Default)]
struct Open {
    next_id: u64,
    streams: HashMap<u64, TcpStream>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address the endpoint listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: closes the listening socket (the port is free when
    /// this returns) and every open connection, and waits, for at most the
    /// timeout and a second, for requests being answered to end.
    pub fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The acceptor is blocked in accept(); a connection of our own
        // wakes it to see the flag.
        let woke = TcpStream::connect_timeout(&wake_address(self.addr), Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            match woke {
                Ok(_) => {
                    let _ = acceptor.join();
                }
                // It stops at its next connection.
                Err(e) => log::warn!("promshard: the /metrics listener did not wake up to stop: {e}"),
            }
        }
        let deadline = Instant::now() + self.shared.service.limits.timeout + Duration::from_secs(1);
        let mut open = self.shared.lock_open();
        for stream in open.streams.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        while !open.streams.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            open = self.shared.closed.wait_timeout(open, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    pub(super) fn start(
        addr: impl ToSocketAddrs,
        limits: Limits,
        credentials: Option<Credentials>,
        render: Arc<Render>,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            service: Service { limits, credentials, render },
            stopping: AtomicBool::new(false),
            open: Mutex::new(Open::default()),
            closed: Condvar::new(),
        });
        let reject = reject::start()?;
        let acceptor = thread::Builder::new().name("promshard-http".into()).spawn({
            let shared = Arc::clone(&shared);
            move || accept(listener, &shared, reject)
        })?;
        Ok(MetricsServer { addr, shared, acceptor: Some(acceptor) })
    }
}

impl Shared {
    fn lock_open(&self) -> MutexGuard<'_, Open> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts until the server stops; the listener closes when this returns.
fn accept(listener: TcpListener, shared: &Arc<Shared>, reject: reject::Rejecter) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait for some to close rather
                // than spin.
                log::warn!("promshard: /metrics could not accept a connection: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Err(stream) = admit(shared, stream) {
            reject.turn_away(stream);
        }
    }
}

/// Starts serving `stream` on a thread of its own, or hands it back when
/// the server is at its cap.
fn admit(shared: &Arc<Shared>, stream: TcpStream) -> Result<(), TcpStream> {
    let mut open = shared.lock_open();
    if open.streams.len() >= shared.service.limits.max_connections {
        return Err(stream);
    }
    let Ok(handle) = stream.try_clone() else { return Err(stream) };
    let id = open.next_id;
    open.next_id += 1;
    open.streams.insert(id, handle);
    drop(open);

    let slot = Slot { shared: Arc::clone(shared), id };
    let spawned = thread::Builder::new().name("promshard-http-conn".into()).spawn(move || {
        connection::serve(stream, &slot.shared.service);
        drop(slot);
    });
    // The closure is dropped with the error, and its slot and stream with
    // it.
    if let Err(e) = spawned {
        log::warn!("promshard: /metrics could not start a connection thread: {e}");
    }
    Ok(())
}

/// A place under the cap, given back when the connection's thread ends,
/// even by a panic.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.lock_open().streams.remove(&self.id);
        self.shared.closed.notify_all();
    }
}

/// Where to connect to reach a listener bound to `addr`.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
