//! Cancel requests: each client gets its own key; a CancelRequest carrying it is forwarded to
//! the backend running that client's query right now, with that backend's real key, and to
//! nothing otherwise (a late cancel must never hit another client's query). Each forwarded
//! request has a connection of its own to PostgreSQL (not pooled), held until PostgreSQL
//! closes it, which is when it has processed the request, as libpq waits for.

use crate::backend::BackendKey;
pub use crate::pool::CancelCounts;
use crate::protocol::startup::encode_cancel;
use bytes::BytesMut;
use rand::RngExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The key a client received in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub pid: i32,
    pub secret: i32,
}

/// Where a client's query is running, if anywhere.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: Arc<str>,
    pub key: BackendKey,
}

/// One phase of one cancel request, counted while it lasts (also when the future is dropped).
struct Phase<'a>(&'a AtomicUsize);

impl<'a> Phase<'a> {
    fn enter(counter: &'a AtomicUsize) -> Phase<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Phase(counter)
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub use crate::notify::senders::BackendUsers;

/// Shared between a session (which updates it at every checkout and release) and the registry.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<CancelTarget>>,
    /// The client is queued for a backend: a cancel takes it out of the queue.
    waiting: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    /// The counters of the client's pool.
    counts: Arc<CancelCounts>,
    /// The backend key in `target` (pid and secret in one word; 0: none), so that setting the
    /// same backend again (every request) takes no lock.
    current: AtomicU64,
}

impl CancelSlot {
    /// Runs `wait` (a pool checkout) until it ends or a cancel request for this client arrives;
    /// `None` means cancelled. Cancels arriving outside this window do nothing.
    pub async fn cancellable<T>(&self, wait: impl std::future::Future<Output = T>) -> Option<T> {
        let notified = self.wake.notified();
        tokio::pin!(notified);
        // Registered before `waiting` is visible, so no cancel can slip between the two.
        notified.as_mut().enable();
        self.waiting.store(true, Ordering::SeqCst);
        let result = tokio::select! {
            biased;
            value = wait => Some(value),
            _ = notified => None,
        };
        self.waiting.store(false, Ordering::SeqCst);
        result
    }

    fn cancel_wait(&self) -> bool {
        if self.waiting.load(std::sync::atomic::Ordering::SeqCst) {
            self.wake.notify_waiters();
            return true;
        }
        false
    }

    pub fn set(&self, target: Option<CancelTarget>) {
        let key = target.as_ref().map_or(0, |t| {
            (u64::from(t.key.pid as u32) << 32) | u64::from(t.key.secret as u32)
        });
        if self.current.swap(key, Ordering::Relaxed) == key {
            return;
        }
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Points the slot at the backend `addr` / `key`: one atomic swap when it points there
    /// already (every request of a client keeping its backend); the address is copied only
    /// when the backend changed.
    pub fn arm(&self, addr: &Arc<str>, key: BackendKey) {
        let word = (u64::from(key.pid as u32) << 32) | u64::from(key.secret as u32);
        if self.current.swap(word, Ordering::Relaxed) == word {
            return;
        }
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(CancelTarget {
            addr: addr.clone(),
            key,
        });
    }

    fn get(&self) -> Option<CancelTarget> {
        self.target.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// All live client keys.
#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<ClientKey, Arc<CancelSlot>>>,
    /// `peers.instance_id`, written into every secret (0: peering off).
    instance_id: u8,
    /// Which client last ran on each backend (for notifications).
    pub users: Arc<BackendUsers>,
}

/// Removes the key when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: ClientKey,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl CancelRegistry {
    /// A registry whose keys carry `instance_id` (see `peers`).
    pub fn with_instance(instance_id: u8) -> Self {
        CancelRegistry {
            clients: Mutex::default(),
            instance_id,
            users: Arc::default(),
        }
    }

    /// Registers a new client. `pid` is the real backend pid in session mode (so that
    /// `pg_backend_pid()` matches); otherwise a random one is drawn. The secret is always ours,
    /// drawn from the OS CSPRNG. Its cancel requests are counted in `counts` (its pool's).
    pub fn register(self: &Arc<Self>, pid: Option<i32>, counts: Arc<CancelCounts>) -> Registration {
        let mut rng = rand::rng();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let key = loop {
            let key = ClientKey {
                pid: pid.unwrap_or_else(|| rng.random_range(1..i32::MAX)),
                secret: crate::client::peers::mark_secret(rng.random(), self.instance_id),
            };
            if !clients.contains_key(&key) {
                break key;
            }
        };
        let slot = Arc::new(CancelSlot {
            counts,
            ..CancelSlot::default()
        });
        clients.insert(key, slot.clone());
        Registration {
            registry: self.clone(),
            key,
            slot,
        }
    }

    /// Forwards a cancel for `key` to the backend now serving that client. Unknown keys and idle
    /// clients are ignored, as PostgreSQL ignores bad cancel keys. False when the key is unknown
    /// here (it may be a peer's).
    pub async fn cancel(&self, key: ClientKey) -> bool {
        let slot = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let Some(slot) = slot else {
            tracing::debug!(pid = key.pid, "cancel request with an unknown key here");
            return false;
        };
        let Some(target) = slot.get() else {
            if !slot.cancel_wait() {
                tracing::debug!(pid = key.pid, "cancel request for no running query; ignored");
            }
            return true;
        };
        if let Err(e) = send_cancel(&target, &slot.counts).await {
            tracing::warn!(node = %target.addr, error = %e, "sending cancel request failed");
        }
        true
    }
}

/// Sends a CancelRequest for `target` on tidepool's own behalf (an abandoned request, a peer's
/// key); failures are logged, as there is no one to tell. Not counted in any pool.
pub async fn send_cancel_to(target: &CancelTarget, counts: &CancelCounts) {
    if let Err(e) = send_cancel(target, counts).await {
        tracing::warn!(node = %target.addr, error = %e, "sending cancel request failed");
    }
}

/// How long each step of forwarding a cancel may take.
const CANCEL_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn send_cancel(target: &CancelTarget, counts: &CancelCounts) -> std::io::Result<()> {
    let timed_out =
        |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"));
    let connecting = Phase::enter(&counts.waiting);
    let mut stream = tokio::time::timeout(CANCEL_STEP_TIMEOUT, TcpStream::connect(&*target.addr))
        .await
        .map_err(|_| timed_out("connect"))??;
    drop(connecting);
    let _active = Phase::enter(&counts.active);
    let mut out = BytesMut::with_capacity(16);
    encode_cancel(target.key.pid, target.key.secret, &mut out);
    stream.write_all(&out).await?;
    // PostgreSQL answers nothing and closes the connection once it has processed the request.
    let mut rest = [0u8; 64];
    tokio::time::timeout(CANCEL_STEP_TIMEOUT, async {
        while stream.read(&mut rest).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await
    .map_err(|_| timed_out("waiting for the server to close the cancel connection"))??;
    Ok(())
}
