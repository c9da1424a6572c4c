//! Databases served through the `*` entry: opened on a client's first login, bounded in
//! number, closed once no client has used them for `autodb_idle_timeout`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The databases `*` serves right now, with when each was last seen in use.
#[derive(Debug, Default)]
pub struct AutoDatabases {
    open: Mutex<BTreeMap<String, Instant>>,
}

/// A client asked for one database more than `max_auto_databases` allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many databases served through \"*\" (max_auto_databases = {max})")]
pub struct TooManyDatabases {
    pub max: usize,
}

impl AutoDatabases {
    /// Opens `name` (or marks it used now) unless `max` databases are open already (0 = no
    /// bound).
    pub fn admit(&self, name: &str, max: usize) -> Result<(), TooManyDatabases> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(seen) = open.get_mut(name) {
            *seen = now;
            return Ok(());
        }
        if max != 0 && open.len() >= max {
            return Err(TooManyDatabases { max });
        }
        open.insert(name.to_string(), now);
        Ok(())
    }

    /// The open databases, by name.
    pub fn names(&self) -> Vec<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.keys().cloned().collect()
    }

    /// Marks the databases `in_use` says are used as seen now, then closes (forgets and
    /// returns) those unused for longer than `idle`. `idle` zero: never close.
    pub fn expire(&self, in_use: impl Fn(&str) -> bool, idle: Duration) -> Vec<String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut closed = Vec::new();
        open.retain(|name, seen| {
            if in_use(name) {
                *seen = now;
            } else if !idle.is_zero() && now.duration_since(*seen) >= idle {
                closed.push(name.clone());
                return false;
            }
            true
        });
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_counts_distinct_names() {
        let auto = AutoDatabases::default();
        assert_eq!(auto.admit("a", 2), Ok(()));
        assert_eq!(auto.admit("a", 2), Ok(()));
        assert_eq!(auto.admit("b", 2), Ok(()));
        assert_eq!(auto.admit("c", 2), Err(TooManyDatabases { max: 2 }));
        assert_eq!(auto.admit("c", 0), Ok(()));
        assert_eq!(auto.names(), ["a", "b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unused_databases_close_after_the_idle_timeout() {
        let auto = AutoDatabases::default();
        auto.admit("busy", 0).unwrap();
        auto.admit("quiet", 0).unwrap();
        let idle = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(auto.expire(|name| name == "busy", idle).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(auto.expire(|name| name == "busy", idle), ["quiet"]);
        // Seen in use a moment ago: it has its whole idle time again.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(auto.expire(|_| false, idle).is_empty());
        assert!(auto.expire(|_| false, Duration::ZERO).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(auto.expire(|_| false, idle), ["busy"]);
        assert!(auto.names().is_empty());
    }
}
