//! Hot reload: re-read the configuration file, validate it, and swap the snapshot; on any error
//! the running configuration stays.
//!
//! Order (build, validate, diff, swap, retire):
//! 1. parse and validate the file (`Config::load`), then build the new `Snapshot` on a blocking
//!    thread (SCRAM verifiers, classifier, whatever else other modules derive); any error
//!    stops here and nothing changed;
//! 2. for each cluster whose nodes (or health settings, Patroni endpoints, or the login the
//!    checkers use) changed, start new health checkers, so that their view exists before any session sees the new nodes;
//! 3. swap the snapshot: new logins and every session's next transaction use it (sessions
//!    take one snapshot per transaction);
//! 4. swap the checkers and stop the old ones;
//! 5. bring existing pools in line: new sizes and timeouts in place; pools whose backend
//!    settings changed (address, backend user, password, dbname, pool mode) or whose database,
//!    user or node is gone are retired: idle connections close now, busy ones when released,
//!    and no client is cut off.
//!
//! Keys that cannot change while running are reported in [`ReloadReport::notes`] and logged.

use crate::app::{self, AppError, Shared, Snapshot};
use crate::config::{Config, ConfigError};
use crate::pool::PoolSettings;
use std::sync::Arc;

/// What a successful reload changed, and what it could not change at runtime.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// One line per note, e.g. "listen cannot change at runtime; restart to apply".
    pub notes: Vec<String>,
    /// Pools given new sizes or timeouts.
    pub pools_updated: usize,
    /// Pools retired (backend settings changed, or their database, user or node is gone).
    pub pools_retired: usize,
    /// Some cluster's health checkers were restarted (new nodes or health settings) or stopped.
    pub health_restarted: bool,
}

/// Why a reload was refused (the running configuration is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload: the proxy was started from a configuration in memory")]
    NoConfigFile,
    /// The file cannot be read, parsed or validated; the message names the key.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// What the snapshot derives from the config (user secrets, classifier, …) failed.
    #[error("{0}")]
    Build(#[from] AppError),
    #[error("reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Re-reads the configuration the proxy was started from (SIGHUP, admin `RELOAD`).
pub async fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let loaded = match shared.config_path() {
        None => Err(ReloadError::NoConfigFile),
        Some(path) => {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || Config::load(&path))
                .await
                .map_err(ReloadError::from)
                .and_then(|r| r.map_err(ReloadError::from))
        }
    };
    match loaded {
        Ok(config) => apply(shared, config).await,
        Err(error) => {
            tracing::error!(%error, "reload refused; the running configuration stays");
            Err(error)
        }
    }
}

/// Applies an already parsed configuration (admin `SET`, or `reload` after reading the file);
/// it is validated again, so a `SET` to an invalid value is refused with the key's error.
pub async fn apply(shared: &Arc<Shared>, config: Config) -> Result<ReloadReport, ReloadError> {
    let result = apply_inner(shared, config).await;
    match &result {
        Ok(report) => {
            for note in &report.notes {
                tracing::warn!("reload: {note}");
            }
            tracing::info!(
                pools_updated = report.pools_updated,
                pools_retired = report.pools_retired,
                health_restarted = report.health_restarted,
                "configuration reloaded"
            );
        }
        Err(error) => tracing::error!(%error, "reload refused; the running configuration stays"),
    }
    result
}

async fn apply_inner(shared: &Arc<Shared>, config: Config) -> Result<ReloadReport, ReloadError> {
    // Admin `SET` builds its config by editing a copy: validate here too (cheap).
    config.validate()?;
    // Concurrent reloads would each diff against the same old snapshot.
    let _one_at_a_time = shared.reload_lock.lock().await;
    let old = shared.snapshot();
    let mut report = ReloadReport {
        notes: fixed_key_notes(&old.config, &config),
        ..ReloadReport::default()
    };
    // 1. Build (validation happened when the config was parsed).
    let new = tokio::task::spawn_blocking(move || app::build_snapshot(config)).await??;

    // 2. New checkers for each cluster whose checked nodes or health settings changed.
    let (healths, started) = next_healths(shared, &old, &new);

    // 3. Swap the snapshot.
    shared.store_snapshot(new);
    let current = shared.snapshot();

    // 4. Swap the checkers; stop those replaced or of clusters gone.
    if !started.is_empty() || healths.len() != shared.healths().len() {
        report.health_restarted = true;
        let previous = shared.swap_health(healths);
        let kept = shared.healths();
        for (name, health) in previous.iter() {
            if !kept.get(name).is_some_and(|h| Arc::ptr_eq(h, health)) {
                let health = health.clone();
                tokio::spawn(async move { health.stop().await });
            }
        }
        for name in &started {
            if let Some(health) = kept.get(name) {
                app::watch_role_changes(shared, health);
            }
        }
    }

    // 5. Pools.
    let (updated, retired) = reconcile_pools(shared, &current);
    report.pools_updated = updated;
    report.pools_retired = retired;
    Ok(report)
}

