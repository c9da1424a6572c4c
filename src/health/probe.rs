//! One health check: the monitoring connection to a node, the one-round-trip query, and
//! interpreting its single row.

use super::status::{Lsn, Role};
use super::topology::Sample;
use crate::backend::{self, BackendConn, BackendError, BackendLogin};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Everything a check needs, in one simple query so it costs one round trip.
///
/// The subquery evaluates `pg_is_in_recovery()` once (`OFFSET 0` keeps the planner from
/// inlining it), so a promotion during the query cannot yield a half-primary, half-standby row,
/// and the primary-only functions are only reached on a primary (they raise errors during
/// recovery). The primary's timeline comes from its current WAL file name because
/// `pg_control_checkpoint()` keeps reporting the old timeline until the first checkpoint after a
/// promotion; on a standby that function is all there is (its last restartpoint's timeline).
/// Columns: in_recovery, lsn, receive_lsn, timeline, replay_age (seconds).
pub(crate) const HEALTH_QUERY: &str = "\
SELECT r.in_recovery, \
CASE WHEN r.in_recovery THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
CASE WHEN r.in_recovery THEN pg_last_wal_receive_lsn() END, \
CASE WHEN r.in_recovery THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
ELSE ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int END, \
CASE WHEN r.in_recovery THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END \
FROM (SELECT pg_is_in_recovery() AS in_recovery OFFSET 0) AS r";

/// Shown in `pg_stat_activity` so DBAs can tell the monitoring connection apart.
const APPLICATION_NAME: &str = "tidepool health check";

/// Why one check of a node failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Connecting, logging in, or the connection broke.
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("health check of {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    /// The server rejected the health query (for example a permission error).
    #[error("health query failed on {addr}: {message} (SQLSTATE {code})")]
    Query {
        addr: String,
        code: String,
        message: String,
    },
    /// The server answered with something other than the one row we asked for.
    #[error("server {addr} answered the health query unexpectedly: {reason}")]
    BadRow { addr: String, reason: &'static str },
}

/// Something that can check a node; the real one is [`Monitor`], tests use fakes.
pub(crate) trait Probe: Send + 'static {
    /// One check. May be dropped part-way (timeout, shutdown); the next call must cope.
    fn check(&mut self) -> impl Future<Output = Result<Sample, CheckError>> + Send;
    /// Releases whatever the probe holds, at shutdown.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// The persistent monitoring connection to one node, reopened at the next check after it
/// breaks. A broken connection costs one failed check; `fall` absorbs that.
pub(crate) struct Monitor {
    addr: Arc<str>,
    login: BackendLogin,
    connect_timeout: Duration,
    conn: Option<BackendConn>,
    /// Connections opened so far; numbers them for logs.
    connects: u64,
}

impl Monitor {
    pub(crate) fn new(addr: Arc<str>, login: BackendLogin, connect_timeout: Duration) -> Monitor {
        Monitor {
            addr,
            login,
            connect_timeout,
            conn: None,
            connects: 0,
        }
    }

    async fn check_once(&mut self) -> Result<Sample, CheckError> {
        // A check cut short mid-query leaves the connection Busy with unread bytes: unusable.
        if self.conn.as_ref().is_some_and(|c| !c.is_reusable()) {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                self.connects += 1;
                let params = [("application_name".to_string(), APPLICATION_NAME.to_string())];
                let conn = backend::connect(
                    &self.addr,
                    &self.login,
                    &params,
                    0,
                    self.connects,
                    self.connect_timeout,
                )
                .await?;
                self.conn.insert(conn)
            }
        };
        let outcome = conn.run_simple(HEALTH_QUERY).await;
        if !conn.is_reusable() {
            self.conn = None;
        }
        let outcome = outcome?;
        let addr = || self.addr.to_string();
        if let Some(error) = outcome.parsed_error() {
            return Err(CheckError::Query {
                addr: addr(),
                code: error.code,
                message: error.message,
            });
        }
        let Some(row) = outcome.first_row else {
            return Err(CheckError::BadRow {
                addr: addr(),
                reason: "no row",
            });
        };
        parse_sample(&self.addr, &row)
    }
}

