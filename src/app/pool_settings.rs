//! What a pool logs in and runs with, derived from the config: the server login (the
//! database's own user, else the client user's backend login), limits and timeouts.

use super::Snapshot;
use crate::backend::{BackendLogin, BackendSecret};
use crate::config::{Config, UserConfig};
use crate::pool::{Limits, PoolSettings};
use std::sync::Arc;

/// What a pool for (`database`, `user`) on the node at `addr` runs with under `config`, with the
/// secret the config alone provides. Reload compares these with what existing pools have.
pub(crate) fn pool_settings(
    snapshot: &Snapshot,
    database: &str,
    user: &UserConfig,
    addr: Arc<str>,
) -> PoolSettings {
    let config = &snapshot.config;
    let pool = &config.pool;
    let (login_user, secret) = server_login(config, database, user);
    PoolSettings {
        addr,
        login: BackendLogin {
            user: login_user,
            database: config
                .server_dbname(database)
                .unwrap_or_else(|| database.to_string()),
            secret,
            tls: snapshot.backend_tls.clone(),
            keepalive: config.proxy.keepalive(),
        },
        mode: config.pool_mode_for(database),
        limits: Limits {
            pool_size: config.pool_size_for(database, user),
            reserve_size: pool.reserve_pool_size,
            min_size: pool.min_pool_size,
        },
        connect_timeout: pool.server_connect_timeout.0,
        query_wait_timeout: pool.query_wait_timeout.non_zero(),
        reserve_timeout: pool.reserve_pool_timeout.0,
        idle_timeout: pool.server_idle_timeout.non_zero(),
        lifetime: pool.server_lifetime.non_zero(),
        reset_query: pool.server_reset_query.clone(),
        check_query: pool.server_check_query.clone(),
        check_delay: pool.server_check_delay.0,
        login_retry: pool.server_login_retry.0,
    }
}

/// The user and secret a pool logs in to PostgreSQL with: the database's own `user` (with its
/// `password`, else that user's `[[users]]` entry), else the client user's backend login.
fn server_login(config: &Config, database: &str, user: &UserConfig) -> (String, BackendSecret) {
    let forced = config
        .database(database)
        .and_then(|db| Some((db.user.clone()?, db)));
    let Some((name, db)) = forced else {
        let name = user.backend_user.clone().unwrap_or_else(|| user.name.clone());
        return (name, backend_secret(user));
    };
    let secret = match (&db.password, config.user(&name)) {
        (Some(password), _) => {
            let entry = UserConfig {
                name: name.clone(),
                password: Some(password.clone()),
                auth_method: None,
                backend_user: None,
                backend_password: None,
                pool_size: None,
                max_user_connections: None,
            };
            backend_secret(&entry)
        }
        (None, Some(entry)) => backend_secret(entry),
        (None, None) => BackendSecret::None,
    };
    (name, secret)
}

/// What tidepool can prove to PostgreSQL for a configured user: the same answer the user
/// directory gives (an md5 hash only serves the user it was made for), so that reload's
/// comparison of pool settings never sees a difference that is not there.
pub(super) fn backend_secret(user: &UserConfig) -> BackendSecret {
    let secret = user
        .password
        .as_deref()
        .and_then(|p| crate::auth::Secret::parse(p).ok());
    crate::auth::backend_secret(user, secret.as_ref())
}
