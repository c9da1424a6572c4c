//! The admin console from a test: a config with an admin and a stats user, console logins,
//! and SHOW results as tables.

use super::{base_config_toml, connect, pg, APP_DB, APP_PASSWORD, APP_USER};
use std::net::SocketAddr;
use std::time::Duration;
use tidepool::config::Config;
use tokio_postgres::{Client, SimpleQueryMessage};

pub const ADMIN: (&str, &str) = ("admin", "admin-secret");
pub const STATS: (&str, &str) = ("stats", "stats-secret");

/// The harness config plus an admin user and a stats user.
pub fn admin_config_toml() -> String {
    base_config_toml(pg()).replace(
        "pool_mode = \"transaction\"\n",
        "pool_mode = \"transaction\"\nadmin_users = [\"admin\"]\nstats_users = [\"stats\"]\n",
    ) + "\n[[users]]\nname = \"admin\"\npassword = \"admin-secret\"\n\n[[users]]\nname = \"stats\"\npassword = \"stats-secret\"\n"
}

pub fn admin_config() -> Config {
    Config::from_toml(&admin_config_toml()).expect("valid admin config")
}

pub async fn console(addr: SocketAddr, (user, password): (&str, &str)) -> Client {
    connect(addr, user, password, "tidepool").await
}

/// An app client with an application_name, so SHOW CLIENTS can tell it apart.
pub async fn app_client(addr: SocketAddr, name: &str) -> Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(APP_DB)
        .application_name(name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("app client connects");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Column names and rows of a one-statement simple query.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn column(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// Rows whose `column` equals `value`.
    pub fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<Option<String>>> {
        let i = self.column(column);
        self.rows
            .iter()
            .filter(|r| r[i].as_deref() == Some(value))
            .collect()
    }

    pub fn get<'a>(&self, row: &'a [Option<String>], column: &str) -> Option<&'a str> {
        row[self.column(column)].as_deref()
    }
}

/// Runs one console statement and collects its table.
pub async fn show(client: &Client, sql: &str) -> Table {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut table = Table {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                table.columns = columns.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                table
                    .rows
                    .push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    table
}

/// The SQLSTATE of a server error (or a description of what else it was).
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {error}"))
}

/// Polls a console query until `done` holds for its table.
pub async fn until(console: &Client, sql: &str, done: impl Fn(&Table) -> bool) -> Table {
    for _ in 0..1000 {
        let table = show(console, sql).await;
        if done(&table) {
            return table;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sql} never reached the expected state");
}
