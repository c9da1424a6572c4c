//! Binding the client listeners: every `listen` address (SO_REUSEADDR, SO_REUSEPORT, dual
//! stack unless IPv4 is listed too) and the Unix socket.

use super::AppError;
use crate::listener;
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
        // `[::]:p` is dual-stack unless `0.0.0.0:p` (or another IPv4 address on p) is listed too.
        let only_v6 =
            (proxy.listen.all().iter()).any(|a| a.is_ipv4() && a.port() == addr.port() && addr.port() != 0);
        let tcp = bind(addr, only_v6).map_err(|source| AppError::Listen { addr, source })?;
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

/// Binds with SO_REUSEADDR, so a restart does not wait for TIME_WAIT sockets, and SO_REUSEPORT,
/// so a new tidepool can listen beside an old one that is draining (binary upgrade; the kernel
/// spreads new connections over both until the old one closes its listener).
fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            if only_v6 {
                socket2::SockRef::from(&socket).set_only_v6(true)?;
            }
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
