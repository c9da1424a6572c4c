//! The console's commands other than SHOW: pausing, disabling, reconnecting and killing
//! databases and clients, reload, shutdown and SET. Each returns its CommandComplete tag or
//! the ErrorResponse to send.

use super::command::{Command, ShutdownMode};
use crate::app::Shared;
use crate::config::{parse_duration, parse_size, Config, ConfigDuration, PoolMode};
use crate::pool::{DbControl, Pool};
use crate::protocol::{ErrorFields, SqlState};
use std::sync::Arc;
use std::time::Duration;

/// How often PAUSE and WAIT_CLOSE look again at what they wait for.
const POLL: Duration = Duration::from_millis(10);

/// Runs one non-SHOW command issued by console client `own_id`.
pub async fn run(shared: &Arc<Shared>, own_id: u64, command: Command) -> Result<String, ErrorFields> {
    let controls = &shared.pools.controls;
    let tag = match command {
        Command::Show(_) => unreachable!("SHOW is answered by show.rs"),
        Command::Pause(db) => {
            let targets = targets(shared, db.as_deref())?;
            match &db {
                Some(_) => targets.iter().for_each(|c| c.set_paused(true)),
                None => controls.global.set_paused(true),
            }
            wait_for(|| {
                pools_of(shared, db.as_deref()).iter().all(|p| p.active() == 0) || !paused(shared, &db)
            })
            .await;
            "PAUSE"
        }
        Command::Resume(db) => {
            match &db {
                Some(db) => targets(shared, Some(db))?
                    .iter()
                    .for_each(|c| c.set_paused(false)),
                None => resume_all(shared),
            }
            "RESUME"
        }
        Command::Suspend => {
            // tidepool has no socket buffers to flush: SUSPEND holds every new transaction,
            // like PAUSE, without waiting for those in flight.
            controls
                .suspended
                .store(true, std::sync::atomic::Ordering::Release);
            controls.global.set_paused(true);
            "SUSPEND"
        }
        Command::Disable(db) => {
            targets(shared, Some(&db))?
                .iter()
                .for_each(|c| c.set_disabled(true));
            "DISABLE"
        }
        Command::Enable(db) => {
            targets(shared, Some(&db))?
                .iter()
                .for_each(|c| c.set_disabled(false));
            "ENABLE"
        }
        Command::Reconnect(db) => {
            reconnect(shared, db.as_deref())?;
            "RECONNECT"
        }
        Command::Kill(db) => {
            let targets = targets(shared, db.as_deref())?;
            // New clients of a killed database wait for RESUME, as after PAUSE.
            targets.iter().for_each(|c| c.set_paused(true));
            for client in shared.sessions.all() {
                let matches = db.as_deref().is_none_or(|d| d == client.database);
                if matches && client.id != own_id && !super::is_console(&client.database) {
                    client.kill();
                }
            }
            reconnect(shared, db.as_deref())?;
            "KILL"
        }
        Command::KillClient(id) => {
            if id == own_id {
                return Err(ErrorFields::error(
                    SqlState::new("22023"),
                    "KILL_CLIENT cannot kill the console connection issuing it",
                ));
            }
            let Some(client) = shared.sessions.get(id) else {
                return Err(ErrorFields::error(
                    SqlState::new("42704"),
                    format!("client {id} not found"),
                ));
            };
            client.kill();
            "KILL_CLIENT"
        }
        Command::WaitClose(db) => {
            targets(shared, db.as_deref())?;
            wait_for(|| {
                !shared
                    .pools
                    .servers
                    .all()
                    .iter()
                    .any(|s| s.close_needed() && db.as_deref().is_none_or(|d| d == s.pool.database))
            })
            .await;
            "WAIT_CLOSE"
        }
        Command::Reload => {
            crate::reload::reload(shared).await.map_err(reload_error)?;
            "RELOAD"
        }
        Command::Shutdown(mode) => {
            // See shutdown.rs for what each stage keeps and closes. A mode slower than the stop
            // already under way changes nothing.
            tracing::info!(?mode, "SHUTDOWN from the admin console");
            match mode {
                ShutdownMode::WaitForClients => shared.shutdown.trigger_drain(),
                ShutdownMode::WaitForServers => shared.shutdown.trigger(),
                ShutdownMode::Immediate => shared.shutdown.trigger_fast(),
            }
            "SHUTDOWN"
        }
        Command::Set { key, value } => {
            let mut config = shared.snapshot().config.clone();
            set(&mut config, &key, &value)?;
            config.validate().map_err(|e| {
                ErrorFields::error(SqlState::new("22023"), format!("invalid value for {key}: {e}"))
            })?;
            crate::reload::apply(shared, config).await.map_err(reload_error)?;
            "SET"
        }
    };
    Ok(tag.to_string())
}

/// `PAUSE` of everything without waiting for transactions in flight (SIGUSR1): new
/// transactions wait from now on; the console's PAUSE also waits until none is running.
pub fn pause_all(shared: &Shared) {
    shared.pools.controls.global.set_paused(true);
}

