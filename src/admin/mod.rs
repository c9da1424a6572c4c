//! The admin console: a client that logs in to database `tidepool` (or `pgbouncer`, so that
//! PgBouncer's tools work) as an `admin_users` or `stats_users` member gets a simple-query
//! console instead of a pool. `command.rs` parses, `show.rs` builds the SHOW tables,
//! `actions.rs` runs the rest.

pub mod actions;
pub mod averages;
pub mod command;
pub mod show;

use crate::app::{Shared, Snapshot};
use crate::client::conn::ClientConn;
use crate::client::login::CloseReason;
use crate::client::params::ClientParams;
use crate::client::registry::NewClient;
use crate::config::UserConfig;
use crate::protocol::{backend_msg, tag, ErrorFields, SqlState};
use command::{parse, split_statements};
use std::sync::Arc;

pub use crate::config::CONSOLE_DATABASES;

/// 42501, as PostgreSQL names it.
const INSUFFICIENT_PRIVILEGE: SqlState = SqlState::new("42501");
const SYNTAX_ERROR: SqlState = SqlState::new("42601");

/// True when a login to `database` is a console login.
pub fn is_console(database: &str) -> bool {
    CONSOLE_DATABASES.contains(&database)
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command.
    Admin,
    /// SHOW only.
    Stats,
}

/// The access `user` has to the console under `config`, if any.
pub fn access(config: &crate::config::Config, user: &str) -> Option<Access> {
    if config.proxy.admin_users.iter().any(|u| u == user) {
        Some(Access::Admin)
    } else if config.proxy.stats_users.iter().any(|u| u == user) {
        Some(Access::Stats)
    } else {
        None
    }
}

/// Serves an authenticated console login to the end.
pub async fn serve(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    mut client: ClientConn,
    params: &ClientParams,
    user: &UserConfig,
) -> CloseReason {
    let Some(access) = access(&snapshot.config, &user.name) else {
        let message = format!(
            "permission denied: user \"{}\" may not use the admin console",
            user.name
        );
        client
            .send_fatal(ErrorFields::fatal(INSUFFICIENT_PRIVILEGE, message.clone()))
            .await;
        return CloseReason::Refused(message);
    };
    let ticket = shared.sessions.register(NewClient {
        user: &params.user,
        database: &params.database,
        addr: client.peer,
        local_addr: client.stream.local_addr().ok(),
        application_name: params
            .settings
            .iter()
            .find(|(name, _)| name == "application_name")
            .map_or("", |(_, value)| value.as_str()),
        tls: client.tls.is_some(),
    });
    welcome(&mut client);
    let mut console = Console {
        shared: shared.clone(),
        access,
        own_id: ticket.id(),
        discard_until_sync: false,
    };
    loop {
        if let Err(e) = client.flush().await {
            return e.into();
        }
        let frame = tokio::select! {
            frame = client.read_frame() => frame,
            _ = ticket.entry().killed() => return CloseReason::Killed,
            _ = shared.shutdown.wait() => {
                let error = ErrorFields::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
                client.send_fatal(error).await;
                return CloseReason::Shutdown;
            }
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return e.into(),
        };
        match frame.tag {
            tag::TERMINATE => return CloseReason::Terminated,
            tag::QUERY => {
                let text = frame.body.strip_suffix(&[0]).unwrap_or(&frame.body);
                match std::str::from_utf8(text) {
                    Ok(sql) => console.run_query(sql, &mut client.wbuf).await,
                    Err(_) => client.queue_error(&ErrorFields::error(
                        SqlState::new("22021"),
                        "invalid byte sequence for encoding \"UTF8\"",
                    )),
                }
                console.discard_until_sync = false;
                backend_msg::ready_for_query(&mut client.wbuf, b'I');
            }
            tag::SYNC => {
                console.discard_until_sync = false;
                backend_msg::ready_for_query(&mut client.wbuf, b'I');
            }
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {
                if !console.discard_until_sync {
                    console.discard_until_sync = true;
                    client.queue_error(&ErrorFields::error(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "the admin console supports only the simple query protocol",
                    ));
                }
            }
            other => {
                let message = format!("invalid frontend message type {}", other as char);
                client
                    .send_fatal(ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, message.clone()))
                    .await;
                return CloseReason::Refused(message);
            }
        }
    }
}

/// What a console has after login: ParameterStatus for what drivers expect, a dummy cancel key
/// (console commands cannot be cancelled), ReadyForQuery.
fn welcome(client: &mut ClientConn) {
    let version = format!("15.0 (tidepool {})", env!("CARGO_PKG_VERSION"));
    for (name, value) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ] {
        backend_msg::parameter_status(&mut client.wbuf, name, value);
    }
    backend_msg::backend_key_data(&mut client.wbuf, 0, 0);
    backend_msg::ready_for_query(&mut client.wbuf, b'I');
}

/// One console connection's state.
struct Console {
    shared: Arc<Shared>,
    access: Access,
    /// This console's client id (so KILL_CLIENT can refuse to kill itself).
    own_id: u64,
    /// An extended-protocol message was refused; skip to Sync.
    discard_until_sync: bool,
}

impl Console {
    /// Runs every statement of a Query in order; the first error ends it (as in PostgreSQL).
    async fn run_query(&mut self, sql: &str, out: &mut bytes::BytesMut) {
        let statements = match split_statements(sql) {
            Ok(statements) => statements,
            Err(e) => return ErrorFields::error(SYNTAX_ERROR, e.to_string()).write_to(out),
        };
        if statements.is_empty() {
            // EmptyQueryResponse.
            out.extend_from_slice(&[b'I', 0, 0, 0, 4]);
            return;
        }
        for statement in statements {
            let command = match parse(statement) {
                Ok(command) => command,
                Err(e) => return ErrorFields::error(SYNTAX_ERROR, e.to_string()).write_to(out),
            };
            if self.access == Access::Stats && !command.is_read_only() {
                return ErrorFields::error(
                    INSUFFICIENT_PRIVILEGE,
                    "permission denied: stats users may only run SHOW commands",
                )
                .write_to(out);
            }
            let result = match command {
                command::Command::Show(what) => {
                    show::write(&self.shared, what, out);
                    Ok(())
                }
                other => actions::run(&self.shared, self.own_id, other).await.map(|tag| {
                    backend_msg::command_complete(out, &tag);
                }),
            };
            if let Err(error) = result {
                return error.write_to(out);
            }
        }
    }
}
