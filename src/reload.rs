//! Hot reload: re-read the configuration file, validate it, and swap the snapshot; on any error
//! the running configuration stays.

use crate::app::Shared;
use std::sync::Arc;

/// What a successful reload changed, and what it could not change at runtime.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// One line per note, e.g. "listen cannot change at runtime; restart to apply".
    pub notes: Vec<String>,
}

/// Why a reload was refused (the running configuration is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload is not available: {0}")]
    Unavailable(String),
}

/// Re-reads the configuration the proxy was started from.
pub async fn reload(_shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    Err(ReloadError::Unavailable("not implemented yet".into()))
}

/// Applies an already parsed configuration (admin `SET`, or `reload` after reading the file).
pub async fn apply(
    _shared: &Arc<Shared>,
    _config: crate::config::Config,
) -> Result<ReloadReport, ReloadError> {
    Err(ReloadError::Unavailable("not implemented yet".into()))
}
