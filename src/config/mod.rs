//! Configuration: the TOML schema, defaults, validation, and the immutable snapshot shared by tasks.
//!
//! A `Config` is parsed and validated as a whole and then never mutated: reload builds a new one
//! and swaps it in atomically (see `app/shared.rs`). Every key is documented in `pool.toml.example`.

mod auth;
mod cluster;
mod listen;
mod peers;
#[cfg(test)]
mod tests;
mod units;
mod validate;

pub use auth::{AuthConfig, HbaEntry, DEFAULT_AUTH_QUERY};
pub use cluster::{ClusterConfig, DEFAULT_CLUSTER, WILDCARD_DATABASE};
pub use listen::{Keepalive, ListenAddrs, ListenError, SocketMode, UnixSocket};
pub use peers::{PeersConfig, PeersError};

/// Database names that reach the admin console instead of a pool.
pub const CONSOLE_DATABASES: &[&str] = &["tidepool", "pgbouncer"];
pub use units::{parse_duration, parse_size, ByteSize, ConfigDuration, HiddenString};
pub use validate::ConfigError;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub pool: PoolConfig,
    pub health: crate::health::HealthConfig,
    pub routing: crate::router::RoutingConfig,
    /// `[peers]`: cancel forwarding between instances behind one address.
    pub peers: PeersConfig,
    /// The default cluster's nodes (legacy single-cluster form).
    pub nodes: Vec<NodeConfig>,
    /// `[clusters.NAME]`: further clusters, each with its own nodes, health and routing.
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub users: Vec<UserConfig>,
    pub auth: AuthConfig,
    pub hba: Vec<HbaEntry>,
    pub metrics: MetricsConfig,
    pub tls: crate::tls::TlsConfig,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving /metrics, /healthz and /readyz; absent = off.
    /// Not reloadable.
    pub listen: Option<SocketAddr>,
    /// HTTPS: certificate chain and key (PEM); both or neither. Not reloadable.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// HTTP basic authentication required on every path; both or neither. Not reloadable.
    pub basic_auth_user: Option<String>,
    pub basic_auth_password: Option<HiddenString>,
}

