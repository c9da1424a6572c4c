//! The accept loops (one per listen address and Unix socket): one task per client
//! connection, until shutdown.

pub mod per_core;
pub mod unix_socket;

use crate::app::Shared;
use crate::listener::unix_socket::SocketFile;
use crate::shutdown::Stage;
use crate::tls::Stream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_util::task::TaskTracker;

/// Counts client connections: against `max_client_conn`, and for `SHUTDOWN WAIT_FOR_CLIENTS`,
/// which waits until only admin console connections are left once the listener is closed.
#[derive(Debug, Default)]
pub struct ClientCounter {
    current: AtomicUsize,
    /// Accepted connections whose task has not ended yet (counted before the task is spawned,
    /// so none slips between the accept and the count).
    connections: AtomicUsize,
    /// Of those, admin console logins (they do not keep a draining process alive).
    consoles: AtomicUsize,
    /// The accept loop has ended: no connection will be added any more.
    listener_closed: std::sync::atomic::AtomicBool,
    /// Woken whenever one of the above goes down or the listener closes.
    changed: tokio::sync::Notify,
}

/// An accepted connection, counted until dropped (with its task).
pub struct ConnectionGuard {
    shared: Arc<Shared>,
    console: bool,
}

impl ConnectionGuard {
    /// This connection turned out to be an admin console login.
    pub fn mark_console(&mut self) {
        if !self.console {
            self.console = true;
            self.shared.clients.consoles.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let clients = &self.shared.clients;
        // Consoles first: the count of non-console connections may only be overstated.
        if self.console {
            clients.consoles.fetch_sub(1, Ordering::AcqRel);
        }
        clients.connections.fetch_sub(1, Ordering::AcqRel);
        clients.changed.notify_waiters();
    }
}

impl ClientCounter {
    /// Takes a place if fewer than `limit` are taken.
    pub fn try_enter(&self, limit: usize) -> bool {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn leave(&self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// Accepted connections whose task has not ended, consoles and cancel requests included.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Accepted connections that are not admin consoles, right now.
    pub fn app_connections(&self) -> usize {
        // Consoles are decremented first, so this never reads below the truth.
        let consoles = self.consoles.load(Ordering::Acquire);
        self.connections.load(Ordering::Acquire).saturating_sub(consoles)
    }

    /// Resolves once the listener is closed and every connection left is an admin console
    /// (`SHUTDOWN WAIT_FOR_CLIENTS`). Woken by each departure, never by a timer.
    pub async fn wait_clients_gone(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a departure between the two is not missed.
            changed.as_mut().enable();
            if self.listener_closed.load(Ordering::Acquire) && self.app_connections() == 0 {
                return;
            }
            changed.await;
        }
    }

    fn close_listener(&self) {
        self.listener_closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// One socket clients connect to: a `listen` address or the Unix-domain socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        file: SocketFile,
        /// The port in the socket's name; Unix clients' `peer` is `0.0.0.0:<port>`.
        port: u16,
    },
}

impl Listener {
    /// A name for logs: the address or the socket path.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(tcp) => tcp.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            Listener::Unix { file, .. } => file.path.display().to_string(),
        }
    }

    async fn accept(&self) -> std::io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(tcp) => tcp.accept().await.map(|(s, peer)| (Stream::Plain(s), peer)),
            Listener::Unix { listener, port, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), unix_peer(*port)))
            }
        }
    }
}

/// What a Unix-socket client is shown as where an address is expected (it has none).
fn unix_peer(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port))
}

/// Counts a connection and serves it on a task tracked by `tasks`.
fn spawn_client(shared: &Arc<Shared>, tasks: &TaskTracker, stream: Stream, peer: SocketAddr) {
    shared.clients.connections.fetch_add(1, Ordering::AcqRel);
    let guard = ConnectionGuard {
        shared: shared.clone(),
        console: false,
    };
    tasks.spawn(crate::client::login::serve(shared.clone(), stream, peer, guard));
}

/// Serves every listener until shutdown starts; marks the listeners closed (for
/// `SHUTDOWN WAIT_FOR_CLIENTS`) once each has drained its backlog and closed, and so has every
/// per-core worker's (`workers`; empty with the work-stealing runtime).
pub async fn accept_all(
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    tasks: TaskTracker,
    workers: per_core::Accepting,
) {
    let loops: Vec<_> = (listeners.into_iter())
        .map(|listener| tokio::spawn(accept_loop(shared.clone(), listener, tasks.clone())))
        .collect();
    for one in loops {
        let _ = one.await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    shared.clients.close_listener();
}

/// Binds with SO_REUSEADDR, so a restart does not wait for TIME_WAIT sockets, and SO_REUSEPORT,
/// so a new tidepool can listen beside an old one that is draining (binary upgrade; the kernel
/// spreads new connections over both until the old one closes its listener) and per-core
/// workers can each have their own socket on one address. Non-blocking, not yet registered
/// with any runtime.
pub(crate) fn bind_tcp(addr: SocketAddr, only_v6: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && only_v6 {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts clients on one listener until shutdown starts (any stage, draining included); each
/// gets a task tracked by `tasks`.
///
/// At shutdown the listener is not simply dropped: with SO_REUSEPORT the kernel has already
/// queued connections on it (completed handshakes in its backlog), and closing it would reset
/// them, which a client sees as a refused connection during a binary upgrade. So the backlog is
/// accepted to the end first (those clients are served their first request, see `drain.rs`),
/// and only then is the listener closed; from that moment the kernel sends every new connection
/// to the other listener on the port. A Unix socket's path has already moved to the successor
/// (see `unix_socket.rs`); its backlog is drained the same way.
async fn accept_loop(shared: Arc<Shared>, listener: Listener, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.reached(Stage::DrainClients) => break,
        };
        match accepted {
            Ok((stream, peer)) => spawn_client(&shared, &tasks, stream, peer),
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let name = listener.describe();
    // Straight to the socket: the reactor may not have seen the latest arrivals yet.
    let drained = match listener {
        Listener::Tcp(tcp) => match tcp.into_std() {
            Ok(tcp) => drain_backlog(&shared, &tasks, || {
                let (stream, peer) = tcp.accept()?;
                stream.set_nonblocking(true)?;
                Ok((Stream::Plain(tokio::net::TcpStream::from_std(stream)?), peer))
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot drain the listen backlog");
                0
            }
        },
        Listener::Unix { listener, file, port } => {
            // The path goes first: nobody should connect to a socket about to close.
            file.remove();
            match listener.into_std() {
                Ok(unix) => drain_backlog(&shared, &tasks, || {
                    let (stream, _) = unix.accept()?;
                    stream.set_nonblocking(true)?;
                    Ok((Stream::Unix(UnixStream::from_std(stream)?), unix_peer(port)))
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drain the Unix socket backlog");
                    0
                }
            }
        }
    };
    tracing::info!(listener = %name, backlog = drained, "listener closed");
}

/// Accepts whatever the kernel has queued (`accept` on the non-blocking socket), without
/// waiting for more; returns how many were accepted. The socket closes when the caller drops it.
fn drain_backlog(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    mut accept: impl FnMut() -> std::io::Result<(Stream, SocketAddr)>,
) -> usize {
    let mut drained = 0;
    loop {
        match accept() {
            Ok((stream, peer)) => {
                drained += 1;
                spawn_client(shared, tasks, stream, peer);
            }
            // WouldBlock: the backlog is empty (the listener is non-blocking). Other errors (out
            // of descriptors, …) cannot be waited out during shutdown.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return drained,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed while draining the backlog");
                return drained;
            }
        }
    }
}
