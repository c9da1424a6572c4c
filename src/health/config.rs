//! `[health]`: how often nodes are checked and how many results flip a node up or down.

use crate::config::ConfigDuration;
use serde::Deserialize;
use std::time::Duration;

/// `[health]` settings, read when the checkers start; a reload that changes them restarts the
/// checkers (`reload.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between the starts of two checks of one node. Default `1s`; must be > 0.
    pub health_check_interval: ConfigDuration,
    /// Limit on one check, reconnecting included; a check that takes longer failed.
    /// Default `1s`; must be > 0. It may exceed the interval: checks of a node never overlap,
    /// the next one simply starts late.
    pub health_check_timeout: ConfigDuration,
    /// Consecutive failed checks before an up node is marked down. Default 3; must be ≥ 1.
    pub fall: u32,
    /// Consecutive good checks before a down node is marked up again. Default 2; must be ≥ 1.
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            health_check_interval: ConfigDuration::secs(1),
            health_check_timeout: ConfigDuration::secs(1),
            fall: 3,
            rise: 2,
        }
    }
}

/// A `[health]` value that parses but makes no sense. `key` is relative to `[health]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health.{key}: {reason}")]
pub struct InvalidHealthConfig {
    pub key: &'static str,
    pub reason: &'static str,
}

impl HealthConfig {
    /// Every rule the section must satisfy; the first violation is returned.
    pub fn validate(&self) -> Result<(), InvalidHealthConfig> {
        let invalid = |key, reason| Err(InvalidHealthConfig { key, reason });
        if self.health_check_interval.0.is_zero() {
            return invalid("health_check_interval", "must be > 0");
        }
        if self.health_check_timeout.0.is_zero() {
            return invalid("health_check_timeout", "must be > 0");
        }
        if self.fall == 0 {
            return invalid("fall", "must be ≥ 1");
        }
        if self.rise == 0 {
            return invalid("rise", "must be ≥ 1");
        }
        Ok(())
    }

    /// `health_check_interval` as a plain duration.
    pub fn interval(&self) -> Duration {
        self.health_check_interval.0
    }

    /// `health_check_timeout` as a plain duration.
    pub fn timeout(&self) -> Duration {
        self.health_check_timeout.0
    }
}
