//! SHOW STATS' numbers per database: the totals since start, and the averages of the last
//! completed `proxy.stats_period`, which one background task computes from a snapshot of the
//! totals taken at the end of each period (PgBouncer's semantics: rates per second for counts
//! and bytes, means per transaction, query or assignment for times). Until a first period
//! has completed the averages are 0.

use crate::app::Shared;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// One database's counters, summed over its pools (every user and node).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    /// Microseconds. tidepool measures time spent on requests, not whole transactions (idle
    /// time inside a transaction is not counted), so SHOW STATS shows it as both.
    pub query_time: u64,
    pub wait_time: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

impl Totals {
    /// Every configured database (zeros until used) and every database with a pool.
    pub fn collect(shared: &Shared) -> BTreeMap<String, Totals> {
        let mut per_db: BTreeMap<String, Totals> = shared
            .snapshot()
            .config
            .databases
            .keys()
            .filter(|name| *name != crate::config::WILDCARD_DATABASE)
            .map(|name| (name.clone(), Totals::default()))
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for pool in shared.pools.all() {
            let st = &pool.stats;
            let t = per_db.entry(pool.key.database.clone()).or_default();
            t.assignments += load(&st.checkouts);
            t.xacts += load(&st.transactions);
            t.queries += load(&st.queries);
            t.received += load(&st.received);
            t.sent += load(&st.sent);
            t.query_time += load(&st.query_time_us);
            t.wait_time += load(&st.wait_time_us);
            t.client_parses += load(&st.client_parses);
            t.server_parses += load(&st.server_parses);
            t.binds += load(&st.binds);
        }
        per_db
    }

    /// What happened between `earlier` and `self`. Saturating: a pool dropped by a reload
    /// takes its counts with it, and a period must not turn that into a huge number.
    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            assignments: self.assignments.saturating_sub(earlier.assignments),
            xacts: self.xacts.saturating_sub(earlier.xacts),
            queries: self.queries.saturating_sub(earlier.queries),
            received: self.received.saturating_sub(earlier.received),
            sent: self.sent.saturating_sub(earlier.sent),
            query_time: self.query_time.saturating_sub(earlier.query_time),
            wait_time: self.wait_time.saturating_sub(earlier.wait_time),
            client_parses: self.client_parses.saturating_sub(earlier.client_parses),
            server_parses: self.server_parses.saturating_sub(earlier.server_parses),
            binds: self.binds.saturating_sub(earlier.binds),
        }
    }
}

/// The avg_ columns of one database for one period.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Averages {
    /// Per second.
    pub assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    /// Microseconds per transaction, per query, per assignment.
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
}

impl Averages {
    /// The averages of what happened (`delta`) over `elapsed`.
    pub fn over(delta: &Totals, elapsed: Duration) -> Averages {
        // Whole microseconds, so that a period of a fraction of a second still divides.
        let us = elapsed.as_micros().max(1);
        let rate = |n: u64| (u128::from(n) * 1_000_000 / us) as u64;
        let mean = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
        Averages {
            assignments: rate(delta.assignments),
            xacts: rate(delta.xacts),
            queries: rate(delta.queries),
            received: rate(delta.received),
            sent: rate(delta.sent),
            client_parses: rate(delta.client_parses),
            server_parses: rate(delta.server_parses),
            binds: rate(delta.binds),
            xact_time: mean(delta.query_time, delta.xacts),
            query_time: mean(delta.query_time, delta.queries),
            wait_time: mean(delta.wait_time, delta.assignments),
        }
    }
}

/// The averages of the last completed period, per database.
#[derive(Debug, Default)]
pub struct LastPeriod {
    averages: Mutex<BTreeMap<String, Averages>>,
}

impl LastPeriod {
    /// The averages of `database` (zeros before the first period ends).
    pub fn get(&self, database: &str) -> Averages {
        let map = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        map.get(database).copied().unwrap_or_default()
    }

    fn store(&self, averages: BTreeMap<String, Averages>) {
        *self.averages.lock().unwrap_or_else(|p| p.into_inner()) = averages;
    }
}

/// Every `proxy.stats_period` (read again each period, so a reload applies from the next
/// one): the totals now, minus those at the start of the period, over the time that really
/// passed. Ends at shutdown or when the proxy is gone; a drain (WAIT_FOR_CLIENTS) still counts.
pub(crate) async fn run(shared: Weak<Shared>) {
    let Some(first) = shared.upgrade() else {
        return;
    };
    let mut before = (Instant::now(), Totals::collect(&first));
    drop(first);
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let period = strong.snapshot().config.proxy.stats_period.0;
        let sleep = tokio::time::sleep(period);
        tokio::select! {
            _ = sleep => {}
            _ = strong.shutdown.wait() => return,
        }
        let now = (Instant::now(), Totals::collect(&strong));
        let elapsed = now.0.duration_since(before.0);
        let averages = now
            .1
            .iter()
            .map(|(db, totals)| {
                let earlier = before.1.get(db).copied().unwrap_or_default();
                (db.clone(), Averages::over(&totals.since(&earlier), elapsed))
            })
            .collect();
        strong.stats.last_period.store(averages);
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_times_per_event() {
        let delta = Totals {
            assignments: 30,
            xacts: 20,
            queries: 40,
            received: 6_000,
            sent: 12_000,
            query_time: 80_000,
            wait_time: 3_000,
            client_parses: 10,
            server_parses: 4,
            binds: 60,
        };
        let avg = Averages::over(&delta, Duration::from_secs(2));
        assert_eq!(
            avg,
            Averages {
                assignments: 15,
                xacts: 10,
                queries: 20,
                received: 3_000,
                sent: 6_000,
                client_parses: 5,
                server_parses: 2,
                binds: 30,
                xact_time: 4_000,
                query_time: 2_000,
                wait_time: 100,
            }
        );
        // Nothing happened: zeros, no division by zero.
        let idle = Averages::over(&Totals::default(), Duration::from_secs(60));
        assert_eq!(idle, Averages::default());
        // A period shorter than a second still gives a rate per second.
        let short = Totals {
            queries: 5,
            ..Totals::default()
        };
        assert_eq!(Averages::over(&short, Duration::from_millis(500)).queries, 10);
    }

    #[test]
    fn a_counter_that_went_down_counts_as_nothing() {
        let earlier = Totals {
            queries: 10,
            binds: 3,
            ..Totals::default()
        };
        let later = Totals {
            queries: 4,
            binds: 5,
            ..Totals::default()
        };
        let delta = later.since(&earlier);
        assert_eq!((delta.queries, delta.binds), (0, 2));
    }
}
