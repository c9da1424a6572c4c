//! `runtime = "per_core"`: one current-thread tokio runtime per worker thread, each accepting
//! on its own SO_REUSEPORT socket of every TCP `listen` address, so the kernel spreads new
//! connections over the threads and a client's task never moves between them.
//!
//! Design note. Everything else stays on the main runtime (health checkers, janitor, metrics,
//! signals, the Unix socket). `Shared` is the same `Arc` on every thread, and so are the pools:
//! a pooled backend's socket stays registered with the reactor of the runtime that opened it,
//! so a client on another worker is woken across threads for that backend (the runtime that owns
//! it polls its reactor when it parks or between tasks). A worker's runtime lives until the
//! proxy is dropped (after `Proxy::shutdown_within` has closed the pools), so no socket outlives
//! the reactor it is registered with while the proxy is in use.

use crate::app::Shared;
use crate::listener::{accept_loop, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// The worker threads. Dropping this stops them (their runtimes, and any task left on them).
pub struct Workers {
    /// One per worker; dropped = the worker's runtime stops.
    _stop: Vec<oneshot::Sender<()>>,
}

/// What `start` hands back to the main accept task: one receiver per worker, resolved once
/// that worker's accept loops have drained their backlogs and closed.
pub type Accepting = Vec<oneshot::Receiver<()>>;

impl Workers {
    /// Starts `count` workers (at least one). Worker 0 takes `first` (the sockets the main
    /// thread bound, port 0 already resolved); every other worker binds its own socket to each
    /// of their addresses. `only_v6` tells, per address, whether its socket is IPv6-only.
    pub fn start(
        shared: &Arc<Shared>,
        first: Vec<(std::net::TcpListener, bool)>,
        count: usize,
        tasks: &TaskTracker,
    ) -> std::io::Result<(Workers, Accepting)> {
        let addrs: Vec<(SocketAddr, bool)> = (first.iter())
            .map(|(l, only_v6)| l.local_addr().map(|a| (a, *only_v6)))
            .collect::<std::io::Result<_>>()?;
        let mut per_worker = vec![first.into_iter().map(|(l, _)| l).collect::<Vec<_>>()];
        for _ in 1..count.max(1) {
            let bound = (addrs.iter())
                .map(|&(addr, only_v6)| super::bind_tcp(addr, only_v6))
                .collect::<std::io::Result<Vec<_>>>()?;
            per_worker.push(bound);
        }
        let mut stops = Vec::new();
        let mut accepting = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel();
            let (done, accepted) = oneshot::channel();
            let (shared, tasks) = (shared.clone(), tasks.clone());
            std::thread::Builder::new()
                .name(format!("tidepool-worker-{index}"))
                .spawn(move || runtime.block_on(serve(shared, listeners, tasks, done, stopped)))?;
            stops.push(stop);
            accepting.push(accepted);
        }
        Ok((Workers { _stop: stops }, accepting))
    }
}

/// One worker: its accept loops (clients spawned on this runtime), then idle until stopped so
/// that the sockets registered here keep their reactor.
async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    tasks: TaskTracker,
    done: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
) {
    let loops: Vec<_> = (listeners.into_iter())
        .filter_map(|l| match tokio::net::TcpListener::from_std(l) {
            Ok(tcp) => Some(tokio::spawn(accept_loop(
                shared.clone(),
                Listener::Tcp(tcp),
                tasks.clone(),
            ))),
            Err(e) => {
                tracing::error!(error = %e, "worker cannot register its listener");
                None
            }
        })
        .collect();
    drop(shared);
    for one in loops {
        let _ = one.await;
    }
    let _ = done.send(());
    // Sender dropped (the proxy is gone) or sent: either way, stop.
    let _ = stopped.await;
}
