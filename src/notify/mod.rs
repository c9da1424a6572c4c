//! LISTEN/NOTIFY in transaction mode without pinning: one dedicated server connection per pool
//! LISTENs on the union of the channels its clients listen to, and fans each notification out
//! to the inboxes of the clients subscribed to that channel.
//!
//! Design: a `Hub` per pool holds the subscriptions (channel → client inboxes) under a mutex
//! never held across `.await`, and one task owns the listener connection. Clients subscribe
//! first, then ask the task to LISTEN and wait for its answer, so a NOTIFY committed after the
//! client's LISTEN returned always reaches it. The task UNLISTENs a channel once nobody is left
//! on it (checked again under the lock, so a client subscribing meanwhile keeps it), and closes
//! its connection when no channel is left. If the connection fails, the task reconnects and
//! LISTENs again to every channel with subscribers; notifications sent in between are lost.
//! Each client's inbox is bounded (`INBOX_LIMIT`); the session delivers it when the client is
//! between transactions, as PostgreSQL does. NOTIFY itself is an ordinary statement.

pub(crate) mod senders;

use crate::backend::{self, BackendConn, BackendError};
use crate::pool::{Pool, PoolKey};
use crate::protocol::backend_msg::read_cstr;
use crate::protocol::{frontend_msg, tag, Frame};
use crate::shutdown::Stage;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

/// Notifications kept per client while it is busy; beyond this, new ones are dropped (logged).
pub const INBOX_LIMIT: usize = 10_000;
/// Wait between attempts to reopen a failed listener connection.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// One client's pending notifications (whole NotificationResponse frames).
#[derive(Debug, Default)]
pub struct Inbox {
    queue: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    dropped: AtomicU64,
}

impl Inbox {
    fn push(&self, frame: Bytes) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= INBOX_LIMIT {
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("a client's notification inbox is full; dropping notifications");
            }
            return;
        }
        queue.push_back(frame);
        drop(queue);
        self.ready.notify_one();
    }

    /// Moves every pending notification to `out`.
    pub fn drain_into(&self, out: &mut BytesMut) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for frame in queue.drain(..) {
            out.extend_from_slice(&frame);
        }
    }

    /// Resolves when a notification arrives (or one arrived since the last wait).
    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

enum Command {
    /// LISTEN on the channel if not yet; answers whether the channel is listened to.
    Listen(String, oneshot::Sender<bool>),
    /// UNLISTEN the channel if nobody is subscribed any more.
    Unlisten(String),
}

/// The listener of one pool.
pub struct Hub {
    subscribers: Mutex<HashMap<String, HashMap<u64, Arc<Inbox>>>>,
    /// Which clients ran on each backend lately: a notification sent from one of tidepool's
    /// backends carries the pid (its BackendKeyData) of the client that sent it
    /// (`notify_senders.rs`), not the backend's.
    users: Arc<senders::BackendUsers>,
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
}

impl Hub {
    /// A new subscriber id.
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Arc<Inbox>>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `inbox` to `channel` and waits until the listener connection LISTENs on it.
    /// False when it cannot (the server is unreachable): the subscription is undone.
    pub async fn subscribe(&self, id: u64, inbox: &Arc<Inbox>, channel: &str) -> bool {
        self.lock()
            .entry(channel.to_string())
            .or_default()
            .insert(id, inbox.clone());
        let (tx, rx) = oneshot::channel();
        let listening = self
            .commands
            .send(Command::Listen(channel.to_string(), tx))
            .is_ok()
            && rx.await.unwrap_or(false);
        if !listening {
            self.unsubscribe(id, channel);
        }
        listening
    }

    /// Takes `id` off `channel`; the listener UNLISTENs once nobody is left.
    pub fn unsubscribe(&self, id: u64, channel: &str) {
        let mut subscribers = self.lock();
        let Some(set) = subscribers.get_mut(channel) else {
            return;
        };
        set.remove(&id);
        if set.is_empty() {
            subscribers.remove(channel);
            drop(subscribers);
            let _ = self.commands.send(Command::Unlisten(channel.to_string()));
        }
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    fn wanted(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Hands a NotificationResponse to every client on its channel.
    fn dispatch(&self, frame: &Frame) {
        let Some((channel, _)) = frame.body.get(4..).and_then(read_cstr) else {
            return;
        };
        let subscribers = self.lock();
        let Some(set) = subscribers.get(channel) else {
            return;
        };
        let mut whole = BytesMut::with_capacity(frame.body.len() + 5);
        frame.write_to(&mut whole);
        let backend_pid = i32::from_be_bytes([frame.body[0], frame.body[1], frame.body[2], frame.body[3]]);
        if let Some(client_pid) = self.users.client_of(backend_pid) {
            whole[5..9].copy_from_slice(&client_pid.to_be_bytes());
        }
        let whole = whole.freeze();
        for inbox in set.values() {
            inbox.push(whole.clone());
        }
    }
}

/// The hubs of every pool, created on first LISTEN.
#[derive(Default)]
pub struct NotifyHubs {
    hubs: Mutex<HashMap<PoolKey, Arc<Hub>>>,
}

impl NotifyHubs {
    /// The hub of `pool`, starting its listener task on first use.
    /// `users` says which clients ran on each backend lately (the cancel registry's).
    pub fn hub(
        &self,
        pool: &Arc<Pool>,
        users: &Arc<senders::BackendUsers>,
        shutdown: watch::Receiver<Stage>,
    ) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hub) = hubs.get(&pool.key) {
            return hub.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            subscribers: Mutex::new(HashMap::new()),
            users: users.clone(),
            commands: tx,
            next_id: AtomicU64::new(1),
        });
        hubs.insert(pool.key.clone(), hub.clone());
        tokio::spawn(run_listener(hub.clone(), pool.clone(), rx, shutdown));
        hub
    }
}