/// How long a client keeps its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A backend for the client's whole connection.
    Session,
    /// A backend per transaction; returned at ReadyForQuery with status idle.
    #[default]
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Addresses to accept clients on (one or a list, IPv4 and IPv6). Not reloadable.
    pub listen: ListenAddrs,
    /// Directory of the Unix-domain socket `.s.PGSQL.<port of the first listen address>`;
    /// absent = no socket. Not reloadable.
    pub unix_socket_dir: Option<std::path::PathBuf>,
    /// Permission bits of the socket file. Default 0777. Not reloadable.
    pub unix_socket_mode: SocketMode,
    /// TCP keepalive on client and server sockets (PgBouncer's names). Reloadable (new sockets).
    pub tcp_keepalive: bool,
    /// Idle time before the first keepalive probe; 0 = the system's. Reloadable (new sockets).
    pub tcp_keepidle: ConfigDuration,
    /// Time between keepalive probes; 0 = the system's. Reloadable (new sockets).
    pub tcp_keepintvl: ConfigDuration,
    /// Unanswered probes before the connection is dropped; 0 = the system's. Reloadable.
    pub tcp_keepcnt: u32,
    /// TCP_USER_TIMEOUT: unacknowledged data older than this drops the connection; 0 = the
    /// system's. Reloadable (new sockets).
    pub tcp_user_timeout: ConfigDuration,
    /// Default pool mode for databases that do not set their own.
    pub pool_mode: PoolMode,
    /// Client connections allowed at once; the next one gets 53300.
    pub max_client_conn: usize,
    /// A client must finish startup and authentication within this time.
    pub client_login_timeout: ConfigDuration,
    /// Close a client idle (outside a transaction) this long; 0 = off.
    pub client_idle_timeout: ConfigDuration,
    /// Close a client idle inside a transaction this long; 0 = off.
    pub idle_transaction_timeout: ConfigDuration,
    /// Cancel a request the server has not answered within this time (the client gets
    /// 57014 and keeps its connection); 0 = off. Default 0. Reloadable.
    pub query_timeout: ConfigDuration,
    /// Close a client that has been inside one transaction this long, busy or not (FATAL
    /// 25P04, as PostgreSQL's own transaction_timeout); 0 = off. Default 0. Reloadable.
    pub transaction_timeout: ConfigDuration,
    /// Largest message a client may send (the length field of any frame).
    pub max_message_size: ByteSize,
    /// Users who may run every admin console command (database `tidepool` or `pgbouncer`).
    pub admin_users: Vec<String>,
    /// Users who may run the console's SHOW commands only.
    pub stats_users: Vec<String>,
    /// How long a graceful or fast stop (SIGINT/SIGQUIT, SHUTDOWN [WAIT_FOR_SERVERS]) waits for
    /// clients to finish before the process exits anyway (WAIT_FOR_CLIENTS has no deadline).
    /// Reloadable.
    pub shutdown_timeout: ConfigDuration,
    /// How long a SIGTERM drain (stop accepting, serve connected clients until they leave, as
    /// PgBouncer 1.23+) waits before it turns graceful (clients closed at their next idle
    /// point, as SIGINT); 0 = no deadline, PgBouncer's behaviour. Reloadable.
    pub sigterm_timeout: ConfigDuration,
    /// Also send the SHOW columns PgBouncer 1.25 renamed or dropped (SHOW STATS
    /// `total_requests`, SHOW DATABASES `reserve_pool`), for old consumers. Reloadable.
    pub show_legacy_columns: bool,
    /// SHOW STATS' avg_ columns are the rates and means of the last completed period of this
    /// length. Default 60s; must be > 0. Reloadable (from the next period).
    pub stats_period: ConfigDuration,
    /// Log each client login (user, database, address). Reloadable.
    pub log_connections: bool,
    /// Log each client disconnection with its reason. Reloadable.
    pub log_disconnections: bool,
    /// `text` or `json` log lines. Not reloadable.
    pub log_format: LogFormat,
    /// Default log filter (`info`, `debug`, `tidepool=debug,warn`, …) when neither
    /// `TIDEPOOL_LOG` nor `RUST_LOG` is set. Not reloadable.
    pub log_level: String,
    /// How client connections are spread over threads: `work_stealing` (default: one
    /// multi-threaded tokio runtime) or `per_core` (one current-thread runtime per worker
    /// thread, each accepting on its own SO_REUSEPORT socket; see docs/BENCHMARKS.md for the
    /// measurement). Not reloadable.
    pub runtime: RuntimeMode,
    /// Worker threads for `runtime = "per_core"`; 0 = one per CPU. Default 0. Not reloadable.
    pub workers: usize,
}

impl ProxyConfig {
    /// The keepalive options every new client and server socket gets.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive {
            enabled: self.tcp_keepalive,
            idle: self.tcp_keepidle,
            interval: self.tcp_keepintvl,
            count: self.tcp_keepcnt,
            user_timeout: self.tcp_user_timeout,
        }
    }

    /// The Unix-domain socket to listen on, if any.
    pub fn unix_socket(&self) -> Option<UnixSocket> {
        self.unix_socket_dir.as_ref().map(|dir| UnixSocket {
            dir: dir.clone(),
            mode: self.unix_socket_mode,
        })
    }
}

/// `proxy.runtime`: the threads that serve clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    /// One multi-threaded (work-stealing) tokio runtime for everything.
    #[default]
    WorkStealing,
    /// Client connections on one current-thread runtime per worker thread; background tasks
    /// (health checks, janitor, metrics, Unix socket) stay on the main runtime.
    PerCore,
}

