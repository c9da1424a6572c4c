//! Binding the client listeners: every `listen` address (SO_REUSEADDR, SO_REUSEPORT, dual
//! stack unless IPv4 is listed too) and the Unix socket; with `runtime = "per_core"`, the
//! workers that take the TCP listeners over.

use super::AppError;
use crate::listener;
use crate::listener::per_core::Workers;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds every `listen` address, then the Unix socket named after the first one's port (port
/// 0 resolved); returns the listeners and the first address.
pub(super) fn bind_all(
    proxy: &crate::config::ProxyConfig,
) -> Result<(Vec<listener::Listener>, SocketAddr), AppError> {
    let mut listeners = Vec::new();
    let mut first = None;
    for &addr in proxy.listen.all() {
        let std_listener = listener::bind_tcp(addr, only_v6(proxy, addr))
            .map_err(|source| AppError::Listen { addr, source })?;
        let tcp = TcpListener::from_std(std_listener).map_err(|source| AppError::Listen { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| AppError::Listen { addr, source })?;
        first.get_or_insert(local);
        listeners.push(listener::Listener::Tcp(tcp));
    }
    let first = first.expect("listen is never empty");
    if let Some(unix) = proxy.unix_socket() {
        let (std_listener, file) = crate::listener::unix_socket::bind(&unix, first.port())?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(|source| {
            crate::listener::unix_socket::UnixSocketError::Io {
                path: file.path.clone(),
                source,
            }
        })?;
        listeners.push(listener::Listener::Unix {
            listener,
            file,
            port: first.port(),
        });
    }
    Ok((listeners, first))
}

/// `[::]:p` is dual-stack unless `0.0.0.0:p` (or another IPv4 address on p) is listed too.
pub(super) fn only_v6(proxy: &crate::config::ProxyConfig, addr: SocketAddr) -> bool {
    addr.is_ipv6()
        && (proxy.listen.all().iter()).any(|a| a.is_ipv4() && a.port() == addr.port() && addr.port() != 0)
}

/// With `runtime = "per_core"`, hands the TCP listeners to per-core workers (the Unix socket
/// stays here) and starts them; with the work-stealing runtime, leaves everything here.
pub(super) fn start_workers(
    shared: &std::sync::Arc<super::Shared>,
    listeners: &mut Vec<listener::Listener>,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(Option<Workers>, listener::per_core::Accepting), AppError> {
    let proxy = &shared.snapshot().config.proxy;
    if proxy.runtime != crate::config::RuntimeMode::PerCore {
        return Ok((None, Vec::new()));
    }
    let count = match proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut tcp = Vec::new();
    for one in std::mem::take(listeners) {
        match one {
            listener::Listener::Tcp(t) => {
                let addr = t.local_addr().map_err(|source| AppError::Workers { source })?;
                let std_listener = t.into_std().map_err(|source| AppError::Workers { source })?;
                tcp.push((std_listener, only_v6(proxy, addr)));
            }
            unix => listeners.push(unix),
        }
    }
    let (workers, accepting) =
        Workers::start(shared, tcp, count, tasks).map_err(|source| AppError::Workers { source })?;
    tracing::info!(workers = count, "per-core runtimes started");
    Ok((Some(workers), accepting))
}