/// The checkers each cluster of `new` gets: the running ones where nothing they check
/// changed, new ones otherwise; and the names of the clusters given new ones.
fn next_healths(shared: &Shared, old: &Snapshot, new: &Snapshot) -> (app::HealthMap, Vec<String>) {
    let running = shared.healths();
    let mut healths = app::HealthMap::new();
    let mut started = Vec::new();
    for (name, view) in new.views() {
        let before = old.views().find(|(n, _)| *n == name).map(|(_, v)| v);
        let same = before.is_some_and(|before| {
            app::health_plan(before) == app::health_plan(view)
                && before.config.health == view.config.health
                && before.config.routing.patroni_api == view.config.routing.patroni_api
                && before.config.routing.patroni_access() == view.config.routing.patroni_access()
        });
        match running.get(name) {
            Some(health) if same => {
                healths.insert(name.to_string(), health.clone());
            }
            _ => {
                if let Some(health) = app::start_health(view, &shared.shutdown) {
                    healths.insert(name.to_string(), Arc::new(health));
                    started.push(name.to_string());
                }
            }
        }
    }
    (healths, started)
}

/// Keys read once at start: a change is reported, not silently ignored.
fn fixed_key_notes(old: &Config, new: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let mut fixed = |key: &str, changed: bool| {
        if changed {
            notes.push(format!("{key} cannot change at runtime; restart to apply"));
        }
    };
    fixed("proxy.listen", old.proxy.listen != new.proxy.listen);
    fixed(
        "proxy.unix_socket_dir",
        old.proxy.unix_socket_dir != new.proxy.unix_socket_dir,
    );
    fixed(
        "proxy.unix_socket_mode",
        old.proxy.unix_socket_mode != new.proxy.unix_socket_mode,
    );
    // The metrics listener's address, TLS and basic auth are read once at start.
    fixed("metrics", old.metrics != new.metrics);
    fixed("proxy.log_format", old.proxy.log_format != new.proxy.log_format);
    fixed("proxy.log_level", old.proxy.log_level != new.proxy.log_level);
    fixed("proxy.runtime", old.proxy.runtime != new.proxy.runtime);
    fixed("proxy.workers", old.proxy.workers != new.proxy.workers);
    notes
}

/// Brings every pool in line with `snapshot`: new limits and timeouts in place, retirement for
/// pools whose backend settings changed or whose database, user or node is gone. Returns
/// (updated, retired). Also run by the janitor, for a pool created from an older snapshot
/// while a reload was under way.
pub fn reconcile_pools(shared: &Shared, snapshot: &Snapshot) -> (usize, usize) {
    let config = &snapshot.config;
    let (mut updated, mut retired) = (0, 0);
    for pool in shared.pools.all() {
        let key = &pool.key;
        shared.pools.caps.configure(config, &key.database, &key.user);
        let current = pool.settings();
        let still_there = (snapshot.nodes_for(&key.database))
            .is_some_and(|nodes| nodes.iter().any(|n| n.address() == *key.node));
        // Users from auth_file or auth_query are not in [[users]]: they get the defaults.
        let listed = config.user(&key.user);
        let unlisted;
        let user = match listed {
            Some(user) => user,
            None => {
                unlisted = crate::auth::unlisted_user(&key.user);
                &unlisted
            }
        };
        let wanted = still_there.then(|| {
            let mut wanted = app::pool_settings(snapshot, &key.database, user, key.node.clone());
            // A secret learned from a client (SCRAM pass-through keys, an md5 hash from
            // auth_query) is kept unless the config now names one itself.
            if wanted.login.secret == crate::backend::BackendSecret::None {
                wanted.login.secret = current.login.secret.clone();
            }
            wanted
        });
        match wanted {
            None => {
                tracing::info!(pool = %key, "pool retired: no longer configured");
                shared.pools.retire(&pool);
                retired += 1;
            }
            Some(wanted) if backend_changed(&wanted, &current) => {
                tracing::info!(pool = %key, "pool retired: its backend settings changed");
                shared.pools.retire(&pool);
                retired += 1;
            }
            Some(wanted) if wanted != *current => {
                pool.update_settings(wanted);
                updated += 1;
            }
            Some(_) => {}
        }
    }
    (updated, retired)
}

/// Settings that existing connections embody: they cannot be changed on an open connection.
fn backend_changed(wanted: &PoolSettings, current: &PoolSettings) -> bool {
    wanted.addr != current.addr || !wanted.login.same_session(&current.login) || wanted.mode != current.mode
}