impl RuntimeMode {
    /// As the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeMode::WorkStealing => "work_stealing",
            RuntimeMode::PerCore => "per_core",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".parse().expect("valid literal"),
            unix_socket_dir: None,
            unix_socket_mode: SocketMode::default(),
            tcp_keepalive: true,
            tcp_keepidle: ConfigDuration::secs(0),
            tcp_keepintvl: ConfigDuration::secs(0),
            tcp_keepcnt: 0,
            tcp_user_timeout: ConfigDuration::secs(0),
            pool_mode: PoolMode::Transaction,
            max_client_conn: 10_000,
            client_login_timeout: ConfigDuration::secs(60),
            client_idle_timeout: ConfigDuration::secs(0),
            idle_transaction_timeout: ConfigDuration::secs(0),
            query_timeout: ConfigDuration::secs(0),
            transaction_timeout: ConfigDuration::secs(0),
            max_message_size: ByteSize(64 << 20),
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            shutdown_timeout: ConfigDuration::secs(30),
            sigterm_timeout: ConfigDuration::secs(0),
            show_legacy_columns: false,
            stats_period: ConfigDuration::secs(60),
            log_connections: true,
            log_disconnections: true,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            runtime: RuntimeMode::WorkStealing,
            workers: 0,
        }
    }
}

/// `[pool]`: backend connection pools, one per (database, user).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Backend connections per pool.
    pub default_pool_size: usize,
    /// Connections kept open even when idle.
    pub min_pool_size: usize,
    /// Extra connections allowed once a client waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: ConfigDuration,
    /// A client waiting longer than this for a backend gets an error; 0 = wait forever.
    pub query_wait_timeout: ConfigDuration,
    /// Time allowed to connect and log in to PostgreSQL.
    pub server_connect_timeout: ConfigDuration,
    /// Close backends idle longer than this; 0 = never.
    pub server_idle_timeout: ConfigDuration,
    /// Close backends older than this at their next release; 0 = never.
    pub server_lifetime: ConfigDuration,
    /// Run on a backend released by a session-mode client; empty = none.
    pub server_reset_query: String,
    /// Run on a backend idle longer than `server_check_delay` before handing it out; empty = none.
    pub server_check_query: String,
    pub server_check_delay: ConfigDuration,
    /// Named prepared statements kept per backend in transaction mode (LRU); 0 = pass statement
    /// names through untouched, as if tidepool did not track them.
    pub max_prepared_statements: usize,
    /// A database served through `*` whose pools have had no client this long is closed (its
    /// pools and their connections); 0 = never. Default 3600s. Reloadable.
    pub autodb_idle_timeout: ConfigDuration,
    /// After PostgreSQL refused a pool's login (password, unknown database, hba, too many
    /// connections), its clients get that error at once for this long instead of trying
    /// again; 0 = off. Transient failures are not cached. Default 15s. Reloadable.
    pub server_login_retry: ConfigDuration,
    /// Backend connections of one database (all its pools: users and nodes) at most; a pool
    /// that needs one more waits, within `query_wait_timeout`. 0 = no limit. Default 0.
    /// Reloadable.
    pub max_db_connections: usize,
    /// Backend connections of one user (all its pools) at most, as `max_db_connections`.
    /// 0 = no limit. Default 0. Reloadable.
    pub max_user_connections: usize,
    /// How many databases `*` may serve at once; a client asking for one more gets 53300.
    /// 0 = no bound. Default 100. Reloadable.
    pub max_auto_databases: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: ConfigDuration::secs(5),
            query_wait_timeout: ConfigDuration::secs(120),
            server_connect_timeout: ConfigDuration::secs(15),
            server_idle_timeout: ConfigDuration::secs(600),
            server_lifetime: ConfigDuration::secs(3600),
            server_reset_query: "DISCARD ALL".into(),
            server_check_query: "SELECT 1".into(),
            server_check_delay: ConfigDuration::secs(30),
            max_prepared_statements: 500,
            autodb_idle_timeout: ConfigDuration::secs(3600),
            max_auto_databases: 100,
            server_login_retry: ConfigDuration::secs(15),
            max_db_connections: 0,
            max_user_connections: 0,
        }
    }
}

