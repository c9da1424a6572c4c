//! Checks a parsed config as a whole; every error names the key path and the reason.

use super::{AuthMethod, Config};
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
    pub(super) fn from_toml(error: toml::de::Error) -> ConfigError {
        ConfigError::Syntax(error.to_string().trim_end().to_string())
    }

    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
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
        let size = proxy.max_message_size.0;
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size) {
            return Err(ConfigError::invalid(
                "proxy.max_message_size",
                "must be between 8kB and 1GB",
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

        if self.nodes.is_empty() {
            return Err(ConfigError::invalid(
                "nodes",
                "at least one [[nodes]] entry is required",
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.host.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("nodes[{i}].host"),
                    "must not be empty",
                ));
            }
            if node.port == 0 {
                return Err(ConfigError::invalid(format!("nodes[{i}].port"), "must be > 0"));
            }
        }

        if self.databases.is_empty() {
            return Err(ConfigError::invalid(
                "databases",
                "at least one [databases.NAME] table is required",
            ));
        }
        for (name, db) in &self.databases {
            if db.pool_size == Some(0) {
                return Err(ConfigError::invalid(
                    format!("databases.{name}.pool_size"),
                    "must be > 0",
                ));
            }
            if db.dbname.as_deref().is_some_and(|n| n.is_empty()) {
                return Err(ConfigError::invalid(
                    format!("databases.{name}.dbname"),
                    "must not be empty",
                ));
            }
        }

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
            match user.method() {
                AuthMethod::Trust => {}
                method => {
                    let Some(secret) = secret else {
                        return Err(ConfigError::invalid(
                            key("password"),
                            format!("required for auth_method {}", method.as_str()),
                        ));
                    };
                    let parsed = crate::client::auth::Secret::parse(secret)
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
        self.health
            .validate()
            .map_err(|e| ConfigError::invalid(format!("health.{}", e.key), e.reason))?;
        Ok(())
    }
}