/// What woke the listener task.
enum Event {
    Stop,
    Command(Command),
    Frame(Result<Frame, BackendError>),
    Retry,
}

/// The task owning a hub's listener connection.
async fn run_listener(
    hub: Arc<Hub>,
    pool: Arc<Pool>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<Stage>,
) {
    let mut conn: Option<BackendConn> = None;
    let mut active: HashSet<String> = HashSet::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let event = {
            let read = async {
                match conn.as_mut() {
                    Some(c) => c.read_frame().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A graceful drain keeps delivering to the clients still being served.
                _ = shutdown.wait_for(|stage| *stage == Stage::Fast) => Event::Stop,
                command = commands.recv() => command.map_or(Event::Stop, Event::Command),
                frame = read => Event::Frame(frame),
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => Event::Retry,
            }
        };
        match event {
            Event::Stop => break,
            Event::Frame(Ok(frame)) => {
                if frame.tag == tag::NOTIFICATION_RESPONSE {
                    hub.dispatch(&frame);
                }
            }
            Event::Frame(Err(e)) => {
                tracing::warn!(pool = %pool.key, error = %e, "LISTEN connection lost; reconnecting");
                conn = None;
                active.clear();
                retry_at = Some(Instant::now());
            }
            Event::Retry => {
                retry_at = None;
                let wanted = hub.wanted();
                if wanted.is_empty() {
                    continue;
                }
                for channel in wanted {
                    if !listen(&hub, &pool, &mut conn, &mut active, &channel).await {
                        retry_at = Some(Instant::now() + RECONNECT_DELAY);
                        break;
                    }
                }
            }
            Event::Command(Command::Listen(channel, done)) => {
                let ok = listen(&hub, &pool, &mut conn, &mut active, &channel).await;
                let _ = done.send(ok);
            }
            Event::Command(Command::Unlisten(channel)) => {
                if hub.has_subscribers(&channel) || !active.remove(&channel) {
                    continue;
                }
                if active.is_empty() {
                    // Nobody listens any more: give the server its connection back.
                    if let Some(c) = conn.take() {
                        c.terminate().await;
                    }
                    continue;
                }
                if let Some(c) = conn.as_mut() {
                    let sql = format!("UNLISTEN {}", crate::backend::quote_ident(&channel));
                    if run(&hub, c, &sql).await.is_err() {
                        conn = None;
                        active.clear();
                        retry_at = Some(Instant::now());
                    }
                }
            }
        }
    }
    if let Some(c) = conn {
        c.terminate().await;
    }
}

/// Makes the listener connection LISTEN on `channel` (opening it if needed).
async fn listen(
    hub: &Hub,
    pool: &Pool,
    conn: &mut Option<BackendConn>,
    active: &mut HashSet<String>,
    channel: &str,
) -> bool {
    if active.contains(channel) {
        return true;
    }
    if conn.is_none() {
        let settings = pool.settings();
        match backend::connect(
            &settings.addr,
            &settings.login,
            &[],
            0,
            0,
            settings.connect_timeout,
        )
        .await
        {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(pool = %pool.key, error = %e, "cannot open the LISTEN connection");
                return false;
            }
        }
    }
    let c = conn.as_mut().expect("opened above");
    let sql = format!("LISTEN {}", crate::backend::quote_ident(channel));
    match run(hub, c, &sql).await {
        Ok(true) => {
            active.insert(channel.to_string());
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(pool = %pool.key, error = %e, "LISTEN connection lost");
            *conn = None;
            active.clear();
            false
        }
    }
}

/// Runs one statement on the listener connection, dispatching notifications that arrive
/// meanwhile. Ok(false) when the server refused it.
async fn run(hub: &Hub, conn: &mut BackendConn, sql: &str) -> Result<bool, BackendError> {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    frontend_msg::query(&mut out, sql);
    conn.write_all(&out).await?;
    let mut ok = true;
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag {
            tag::NOTIFICATION_RESPONSE => hub.dispatch(&frame),
            tag::ERROR_RESPONSE => ok = false,
            _ => {}
        }
        if conn.observe(&frame) {
            return Ok(ok);
        }
    }
}

/// A client's subscriptions; dropping it unsubscribes everything.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub inbox: Arc<Inbox>,
    channels: HashSet<String>,
}

