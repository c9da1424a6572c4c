//! `auth_query`: users tidepool does not list, looked up in PostgreSQL as `auth_user`, with
//! answers cached for `auth_query_cache_ttl` and misses for `auth_query_miss_ttl`.
//!
//! Each lookup that misses the cache opens one connection to the first node, runs the query
//! with the user name bound as `$1` (never spliced into SQL), and closes it. The cache lives in
//! the snapshot's directory, so a reload starts afresh.

use super::directory::{unlisted_user, SecretSource, UserAuth};
use super::secret::Secret;
use crate::backend::{self, BackendError, BackendLogin, BackendSecret};
use crate::config::Config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Entries kept at most; beyond it, expired ones are dropped and new ones not cached, so
/// probing with random names cannot grow memory without bound.
const MAX_CACHED: usize = 10_000;

/// Backend connection ids for lookups, far from the pools' ids (logs only).
const FIRST_LOOKUP_ID: u64 = 1 << 62;

struct Cached {
    at: Instant,
    /// `None`: PostgreSQL has no such user (or no password for it).
    user: Option<Arc<UserAuth>>,
}

/// The auth_query source of one snapshot.
pub struct AuthQuery {
    /// Where lookups run, per cluster: its first node (the primary in a plain setup).
    nodes: std::collections::BTreeMap<String, Arc<str>>,
    login_user: String,
    secret: BackendSecret,
    sql: String,
    dbname: Option<String>,
    connect_timeout: Duration,
    ttl: Duration,
    miss_ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    ids: AtomicU64,
    /// `server_tls_mode` toward the node, as for pools.
    tls: crate::tls::BackendTls,
    keepalive: crate::config::Keepalive,
}

impl AuthQuery {
    /// `secret` is what tidepool proves to PostgreSQL for `auth_user`.
    pub fn new(
        config: &Config,
        login_user: String,
        secret: BackendSecret,
        tls: crate::tls::BackendTls,
    ) -> AuthQuery {
        AuthQuery {
            tls,
            keepalive: config.proxy.keepalive(),
            // Validation guarantees a node per cluster; the first is the primary in a plain setup.
            nodes: (config.cluster_names().into_iter())
                .filter_map(|name| {
                    let node = config.cluster_nodes(name)?.first()?;
                    Some((name.to_string(), Arc::from(node.address())))
                })
                .collect(),
            login_user,
            secret,
            sql: config.auth.auth_query.clone(),
            dbname: config.auth.auth_dbname.clone(),
            connect_timeout: config.pool.server_connect_timeout.0,
            ttl: config.auth.auth_query_cache_ttl.0,
            miss_ttl: config.auth.auth_query_miss_ttl.0,
            cache: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(FIRST_LOOKUP_ID),
        }
    }

    /// The user called `name`, from the cache or from PostgreSQL (run in `database` of
    /// `cluster` unless `auth_dbname` is set). Each cluster has its own users.
    pub async fn lookup(
        &self,
        name: &str,
        database: &str,
        cluster: &str,
    ) -> Result<Option<Arc<UserAuth>>, BackendError> {
        let Some(node) = self.nodes.get(cluster).or_else(|| self.nodes.values().next()) else {
            return Ok(None);
        };
        let key = format!("{cluster}\0{name}");
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let user = self.fetch(node, name, database).await?;
        self.store(&key, user.clone());
        Ok(user)
    }

    fn cached(&self, name: &str) -> Option<Option<Arc<UserAuth>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(name)?;
        let ttl = if entry.user.is_some() {
            self.ttl
        } else {
            self.miss_ttl
        };
        (entry.at.elapsed() < ttl).then(|| entry.user.clone())
    }

    fn store(&self, name: &str, user: Option<Arc<UserAuth>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let (ttl, miss_ttl) = (self.ttl, self.miss_ttl);
            cache.retain(|_, e| e.at.elapsed() < if e.user.is_some() { ttl } else { miss_ttl });
            if cache.len() >= MAX_CACHED {
                return;
            }
        }
        cache.insert(
            name.to_string(),
            Cached {
                at: Instant::now(),
                user,
            },
        );
    }

    async fn fetch(
        &self,
        node: &Arc<str>,
        name: &str,
        database: &str,
    ) -> Result<Option<Arc<UserAuth>>, BackendError> {
        let login = BackendLogin {
            user: self.login_user.clone(),
            database: self.dbname.clone().unwrap_or_else(|| database.to_string()),
            secret: self.secret.clone(),
            tls: self.tls.clone(),
            keepalive: self.keepalive,
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut conn = backend::connect(node, &login, &[], 0, id, self.connect_timeout).await?;
        let row = conn.query_first_row(&self.sql, &[name]).await;
        tokio::spawn(conn.terminate());
        let Some(stored) = row?.and_then(|r| r.into_iter().nth(1).flatten()) else {
            return Ok(None);
        };
        let secret = match Secret::parse(&stored) {
            Ok(secret) => secret,
            Err(reason) => {
                tracing::warn!(user = %name, "auth_query returned an unusable password: {reason}");
                return Ok(None);
            }
        };
        let config = unlisted_user(name);
        let user = if matches!(secret, Secret::Plain(_)) {
            // Deriving a SCRAM verifier costs thousands of hash rounds: not on async workers.
            tokio::task::spawn_blocking(move || UserAuth::new(config, Some(secret), SecretSource::AuthQuery))
                .await
                .map_err(|e| BackendError::Io {
                    addr: node.to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?
        } else {
            UserAuth::new(config, Some(secret), SecretSource::AuthQuery)
        };
        Ok(Some(Arc::new(user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> AuthQuery {
        let config = Config::from_toml(
            "[[nodes]]\nhost = \"127.0.0.1\"\n[databases.app]\n[auth]\nauth_user = \"a\"\n\
             auth_query_cache_ttl = \"60s\"\nauth_query_miss_ttl = \"5s\"\n",
        )
        .expect("valid");
        AuthQuery::new(&config, "a".into(), BackendSecret::None, Default::default())
    }

    fn user(name: &str) -> Arc<UserAuth> {
        Arc::new(UserAuth::new(
            unlisted_user(name),
            Some(Secret::Md5([7; 16])),
            SecretSource::AuthQuery,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn answers_and_misses_expire_after_their_own_ttl() {
        let q = query();
        assert!(q.cached("bob").is_none(), "nothing cached yet");
        q.store("bob", Some(user("bob")));
        q.store("ghost", None);
        assert!(matches!(q.cached("bob"), Some(Some(u)) if u.config.name == "bob"));
        assert!(matches!(q.cached("ghost"), Some(None)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(q.cached("ghost").is_none(), "a miss is remembered only briefly");
        assert!(q.cached("bob").is_some());
        tokio::time::advance(Duration::from_secs(55)).await;
        assert!(
            q.cached("bob").is_none(),
            "an answer expires after auth_query_cache_ttl"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let q = query();
        for i in 0..MAX_CACHED {
            q.store(&format!("probe{i}"), None);
        }
        // Full of fresh entries: a new one is not cached (it will simply be looked up again).
        q.store("late", Some(user("late")));
        assert!(q.cached("late").is_none());
        // Once the misses expired, they make room.
        tokio::time::advance(Duration::from_secs(6)).await;
        q.store("late", Some(user("late")));
        assert!(q.cached("late").is_some());
        assert_eq!(q.cache.lock().unwrap().len(), 1);
    }
}
