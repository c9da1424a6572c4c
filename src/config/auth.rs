//! `[auth]` and `[[hba]]`: where client secrets come from and which method each connection uses.
//!
//! Only the TOML shape and the checks that need no file live here; `client::auth` reads
//! `auth_file` / `auth_hba_file` when a snapshot is built, so a bad file rejects the config.

use super::ConfigDuration;
use serde::Deserialize;

/// PgBouncer's default lookup; `$1` is the user name.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";

/// `[auth]`. Every key is reloadable (a reload rebuilds the user directory and empties the
/// auth_query cache).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PgBouncer `userlist.txt`: `"user" "secret"` per line. Default: none.
    pub auth_file: Option<String>,
    /// A pg_hba.conf-format file of rules (instead of `[[hba]]`). Default: none.
    pub auth_hba_file: Option<String>,
    /// Login that runs `auth_query` for users tidepool does not know. Default: none (off).
    pub auth_user: Option<String>,
    /// Returns (name, stored secret) for `$1`.
    pub auth_query: String,
    /// Database `auth_query` runs in. Default: the database the client asked for.
    pub auth_dbname: Option<String>,
    /// How long an auth_query answer is reused.
    pub auth_query_cache_ttl: ConfigDuration,
    /// How long "no such user" is remembered, so probing does not hammer PostgreSQL.
    pub auth_query_miss_ttl: ConfigDuration,
    /// Accept the `password` method (cleartext) on connections without TLS.
    pub allow_cleartext_without_tls: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            auth_file: None,
            auth_hba_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_dbname: None,
            auth_query_cache_ttl: ConfigDuration::secs(60),
            auth_query_miss_ttl: ConfigDuration::secs(5),
            allow_cleartext_without_tls: false,
        }
    }
}

impl AuthConfig {
    /// Whether secrets may come from somewhere else than `[[users]]`.
    pub fn has_external_secrets(&self) -> bool {
        self.auth_file.is_some() || self.auth_user.is_some()
    }
}

/// `[[hba]]`: one rule, in pg_hba.conf's terms. Lists are comma-separated, as in pg_hba.conf.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HbaEntry {
    /// `local` (Unix socket), `host` (TLS or not), `hostssl` (TLS only) or `hostnossl` (plain
    /// TCP only).
    #[serde(rename = "type")]
    pub conn_type: String,
    /// `all`, `sameuser`, or database names.
    pub database: String,
    /// `all` or user names.
    pub user: String,
    /// `all` or a CIDR block (`10.0.0.0/8`, `::1/128`); absent for `local`.
    #[serde(default)]
    pub address: String,
    /// scram-sha-256, md5, password, cert, trust or reject.
    pub method: String,
}
