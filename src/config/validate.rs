//! Checks a parsed config as a whole; every error names the key path and the reason.

use super::{AuthMethod, Config, NodeConfig, DEFAULT_CLUSTER, WILDCARD_DATABASE};
use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A value that parses but makes no sense.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    /// toml's own error text quotes the offending line, which may hold a password: keep only
    /// the position and the message.
    pub(super) fn from_toml(error: toml::de::Error, text: &str) -> ConfigError {
        let position = error.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            match key_at_line(text, line) {
                Some(key) => format!("line {line}, column {column} ({key}): "),
                None => format!("line {line}, column {column}: "),
            }
        });
        ConfigError::Syntax(format!(
            "{}{}",
            position.unwrap_or_default(),
            error.message().trim_end()
        ))
    }

    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The dotted key assigned on a line (`proxy.client_login_timeout`), if the line is a plain
/// `key = …` assignment; never any part of the value.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let assignment = lines.get(line.checked_sub(1)?)?;
    let key = assignment.split_once('=')?.0.trim();
    let bare = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !bare(key) {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .filter(|t| bare(t));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

impl Config {
    /// Whether hba rules decide the methods (`[[hba]]` or `auth.auth_hba_file`).
    pub fn has_hba_rules(&self) -> bool {
        !self.hba.is_empty() || self.auth.auth_hba_file.is_some()
    }

    /// `[auth]` and `[[hba]]`; the files they name are read when the snapshot is built.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for (name, value) in [
            ("auth_file", &auth.auth_file),
            ("auth_hba_file", &auth.auth_hba_file),
            ("auth_user", &auth.auth_user),
            ("auth_dbname", &auth.auth_dbname),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::invalid(format!("auth.{name}"), "must not be empty"));
            }
        }
        if auth.auth_user.is_some() && auth.auth_query.trim().is_empty() {
            return Err(ConfigError::invalid(
                "auth.auth_query",
                "must not be empty when auth.auth_user is set",
            ));
        }
        if auth.auth_hba_file.is_some() && !self.hba.is_empty() {
            return Err(ConfigError::invalid(
                "auth.auth_hba_file",
                "cannot be combined with [[hba]] entries: use one or the other",
            ));
        }
        for (i, entry) in self.hba.iter().enumerate() {
            crate::auth::hba::HbaRule::from_entry(entry, format!("hba[{i}]")).map_err(
                |(field, problem)| ConfigError::invalid(format!("hba[{i}].{field}"), problem.to_string()),
            )?;
        }
        Ok(())
    }
}

/// Smallest `max_message_size` that still lets ordinary clients work.
const MIN_MESSAGE_SIZE: u64 = 8 << 10;
/// PostgreSQL itself refuses messages over 1 GB.
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