/// `[[nodes]]`: one PostgreSQL server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Share of the reads this node gets among standbys (0 = none). Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

fn default_pg_port() -> u16 {
    5432
}

impl NodeConfig {
    /// `host:port` as used to connect and in logs.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `[databases.NAME]`: a database clients may connect to (`[databases."*"]`: any name not
/// configured otherwise, forwarded as asked).
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Database name on the backend (default: the table key).
    pub dbname: Option<String>,
    /// The cluster serving it (default: `default`, the global `[[nodes]]`).
    pub cluster: Option<String>,
    /// Login used toward PostgreSQL for every client of this database (PgBouncer's `user=`).
    pub user: Option<String>,
    /// Password for `user` toward PostgreSQL (default: that user's `[[users]]` entry).
    pub password: Option<String>,
    /// Overrides `proxy.pool_mode`.
    pub pool_mode: Option<PoolMode>,
    /// Overrides `pool.default_pool_size`.
    pub pool_size: Option<usize>,
    /// Overrides `pool.max_db_connections` (0 = no limit).
    pub max_db_connections: Option<usize>,
}

impl std::fmt::Debug for DatabaseConfig {
    // The backend password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("dbname", &self.dbname)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .field("max_db_connections", &self.max_db_connections)
            .finish()
    }
}

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext password.
    #[serde(rename = "password")]
    Password,
    /// No check at all: only where configured explicitly.
    #[serde(rename = "trust")]
    Trust,
    /// TLS client certificate whose CN is the user name (TLS connections only).
    #[serde(rename = "cert")]
    Cert,
    /// Always refused.
    #[serde(rename = "reject")]
    Reject,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
            AuthMethod::Trust => "trust",
            AuthMethod::Cert => "cert",
            AuthMethod::Reject => "reject",
        }
    }

    /// The method named as in pg_hba.conf; `None` for anything else.
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        [
            AuthMethod::ScramSha256,
            AuthMethod::Md5,
            AuthMethod::Password,
            AuthMethod::Trust,
            AuthMethod::Cert,
            AuthMethod::Reject,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// `[[users]]`: a login clients may use.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext, `md5…` hash, or `SCRAM-SHA-256$…` verifier.
    #[serde(default)]
    pub password: Option<String>,
    /// Overrides the default method (scram-sha-256).
    #[serde(default)]
    pub auth_method: Option<AuthMethod>,
    /// Login used toward PostgreSQL (default: `name`).
    #[serde(default)]
    pub backend_user: Option<String>,
    /// Password used toward PostgreSQL (default: `password` when it is usable).
    #[serde(default)]
    pub backend_password: Option<String>,
    /// Overrides the pool size for this user's pools.
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// Overrides `pool.max_user_connections` (0 = no limit).
    #[serde(default)]
    pub max_user_connections: Option<usize>,
}

impl std::fmt::Debug for UserConfig {
    // Secrets never reach logs, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("auth_method", &self.auth_method)
            .field("backend_user", &self.backend_user)
            .field(
                "backend_password",
                &self.backend_password.as_ref().map(|_| "<hidden>"),
            )
            .field("pool_size", &self.pool_size)
            .field("max_user_connections", &self.max_user_connections)
            .finish()
    }
}

impl UserConfig {
    /// The method this user authenticates with.
    pub fn method(&self) -> AuthMethod {
        self.auth_method.unwrap_or(AuthMethod::ScramSha256)
    }
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::from_toml(e, text))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Pool mode for a database (its own, else the proxy default).
    pub fn pool_mode_for(&self, database: &str) -> PoolMode {
        self.database(database)
            .and_then(|db| db.pool_mode)
            .unwrap_or(self.proxy.pool_mode)
    }

    /// Pool size for a (database, user) pair: the user's override, the database's, else default.
    pub fn pool_size_for(&self, database: &str, user: &UserConfig) -> usize {
        user.pool_size
            .or_else(|| self.database(database).and_then(|db| db.pool_size))
            .unwrap_or(self.pool.default_pool_size)
    }

    /// The configured user with this name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}
