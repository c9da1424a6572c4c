//! Per-database switches the admin console flips: paused (new checkouts wait), disabled (new
//! logins refused), and the reconnect epoch (older backends close at their next release).
//!
//! The data path reads two atomics per checkout (its database's flag and the global one); only
//! a paused checkout touches the `watch` channel it waits on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The switches of one database (or, for [`DbControls::global`], of all of them).
#[derive(Debug)]
pub struct DbControl {
    pub name: String,
    paused: AtomicBool,
    /// Mirrors `paused` for waiters; written only by the console.
    resumed: watch::Sender<bool>,
    disabled: AtomicBool,
    /// Backends opened under an older epoch are closed when next released.
    epoch: AtomicU64,
}

impl DbControl {
    fn new(name: &str) -> Self {
        DbControl {
            name: name.to_string(),
            paused: AtomicBool::new(false),
            resumed: watch::channel(true).0,
            disabled: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.resumed.send_replace(!paused);
    }

    /// Resolves once the database is not paused (at once if it is not).
    pub async fn wait_resumed(&self) {
        let mut rx = self.resumed.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|resumed| *resumed).await;
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Acquire)
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks every backend opened so far for closing at release (RECONNECT).
    pub fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Every database's switches, created on first use, plus the process-wide ones.
#[derive(Debug)]
pub struct DbControls {
    map: Mutex<BTreeMap<String, Arc<DbControl>>>,
    /// PAUSE / SUSPEND without a database name.
    pub global: Arc<DbControl>,
    /// SUSPEND is in force (shown by SHOW STATE).
    pub suspended: AtomicBool,
}

impl Default for DbControls {
    fn default() -> Self {
        DbControls {
            map: Mutex::default(),
            global: Arc::new(DbControl::new("*")),
            suspended: AtomicBool::new(false),
        }
    }
}

impl DbControls {
    /// The switches of `database`, created (all off) on first use.
    pub fn get(&self, database: &str) -> Arc<DbControl> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(database.to_string())
            .or_insert_with(|| Arc::new(DbControl::new(database)))
            .clone()
    }

    /// Every database's switches known so far.
    pub fn all(&self) -> Vec<Arc<DbControl>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// True when checkouts for `db` must wait.
    pub fn paused(&self, db: &DbControl) -> bool {
        db.is_paused() || self.global.is_paused()
    }
}