impl Config {
    /// Every rule a config must satisfy; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let proxy = &self.proxy;
        if proxy.max_client_conn == 0 {
            return Err(ConfigError::invalid("proxy.max_client_conn", "must be > 0"));
        }
        if proxy.client_login_timeout.0.is_zero() {
            return Err(ConfigError::invalid("proxy.client_login_timeout", "must be > 0"));
        }
        if proxy.stats_period.0.is_zero() {
            return Err(ConfigError::invalid("proxy.stats_period", "must be > 0"));
        }
        let size = proxy.max_message_size.0;
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
            return Err(ConfigError::invalid(
                "proxy.max_message_size",
                "must be between 8kB and 1GB",
            ));
        }
        let listen = proxy.listen.all();
        for (i, addr) in listen.iter().enumerate() {
            if addr.port() != 0 && listen[..i].contains(addr) {
                return Err(ConfigError::invalid(
                    "proxy.listen",
                    format!("{addr} is listed twice"),
                ));
            }
        }
        if let Some(dir) = &proxy.unix_socket_dir {
            if dir.as_os_str().is_empty() || !dir.is_absolute() {
                return Err(ConfigError::invalid(
                    "proxy.unix_socket_dir",
                    "must be an absolute directory path",
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&proxy.log_level).is_err() {
            return Err(ConfigError::invalid(
                "proxy.log_level",
                "is not a valid filter (e.g. \"info\", \"tidepool=debug,warn\")",
            ));
        }

        let pool = &self.pool;
        if pool.default_pool_size == 0 {
            return Err(ConfigError::invalid("pool.default_pool_size", "must be > 0"));
        }
        if pool.min_pool_size > pool.default_pool_size {
            return Err(ConfigError::invalid(
                "pool.min_pool_size",
                "must not exceed pool.default_pool_size",
            ));
        }
        if pool.server_connect_timeout.0.is_zero() {
            return Err(ConfigError::invalid("pool.server_connect_timeout", "must be > 0"));
        }

        self.validate_clusters()?;
        self.validate_databases()?;

        for (i, user) in self.users.iter().enumerate() {
            let key = |field: &str| format!("users[{i}].{field}");
            if user.name.is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if self.users[..i].iter().any(|u| u.name == user.name) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("user {:?} is listed twice", user.name),
                ));
            }
            if user.pool_size == Some(0) {
                return Err(ConfigError::invalid(key("pool_size"), "must be > 0"));
            }
            let secret = user.password.as_deref();
            if user.auth_method.is_some() && self.has_hba_rules() {
                return Err(ConfigError::invalid(
                    key("auth_method"),
                    "cannot be combined with [[hba]] or auth.auth_hba_file: the hba rules choose the method",
                ));
            }
            match (user.method(), secret) {
                (AuthMethod::Trust | AuthMethod::Cert | AuthMethod::Reject, _) => {}
                // The secret may come from auth_file or auth_query.
                (_, None) if self.auth.has_external_secrets() => {}
                (method, None) => {
                    return Err(ConfigError::invalid(
                        key("password"),
                        format!("required for auth_method {}", method.as_str()),
                    ));
                }
                (method, Some(secret)) => {
                    let parsed = crate::auth::Secret::parse(secret)
                        .map_err(|reason| ConfigError::invalid(key("password"), reason.to_string()))?;
                    if !parsed.supports(method) {
                        return Err(ConfigError::invalid(
                            key("auth_method"),
                            format!(
                                "{} cannot be checked against the stored kind of password",
                                method.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        self.validate_auth()?;
        self.health
            .validate()
            .map_err(|e| ConfigError::invalid(format!("health.{}", e.key), e.reason))?;
        self.tls
            .validate()
            .map_err(|e| ConfigError::invalid(format!("tls.{}", e.key), e.reason))?;
        if let Err(e) = self.routing.classifier().validate() {
            return Err(ConfigError::invalid("routing.write_functions", e.to_string()));
        }
        self.validate_operations()
    }

    /// The admin console's user lists, its reserved database names, and the metrics listener.
    fn validate_operations(&self) -> Result<(), ConfigError> {
        let lists = [
            ("admin_users", &self.proxy.admin_users),
            ("stats_users", &self.proxy.stats_users),
        ];
        for (list, names) in lists {
            for (i, name) in names.iter().enumerate() {
                if self.user(name).is_none() {
                    return Err(ConfigError::invalid(
                        format!("proxy.{list}[{i}]"),
                        format!("{name:?} is not a configured [[users]] name"),
                    ));
                }
            }
        }
        for name in super::CONSOLE_DATABASES {
            if self.databases.contains_key(*name) {
                return Err(ConfigError::invalid(
                    format!("databases.{name}"),
                    "this name is reserved for the admin console",
                ));
            }
        }
        if let Some(addr) = self.metrics.listen {
            if addr.port() != 0 && self.proxy.listen.contains(&addr) {
                return Err(ConfigError::invalid(
                    "metrics.listen",
                    "must differ from proxy.listen",
                ));
            }
        }
        let pairs = [
            (
                "metrics.tls_cert_file",
                self.metrics.tls_cert_file.is_some(),
                "metrics.tls_key_file",
                self.metrics.tls_key_file.is_some(),
            ),
            (
                "metrics.basic_auth_user",
                self.metrics.basic_auth_user.is_some(),
                "metrics.basic_auth_password",
                self.metrics.basic_auth_password.is_some(),
            ),
        ];
        for (a, has_a, b, has_b) in pairs {
            required_together(a, has_a, b, has_b)?;
        }
        validate_patroni("routing.", &self.routing)?;
        self.peers
            .validate()
            .map_err(|e| ConfigError::invalid(format!("peers.{}", e.key), e.reason))?;
        Ok(())
    }
}

impl Config {
    /// `[[nodes]]` and `[clusters.NAME]`: at least one cluster, each with usable nodes and
    /// valid health and routing tables of its own.
    fn validate_clusters(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() && self.clusters.is_empty() {
            return Err(ConfigError::invalid(
                "nodes",
                "at least one [[nodes]] entry or [clusters.NAME] table is required",
            ));
        }
        if !self.nodes.is_empty() && self.clusters.contains_key(DEFAULT_CLUSTER) {
            return Err(ConfigError::invalid(
                format!("clusters.{DEFAULT_CLUSTER}"),
                "the global [[nodes]] already form the cluster \"default\": use one or the other",
            ));
        }
        validate_nodes("nodes", &self.nodes)?;
        for (name, cluster) in &self.clusters {
            let key = |field: &str| format!("clusters.{name}.{field}");
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    "clusters",
                    "a cluster name must not be empty",
                ));
            }
            if cluster.nodes.is_empty() {
                return Err(ConfigError::invalid(
                    key("nodes"),
                    "at least one node is required",
                ));
            }
            validate_nodes(&key("nodes"), &cluster.nodes)?;
            if let Some(health) = &cluster.health {
                health
                    .validate()
                    .map_err(|e| ConfigError::invalid(key(&format!("health.{}", e.key)), e.reason))?;
            }
            if let Some(routing) = &cluster.routing {
                if let Err(e) = routing.classifier().validate() {
                    return Err(ConfigError::invalid(
                        key("routing.write_functions"),
                        e.to_string(),
                    ));
                }
                validate_patroni(&key("routing."), routing)?;
            }
        }
        Ok(())
    }

    /// `[databases.NAME]`: sizes, names, the cluster each points to, the `*` entry.
    fn validate_databases(&self) -> Result<(), ConfigError> {
        if self.databases.is_empty() {
            return Err(ConfigError::invalid(
                "databases",
                "at least one [databases.NAME] table is required",
            ));
        }
        for (name, db) in &self.databases {
            let key = |field: &str| format!("databases.{name}.{field}");
            if db.pool_size == Some(0) {
                return Err(ConfigError::invalid(key("pool_size"), "must be > 0"));
            }
            if db.dbname.as_deref().is_some_and(|n| n.is_empty()) {
                return Err(ConfigError::invalid(key("dbname"), "must not be empty"));
            }
            if name == WILDCARD_DATABASE && db.dbname.is_some() {
                return Err(ConfigError::invalid(
                    key("dbname"),
                    "cannot be set on \"*\": it forwards the name each client asks for",
                ));
            }
            let cluster = db.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            if self.cluster_nodes(cluster).is_none() {
                let reason = match &db.cluster {
                    Some(c) => format!("{c:?} is not a [clusters.NAME] table"),
                    None => "no [[nodes]] are given: name one of the [clusters.NAME] tables".into(),
                };
                return Err(ConfigError::invalid(key("cluster"), reason));
            }
            if db.user.as_deref().is_some_and(|u| u.is_empty()) {
                return Err(ConfigError::invalid(key("user"), "must not be empty"));
            }
            if db.password.is_some() && db.user.is_none() {
                return Err(ConfigError::invalid(key("password"), "needs databases.NAME.user"));
            }
            if let Some(password) = &db.password {
                crate::auth::Secret::parse(password)
                    .map_err(|reason| ConfigError::invalid(key("password"), reason.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Every node of one list has a host and a port.
/// Two keys that only make sense together.
fn required_together(a: &str, has_a: bool, b: &str, has_b: bool) -> Result<(), ConfigError> {
    if has_a == has_b {
        return Ok(());
    }
    let (missing, set) = if has_a { (b, a) } else { (a, b) };
    Err(ConfigError::invalid(missing, format!("required with {set}")))
}

/// The `patroni_*` keys of one `[routing]` table, named under `prefix` (`routing.` or
/// `clusters.NAME.routing.`).
fn validate_patroni(prefix: &str, routing: &crate::router::RoutingConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("{prefix}{field}");
    required_together(
        &key("patroni_cert_file"),
        routing.patroni_cert_file.is_some(),
        &key("patroni_key_file"),
        routing.patroni_key_file.is_some(),
    )?;
    required_together(
        &key("patroni_user"),
        routing.patroni_user.is_some(),
        &key("patroni_password"),
        routing.patroni_password.is_some(),
    )?;
    for (i, url) in routing.patroni_api.iter().enumerate() {
        let parsed = crate::health::PatroniUrl::parse(url).map_err(|reason| {
            ConfigError::invalid(key(&format!("patroni_api[{i}]")), format!("{url:?} {reason}"))
        })?;
        if parsed.https && routing.patroni_ca_file.is_none() {
            return Err(ConfigError::invalid(
                key("patroni_ca_file"),
                format!("required for {url:?} (https)"),
            ));
        }
    }
    Ok(())
}

fn validate_nodes(list: &str, nodes: &[NodeConfig]) -> Result<(), ConfigError> {
    for (i, node) in nodes.iter().enumerate() {
        if node.host.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{list}[{i}].host"),
                "must not be empty",
            ));
        }
        if node.port == 0 {
            return Err(ConfigError::invalid(format!("{list}[{i}].port"), "must be > 0"));
        }
    }
    Ok(())
}
