//! Classifier cost: a cached decision, a first-keyword shortcut, and a full parse.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tidepool::router::{Classifier, ClassifierConfig};

/// About 100 bytes, the size the issue measured sqlparser on.
const SELECT: &str =
    "SELECT id, name, email FROM users WHERE tenant_id = $1 AND created_at > $2 ORDER BY id LIMIT 50";

fn route(c: &mut Criterion) {
    let cached = Classifier::new(&ClassifierConfig::default()).unwrap();
    assert!(cached.classify(SELECT).is_read());
    let uncached = Classifier::new(&ClassifierConfig {
        cache_bytes: 0,
        ..ClassifierConfig::default()
    })
    .unwrap();
    let hinted = format!("/* tidepool: standby, max_lag=200ms */ {SELECT}");
    let insert = "INSERT INTO events (tenant_id, kind, payload) VALUES ($1, $2, $3) RETURNING id";

    let mut group = c.benchmark_group("classify");
    group.bench_function("cached_select_100b", |b| {
        b.iter(|| cached.classify(black_box(SELECT)))
    });
    group.bench_function("cached_select_with_hint", |b| {
        b.iter(|| cached.classify(black_box(&hinted)))
    });
    group.bench_function("shortcut_insert", |b| {
        b.iter(|| cached.classify(black_box(insert)))
    });
    group.bench_function("cached_begin", |b| b.iter(|| cached.classify(black_box("BEGIN"))));
    group.bench_function("uncached_select_100b", |b| {
        b.iter(|| uncached.classify(black_box(SELECT)))
    });
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
