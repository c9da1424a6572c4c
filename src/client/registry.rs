//! The list of logged-in clients, for SHOW CLIENTS, KILL_CLIENT and the metrics: a client
//! registers once after authentication and leaves when its ticket drops; what it is doing is an
//! atomic its session updates, so the data path takes no lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::time::Instant;

/// What a client is doing (PgBouncer's client states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Between transactions, holding no backend.
    Idle = 0,
    /// Sent a request and waits for a backend.
    Waiting = 1,
    /// Has a backend.
    Active = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// One logged-in client as the console sees it.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    pub application_name: String,
    pub tls: bool,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// Index of the node whose pool serves (or last served) it.
    node: AtomicU32,
    /// When it started waiting for a backend, in microseconds since the registry was made.
    waiting_since_us: AtomicU64,
    /// Backend id it is linked to; 0 for none.
    server: AtomicU64,
    /// Set by KILL_CLIENT / KILL: the session ends at once. A flag beside `attention`, not a
    /// cancellation token (whose tree node is one more allocation per client).
    killed: AtomicBool,
    /// The session's task, while it waits for a kill or idles (`ClientTicket::until`): woken
    /// when it is killed or the stop moves on, so its waits hold a waker here instead of
    /// subscriptions of their own (they are in one task: one waker serves them all).
    attention: atomic_waker::AtomicWaker,
}

impl ClientEntry {
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    pub fn node(&self) -> usize {
        self.node.load(Ordering::Relaxed) as usize
    }

    pub fn server(&self) -> Option<u64> {
        Some(self.server.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    /// Ends the client's session (KILL_CLIENT).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.attention.wake();
    }

    /// Wakes the session if it idles, to look at what changed (a shutdown stage).
    pub fn wake(&self) {
        self.attention.wake();
    }

    /// Resolves when the console kills this client.
    pub fn killed(&self) -> impl std::future::Future<Output = ()> + '_ {
        woken_when(&self.attention, || self.killed.load(Ordering::Acquire))
    }
}

/// Resolves once `due()` holds, looked at again whenever `waker` is woken: one waker
/// registration per poll, no lock.
fn woken_when<'a>(
    waker: &'a atomic_waker::AtomicWaker,
    due: impl Fn() -> bool + 'a,
) -> impl std::future::Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| {
        if due() {
            return std::task::Poll::Ready(());
        }
        waker.register(cx.waker());
        // A wake between the first look and the registration is not lost.
        if due() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// All logged-in clients of the process.
#[derive(Debug)]
pub struct ClientRegistry {
    map: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    next_id: AtomicU64,
    /// Origin of the `waiting_since_us` clocks.
    origin: Instant,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        ClientRegistry {
            map: Mutex::default(),
            next_id: AtomicU64::new(1),
            origin: Instant::now(),
        }
    }
}

/// What a new entry is made of.
pub struct NewClient<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    pub application_name: &'a str,
    pub tls: bool,
}

/// A client's place in the registry; dropping it deregisters.
#[derive(Debug)]
pub struct ClientTicket {
    entry: Arc<ClientEntry>,
    registry: Arc<ClientRegistry>,
}

impl ClientRegistry {
    /// Registers a logged-in client; it leaves the registry when the ticket drops.
    pub fn register(self: &Arc<Self>, new: NewClient<'_>) -> ClientTicket {
        let entry = Arc::new(ClientEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user: new.user.to_string(),
            database: new.database.to_string(),
            addr: new.addr,
            local_addr: new.local_addr,
            application_name: new.application_name.to_string(),
            tls: new.tls,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            node: AtomicU32::new(0),
            waiting_since_us: AtomicU64::new(0),
            server: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            attention: Default::default(),
        });
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(entry.id, entry.clone());
        ClientTicket {
            entry,
            registry: self.clone(),
        }
    }

    /// Every logged-in client, in id order.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }

    /// How long a waiting client has waited so far.
    pub fn waited(&self, entry: &ClientEntry) -> std::time::Duration {
        if entry.state() != ClientState::Waiting {
            return std::time::Duration::ZERO;
        }
        let since = entry.waiting_since_us.load(Ordering::Relaxed);
        let now = self.origin.elapsed().as_micros() as u64;
        std::time::Duration::from_micros(now.saturating_sub(since))
    }
}

impl ClientTicket {
    /// Resolves once `due()` holds, looked at again whenever the entry is woken
    /// ([`ClientEntry::wake`]). Costs one waker registration per wait, no lock.
    pub fn until<'a>(&'a self, due: impl Fn() -> bool + 'a) -> impl std::future::Future<Output = ()> + 'a {
        woken_when(&self.entry.attention, due)
    }

    pub fn entry(&self) -> &Arc<ClientEntry> {
        &self.entry
    }

    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// The client now waits for a backend of node `node`.
    pub fn waiting(&self, node: usize, now: Instant) {
        let us = now.saturating_duration_since(self.registry.origin).as_micros() as u64;
        self.entry.waiting_since_us.store(us, Ordering::Relaxed);
        self.entry.node.store(node as u32, Ordering::Relaxed);
        self.entry
            .state
            .store(ClientState::Waiting as u8, Ordering::Relaxed);
    }

    /// The client got backend `server` of node `node`.
    pub fn active(&self, node: usize, server: u64) {
        self.entry.server.store(server, Ordering::Relaxed);
        self.entry.node.store(node as u32, Ordering::Relaxed);
        self.entry
            .state
            .store(ClientState::Active as u8, Ordering::Relaxed);
    }

    /// The client gave its backend back.
    pub fn idle(&self) {
        self.entry.server.store(0, Ordering::Relaxed);
        self.entry.state.store(ClientState::Idle as u8, Ordering::Relaxed);
    }
}

impl Drop for ClientTicket {
    fn drop(&mut self) {
        let mut map = self.registry.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.entry.id);
    }
}