/// `RESUME` of everything (SIGUSR2): ends a global PAUSE or SUSPEND and every database's PAUSE.
pub fn resume_all(shared: &Shared) {
    let controls = &shared.pools.controls;
    if let Ok(targets) = targets(shared, None) {
        targets.iter().for_each(|c| c.set_paused(false));
    }
    controls.global.set_paused(false);
    controls
        .suspended
        .store(false, std::sync::atomic::Ordering::Release);
}

fn reload_error(e: crate::reload::ReloadError) -> ErrorFields {
    // config_file_error
    ErrorFields::error(SqlState::new("F0000"), e.to_string())
}

/// The switches a command names: one configured database, or every one.
fn targets(shared: &Shared, db: Option<&str>) -> Result<Vec<Arc<DbControl>>, ErrorFields> {
    let snapshot = shared.snapshot();
    let controls = &shared.pools.controls;
    match db {
        // A database `*` serves counts while it is open.
        Some(name)
            if snapshot.config.databases.contains_key(name) && name != crate::config::WILDCARD_DATABASE =>
        {
            Ok(vec![controls.get(name)])
        }
        Some(name) if shared.pools.auto.names().iter().any(|n| n == name) => Ok(vec![controls.get(name)]),
        Some(name) => Err(ErrorFields::error(
            SqlState::INVALID_CATALOG_NAME,
            format!("no such database: {name}"),
        )),
        None => Ok((snapshot.config.databases.keys().cloned())
            .chain(shared.pools.auto.names())
            .filter(|name| name != crate::config::WILDCARD_DATABASE)
            .map(|name| controls.get(&name))
            .collect()),
    }
}

/// The pools of one database, or all.
fn pools_of(shared: &Shared, db: Option<&str>) -> Vec<Arc<Pool>> {
    let mut pools = shared.pools.all();
    pools.retain(|p| db.is_none_or(|d| d == p.key.database));
    pools
}

/// Still paused (a RESUME from another console ends a PAUSE's wait).
fn paused(shared: &Shared, db: &Option<String>) -> bool {
    let controls = &shared.pools.controls;
    match db {
        Some(name) => controls.get(name).is_paused(),
        None => controls.global.is_paused(),
    }
}

/// Marks the backends of `db` (or all) for closing at release, and closes the idle ones now.
fn reconnect(shared: &Shared, db: Option<&str>) -> Result<(), ErrorFields> {
    for control in targets(shared, db)? {
        control.bump_epoch();
    }
    for pool in pools_of(shared, db) {
        pool.close_idle_stale();
    }
    Ok(())
}

/// Polls `done` until it holds. Console commands only; no data-path task waits here.
async fn wait_for(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(POLL).await;
    }
}

