//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS, with PgBouncer 1.25's column names
//! (each half of SHOW STATS drops its `total_` / `avg_` prefix) and its `numeric` type.

use super::{s, Table, NUMERIC, TEXT};
use crate::admin::averages::{Averages, Totals};
use crate::app::Shared;

/// Which SHOW of the stats family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `total_…` then `avg_…` columns.
    Both,
    Totals,
    Averages,
}

/// The totals columns in SHOW STATS (`total_` + name) and SHOW STATS_TOTALS (name alone).
const TOTALS: [&str; 11] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

/// SHOW STATS' `avg_` columns.
const AVERAGES: [&str; 11] = [
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];

/// STATS_TOTALS and STATS_AVERAGES share these names; PgBouncer keeps the `avg_` prefix on
/// the prepared-statement columns of STATS_AVERAGES only.
const SPLIT: [&str; 8] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];

/// Column names of one table of the family.
fn columns(kind: Kind) -> Vec<String> {
    let mut names = vec!["database".to_string()];
    match kind {
        Kind::Both => {
            names.extend(TOTALS.iter().map(|c| format!("total_{c}")));
            names.extend(AVERAGES.iter().map(|c| c.to_string()));
        }
        Kind::Totals => {
            names.extend(SPLIT.iter().map(|c| c.to_string()));
            names.extend(TOTALS[8..].iter().map(|c| c.to_string()));
        }
        Kind::Averages => {
            names.extend(SPLIT.iter().map(|c| c.to_string()));
            names.extend(AVERAGES[8..].iter().map(|c| c.to_string()));
        }
    }
    names
}

fn total_values(m: &Totals) -> [u64; 11] {
    // Transaction time is measured as the time requests ran on a backend.
    [
        m.assignments,
        m.xacts,
        m.queries,
        m.received,
        m.sent,
        m.query_time,
        m.query_time,
        m.wait_time,
        m.client_parses,
        m.server_parses,
        m.binds,
    ]
}

fn average_values(a: &Averages) -> [u64; 11] {
    [
        a.assignments,
        a.xacts,
        a.queries,
        a.received,
        a.sent,
        a.xact_time,
        a.query_time,
        a.wait_time,
        a.client_parses,
        a.server_parses,
        a.binds,
    ]
}

/// SHOW STATS and its halves: totals since start, averages of the last completed
/// `stats_period` (`averages.rs`). With `show_legacy_columns`, SHOW STATS also ends with
/// PgBouncer 1.7's `total_requests` (its queries), which old exporters read.
pub fn stats(shared: &Shared, kind: Kind) -> Table {
    let legacy = kind == Kind::Both && shared.snapshot().config.proxy.show_legacy_columns;
    let mut names = columns(kind);
    if legacy {
        names.push("total_requests".into());
    }
    let mut t = Table::with_owned(names.into_iter().map(|n| (n, NUMERIC)).collect());
    t.columns[0].1 = TEXT;
    for (database, m) in Totals::collect(shared) {
        let mut row = vec![s(&database)];
        if kind != Kind::Averages {
            row.extend(total_values(&m).iter().map(s));
        }
        if kind != Kind::Totals {
            row.extend(
                average_values(&shared.stats.last_period.get(&database))
                    .iter()
                    .map(s),
            );
        }
        if legacy {
            row.push(s(m.queries));
        }
        t.push(row);
    }
    t
}

/// SHOW TOTALS: SHOW STATS summed over every database, as (name, value) rows named as
/// PgBouncer 1.25 names them. The averages' rates add up; their mean times are weighted by
/// each database's rate of transactions, queries or assignments.
pub fn totals(shared: &Shared) -> Table {
    let per_db = Totals::collect(shared);
    let mut sum = [0u64; 11];
    let mut avg = [0u64; 11];
    // Weighted sums of the mean times (index 5, 6, 7), divided at the end.
    let mut weighted = [0u128; 3];
    for (database, m) in &per_db {
        for (acc, v) in sum.iter_mut().zip(total_values(m)) {
            *acc += v;
        }
        let a = average_values(&shared.stats.last_period.get(database));
        for (i, v) in a.iter().enumerate() {
            match i {
                5..=7 => weighted[i - 5] += u128::from(*v) * u128::from(a[weight_of(i)]),
                _ => avg[i] += v,
            }
        }
    }
    for i in 5..=7 {
        avg[i] = weighted[i - 5]
            .checked_div(u128::from(avg[weight_of(i)]))
            .unwrap_or(0) as u64;
    }
    const NAMES: [&str; 11] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
    ];
    let mut t = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
    for (prefix, values) in [("total", sum), ("avg", avg)] {
        for (name, v) in NAMES.iter().zip(values) {
            t.push(vec![s(format!("{prefix}_{name}")), s(v)]);
        }
    }
    t
}

/// The count whose rate weighs mean time `i`: transactions, queries, assignments.
fn weight_of(i: usize) -> usize {
    match i {
        5 => 1,
        6 => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halves_are_named_as_pgbouncer_1_25_names_them() {
        let totals = columns(Kind::Totals);
        assert_eq!(
            totals[1..4],
            ["server_assignment_count", "xact_count", "query_count"]
        );
        assert_eq!(totals[4..6], ["bytes_received", "bytes_sent"]);
        assert_eq!(totals.last().map(String::as_str), Some("bind_count"));
        let averages = columns(Kind::Averages);
        assert_eq!(averages[4], "bytes_received");
        assert_eq!(averages.last().map(String::as_str), Some("avg_bind_count"));
        let both = columns(Kind::Both);
        assert_eq!(both.len(), 23);
        assert_eq!(both[4], "total_received");
        assert_eq!(both[15], "avg_recv");
    }
}
