//! `server_login_retry`: after PostgreSQL refused a pool's login (wrong password, unknown
//! database, no hba entry, too many connections), clients of that pool get the same error at
//! once for this long instead of each trying again.
//!
//! Transient failures (refused or dropped connections, 57P0x "starting up / shutting down")
//! are not cached: routing waits those out and tries again (`failover_timeout`).

use crate::backend::BackendError;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A pool's last refused login, if any.
#[derive(Debug, Default)]
pub struct LoginFailure {
    last: Mutex<Option<Refusal>>,
}

#[derive(Debug, Clone)]
struct Refusal {
    at: Instant,
    addr: String,
    code: String,
    message: String,
}

impl LoginFailure {
    /// The refusal to answer now, when the last login was refused less than `retry` ago.
    pub fn cached(&self, retry: Duration) -> Option<BackendError> {
        let last = self.lock().clone()?;
        if retry.is_zero() || last.at.elapsed() >= retry {
            return None;
        }
        Some(BackendError::Server {
            addr: last.addr,
            code: last.code,
            message: format!(
                "{} (server login refused less than server_login_retry ago)",
                last.message
            ),
            fatal: true,
        })
    }

    /// Remembers a refused login; a success or a transient failure forgets it.
    pub fn record(&self, result: Result<(), &BackendError>) {
        let refusal = match result {
            Err(BackendError::Server {
                addr, code, message, ..
            }) if !result.is_err_and(|e| e.is_transient()) => Some(Refusal {
                at: Instant::now(),
                addr: addr.clone(),
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        };
        *self.lock() = refusal;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Refusal>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> BackendError {
        BackendError::Server {
            addr: "db:5432".into(),
            code: code.into(),
            message: "password authentication failed for user \"app\"".into(),
            fatal: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_is_answered_from_cache_until_the_retry_time() {
        let failure = LoginFailure::default();
        let retry = Duration::from_secs(15);
        assert!(failure.cached(retry).is_none());
        failure.record(Err(&server("28P01")));
        match failure.cached(retry) {
            Some(BackendError::Server { code, message, .. }) => {
                assert_eq!(code, "28P01");
                assert!(message.starts_with("password authentication failed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(failure.cached(Duration::ZERO).is_none(), "0 turns it off");
        tokio::time::advance(retry).await;
        assert!(failure.cached(retry).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_and_successes_are_not_cached() {
        let failure = LoginFailure::default();
        let retry = Duration::from_secs(15);
        failure.record(Err(&server("57P03")));
        assert!(failure.cached(retry).is_none(), "starting up: routing retries it");
        failure.record(Err(&BackendError::Closed { addr: "db".into() }));
        assert!(failure.cached(retry).is_none());
        failure.record(Err(&server("3D000")));
        assert!(failure.cached(retry).is_some());
        failure.record(Ok(()));
        assert!(failure.cached(retry).is_none());
    }
}