/// Changes one reloadable key of `config`. `key` may carry its section (`pool.default_pool_size`).
pub fn set(config: &mut Config, key: &str, value: &str) -> Result<(), ErrorFields> {
    let bare = key.rsplit('.').next().unwrap_or(key);
    let invalid = |reason: String| {
        ErrorFields::error(
            SqlState::new("22023"),
            format!("invalid value for {key}: {reason}"),
        )
    };
    let number = |v: &str| v.parse::<usize>().map_err(|e| invalid(e.to_string()));
    let duration = |v: &str| {
        parse_duration(v)
            .map(ConfigDuration)
            .map_err(|e| invalid(e.to_string()))
    };
    let flag = |v: &str| match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(invalid(format!("{v:?} is not a boolean"))),
    };
    let (proxy, pool, routing) = (&mut config.proxy, &mut config.pool, &mut config.routing);
    match bare {
        "pool_mode" => {
            proxy.pool_mode = match value.to_ascii_lowercase().as_str() {
                "session" => PoolMode::Session,
                "transaction" => PoolMode::Transaction,
                other => return Err(invalid(format!("{other:?} is not session or transaction"))),
            }
        }
        "max_client_conn" => proxy.max_client_conn = number(value)?,
        "client_login_timeout" => proxy.client_login_timeout = duration(value)?,
        "client_idle_timeout" => proxy.client_idle_timeout = duration(value)?,
        "idle_transaction_timeout" => proxy.idle_transaction_timeout = duration(value)?,
        "shutdown_timeout" => proxy.shutdown_timeout = duration(value)?,
        "stats_period" => proxy.stats_period = duration(value)?,
        "sigterm_timeout" => proxy.sigterm_timeout = duration(value)?,
        "show_legacy_columns" => proxy.show_legacy_columns = flag(value)?,
        "max_message_size" => {
            proxy.max_message_size = parse_size(value)
                .map(crate::config::ByteSize)
                .map_err(|e| invalid(e.to_string()))?
        }
        "default_pool_size" => pool.default_pool_size = number(value)?,
        "min_pool_size" => pool.min_pool_size = number(value)?,
        "reserve_pool_size" => pool.reserve_pool_size = number(value)?,
        "reserve_pool_timeout" => pool.reserve_pool_timeout = duration(value)?,
        "query_wait_timeout" => pool.query_wait_timeout = duration(value)?,
        "server_connect_timeout" => pool.server_connect_timeout = duration(value)?,
        "server_idle_timeout" => pool.server_idle_timeout = duration(value)?,
        "server_lifetime" => pool.server_lifetime = duration(value)?,
        "server_reset_query" => pool.server_reset_query = value.to_string(),
        "server_check_query" => pool.server_check_query = value.to_string(),
        "server_check_delay" => pool.server_check_delay = duration(value)?,
        "max_prepared_statements" => pool.max_prepared_statements = number(value)?,
        "query_timeout" => proxy.query_timeout = duration(value)?,
        "transaction_timeout" => proxy.transaction_timeout = duration(value)?,
        "tcp_keepalive" => proxy.tcp_keepalive = flag(value)?,
        "tcp_keepidle" => proxy.tcp_keepidle = duration(value)?,
        "tcp_keepintvl" => proxy.tcp_keepintvl = duration(value)?,
        "tcp_keepcnt" => {
            proxy.tcp_keepcnt = value
                .parse()
                .map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?
        }
        "tcp_user_timeout" => proxy.tcp_user_timeout = duration(value)?,
        "max_db_connections" => pool.max_db_connections = number(value)?,
        "max_user_connections" => pool.max_user_connections = number(value)?,
        "server_login_retry" => pool.server_login_retry = duration(value)?,
        "autodb_idle_timeout" => pool.autodb_idle_timeout = duration(value)?,
        "max_auto_databases" => pool.max_auto_databases = number(value)?,
        "max_lag" => routing.max_lag = duration(value)?,
        "failover_timeout" => routing.failover_timeout = duration(value)?,
        "read_your_writes" => routing.read_your_writes = flag(value)?,
        "ryw_wait" => routing.ryw_wait = duration(value)?,
        "max_lag_bytes" => {
            routing.max_lag_bytes = parse_size(value)
                .map(crate::config::ByteSize)
                .map_err(|e| invalid(e.to_string()))?
        }
        "listen"
        | "runtime"
        | "workers"
        | "unix_socket_dir"
        | "unix_socket_mode"
        | "health_check_interval"
        | "health_check_timeout"
        | "fall"
        | "rise" => {
            return Err(ErrorFields::error(
                SqlState::new("55P02"),
                format!("parameter \"{key}\" cannot be changed without restarting tidepool"),
            ))
        }
        _ => {
            return Err(ErrorFields::error(
                SqlState::new("42704"),
                format!("unrecognized or unsettable configuration parameter \"{key}\""),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<(), ErrorFields>) -> String {
        result.expect_err("refused").code.as_str().to_string()
    }

    #[test]
    fn set_changes_reloadable_keys_and_names_the_others() {
        let mut config = Config::default();
        set(&mut config, "default_pool_size", "7").unwrap();
        set(&mut config, "pool.server_check_query", "select 2").unwrap();
        set(&mut config, "client_idle_timeout", "5s").unwrap();
        set(&mut config, "pool_mode", "SESSION").unwrap();
        set(&mut config, "read_your_writes", "on").unwrap();
        set(&mut config, "proxy.stats_period", "15s").unwrap();
        assert_eq!(config.proxy.stats_period.0, Duration::from_secs(15));
        assert_eq!(config.pool.default_pool_size, 7);
        assert_eq!(config.pool.server_check_query, "select 2");
        assert_eq!(config.proxy.client_idle_timeout.0, Duration::from_secs(5));
        assert_eq!(config.proxy.pool_mode, PoolMode::Session);
        assert!(config.routing.read_your_writes);

        assert_eq!(code(set(&mut config, "default_pool_size", "many")), "22023");
        assert_eq!(
            code(set(&mut config, "client_idle_timeout", "5 parsecs")),
            "22023"
        );
        assert_eq!(code(set(&mut config, "listen", "127.0.0.1:1")), "55P02");
        assert_eq!(code(set(&mut config, "fall", "2")), "55P02");
        assert_eq!(code(set(&mut config, "runtime", "per_core")), "55P02");
        assert_eq!(code(set(&mut config, "unix_socket_dir", "/tmp")), "55P02");
        set(&mut config, "query_timeout", "30s").unwrap();
        set(&mut config, "pool.max_db_connections", "12").unwrap();
        set(&mut config, "tcp_keepcnt", "4").unwrap();
        assert_eq!(config.proxy.query_timeout.0, Duration::from_secs(30));
        assert_eq!(config.pool.max_db_connections, 12);
        assert_eq!(config.proxy.tcp_keepcnt, 4);
        assert_eq!(code(set(&mut config, "tcp_keepcnt", "-1")), "22023");
        assert_eq!(code(set(&mut config, "password", "x")), "42704");
    }
}