impl Probe for Monitor {
    fn check(&mut self) -> impl Future<Output = Result<Sample, CheckError>> + Send {
        self.check_once()
    }

    async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.terminate().await;
        }
    }
}

/// Interprets the row of [`HEALTH_QUERY`].
pub(crate) fn parse_sample(addr: &str, row: &[Option<String>]) -> Result<Sample, CheckError> {
    let bad = |reason| CheckError::BadRow {
        addr: addr.to_string(),
        reason,
    };
    let [in_recovery, lsn, receive_lsn, timeline, replay_age] = row else {
        return Err(bad("expected 5 columns"));
    };
    let role = match in_recovery.as_deref() {
        Some("t") => Role::Standby,
        Some("f") => Role::Primary,
        _ => return Err(bad("pg_is_in_recovery() is not a boolean")),
    };
    let lsn_column = |value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => Lsn::parse(text).map(Some).ok_or_else(|| bad("invalid LSN")),
    };
    let timeline = match timeline {
        None => None,
        Some(text) => Some(text.parse::<u32>().map_err(|_| bad("invalid timeline"))?),
    };
    let replay_age = match replay_age {
        None => None,
        Some(text) => {
            let seconds: f64 = text.parse().map_err(|_| bad("invalid replay age"))?;
            // now() is taken at statement start, so a transaction replayed meanwhile looks
            // slightly in the future.
            Some(Duration::try_from_secs_f64(seconds.max(0.0)).map_err(|_| bad("invalid replay age"))?)
        }
    };
    Ok(Sample {
        role,
        lsn: lsn_column(lsn)?,
        receive_lsn: lsn_column(receive_lsn)?,
        timeline,
        replay_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn samples_from_primary_and_standby_rows() {
        let primary =
            parse_sample("n", &row(&[Some("f"), Some("0/3000AF8"), None, Some("2"), None])).unwrap();
        assert_eq!(primary.role, Role::Primary);
        assert_eq!(primary.lsn, Some(Lsn(0x300_0AF8)));
        assert_eq!(
            (primary.receive_lsn, primary.timeline, primary.replay_age),
            (None, Some(2), None)
        );

        let standby = row(&[
            Some("t"),
            Some("16/B374D848"),
            Some("16/B374D900"),
            Some("1"),
            Some("1.5"),
        ]);
        let standby = parse_sample("n", &standby).unwrap();
        assert_eq!(standby.role, Role::Standby);
        assert_eq!(standby.lsn, Some(Lsn(0x16_B374_D848)));
        assert_eq!(standby.receive_lsn, Some(Lsn(0x16_B374_D900)));
        assert_eq!(standby.replay_age, Some(Duration::from_millis(1500)));

        let ahead = parse_sample("n", &row(&[Some("t"), None, None, Some("1"), Some("-0.002")])).unwrap();
        assert_eq!(ahead.replay_age, Some(Duration::ZERO), "clamped at zero");
    }

    #[test]
    fn malformed_samples_are_errors_naming_the_node() {
        for bad in [
            row(&[Some("t")]),
            row(&[Some("yes"), None, None, None, None]),
            row(&[Some("f"), Some("3000AF8"), None, None, None]),
            row(&[Some("f"), None, None, Some("-1"), None]),
            row(&[Some("t"), None, None, None, Some("soon")]),
        ] {
            let error = parse_sample("db1:5432", &bad).unwrap_err();
            assert!(error.to_string().contains("db1:5432"), "{error}");
        }
    }

    #[test]
    fn lsn_text_form() {
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("FFFFFFFF/FFFFFFFF"), Some(Lsn(u64::MAX)));
        assert_eq!(Lsn::parse("1/100000000"), None);
        assert_eq!(Lsn::parse("12"), None);
    }
}