impl Subscription {
    pub fn new(hub: Arc<Hub>) -> Self {
        Subscription {
            id: hub.new_id(),
            hub,
            inbox: Arc::default(),
            channels: HashSet::new(),
        }
    }

    /// LISTEN; false when the listener cannot.
    pub async fn listen(&mut self, channel: &str) -> bool {
        if self.channels.contains(channel) {
            return true;
        }
        if !self.hub.subscribe(self.id, &self.inbox, channel).await {
            return false;
        }
        self.channels.insert(channel.to_string());
        true
    }

    pub fn unlisten(&mut self, channel: &str) {
        if self.channels.remove(channel) {
            self.hub.unsubscribe(self.id, channel);
        }
    }

    pub fn unlisten_all(&mut self) {
        for channel in std::mem::take(&mut self.channels) {
            self.hub.unsubscribe(self.id, &channel);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unlisten_all();
    }
}

/// In a pinned client's server input (from `start`, a frame boundary): NotificationResponses
/// sent by its own backend (`backend_pid`) get the pid the client was given, as the hub does
/// for notifications it fans out. Only whole frames are looked at; the relay waits for whole
/// NotificationResponses while this applies.
pub fn rewrite_own_pids(buf: &mut BytesMut, mut start: usize, backend_pid: i32, client_pid: i32) {
    if backend_pid == client_pid {
        return;
    }
    while let Some(header) = buf.get(start..start + 5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let Some(end) = start
            .checked_add(1 + len)
            .filter(|&end| len >= 4 && end <= buf.len())
        else {
            return;
        };
        if header[0] == tag::NOTIFICATION_RESPONSE
            && len >= 8
            && buf[start + 5..start + 9] == backend_pid.to_be_bytes()
        {
            buf[start + 5..start + 9].copy_from_slice(&client_pid.to_be_bytes());
        }
        start = end;
    }
}

/// A NotificationResponse frame (tests).
#[cfg(test)]
fn notification(pid: i32, channel: &str, payload: &str) -> Frame {
    use bytes::BufMut;
    let mut body = BytesMut::new();
    body.put_i32(pid);
    crate::protocol::backend_msg::put_cstr(&mut body, channel);
    crate::protocol::backend_msg::put_cstr(&mut body, payload);
    Frame {
        tag: tag::NOTIFICATION_RESPONSE,
        body: body.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> (Arc<Hub>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            subscribers: Mutex::default(),
            users: Arc::default(),
            commands: tx,
            next_id: AtomicU64::new(1),
        });
        (hub, rx)
    }

    #[test]
    fn own_backend_pids_are_rewritten_in_whole_frames_only() {
        let mut buf = BytesMut::new();
        for pid in [7, 8, 7] {
            notification(pid, "c", "p").write_to(&mut buf);
        }
        let whole = buf.len();
        notification(7, "c", "cut").write_to(&mut buf);
        buf.truncate(buf.len() - 2);
        rewrite_own_pids(&mut buf, 0, 7, 42);
        let pids: Vec<i32> = [0, 13, 26, 39]
            .iter()
            .map(|&at| i32::from_be_bytes(buf[at + 5..at + 9].try_into().unwrap()))
            .collect();
        assert_eq!(whole, 39);
        assert_eq!(pids, [42, 8, 42, 7], "the incomplete last frame is left alone");
    }

    #[test]
    fn notifications_reach_only_their_channel_subscribers() {
        let (hub, _rx) = hub();
        let (a, b) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
        hub.lock().entry("jobs".into()).or_default().insert(1, a.clone());
        hub.lock().entry("jobs".into()).or_default().insert(2, b.clone());
        hub.lock().entry("other".into()).or_default().insert(2, b.clone());
        hub.dispatch(&notification(7, "jobs", "x"));
        hub.dispatch(&notification(7, "other", "y"));
        hub.dispatch(&notification(7, "nobody", "z"));
        let (mut out_a, mut out_b) = (BytesMut::new(), BytesMut::new());
        a.drain_into(&mut out_a);
        b.drain_into(&mut out_b);
        assert_eq!(out_a.iter().filter(|&&c| c == b'A').count(), 1);
        assert!(out_b.len() > out_a.len());
        assert!(out_b.windows(5).any(|w| w == b"other"));
        assert!(!out_a.windows(5).any(|w| w == b"other"));
    }

    #[test]
    fn the_last_unsubscriber_unlistens_and_inboxes_are_bounded() {
        let (hub, mut rx) = hub();
        let inbox = Arc::new(Inbox::default());
        hub.lock().entry("c".into()).or_default().insert(1, inbox.clone());
        hub.lock().entry("c".into()).or_default().insert(2, inbox.clone());
        hub.unsubscribe(1, "c");
        assert!(rx.try_recv().is_err(), "still one subscriber");
        hub.unsubscribe(2, "c");
        assert!(matches!(rx.try_recv(), Ok(Command::Unlisten(c)) if c == "c"));
        for _ in 0..INBOX_LIMIT + 5 {
            inbox.push(Bytes::from_static(b"A"));
        }
        let mut out = BytesMut::new();
        inbox.drain_into(&mut out);
        assert_eq!(out.len(), INBOX_LIMIT);
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 5);
    }
}
