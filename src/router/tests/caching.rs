//! The classification cache: hits that ignore leading comments, and the byte budget.

use super::*;

#[test]
fn cache_hits_ignore_leading_comments() {
    let classifier = classifier();
    let sql = "SELECT * FROM t WHERE id = $1";
    let first = classifier.classify(sql);
    assert_eq!(classifier.cache_stats().misses, 1);
    assert_eq!(classifier.classify(sql), first);
    let hinted = classifier.classify(&format!("/* tidepool: standby */ {sql}"));
    assert_eq!(hinted.hint, Some(Hint::Standby));
    assert_eq!((hinted.access, hinted.reason), (first.access, first.reason));
    let stats = classifier.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
    // Shortcut writes never touch the cache.
    classifier.classify("INSERT INTO t VALUES (1)");
    assert_eq!(classifier.cache_stats().entries, 1);
}

#[test]
fn cache_stays_within_budget() {
    let config = ClassifierConfig {
        cache_bytes: 16 * 1024,
        ..ClassifierConfig::default()
    };
    let classifier = Classifier::new(&config).unwrap();
    for i in 0..2000 {
        let sql = format!("SELECT {i} FROM t");
        assert_eq!(classifier.classify(&sql).access, R);
        assert!(classifier.cache_stats().bytes <= 16 * 1024);
    }
    let stats = classifier.cache_stats();
    assert!(stats.evictions > 0 && stats.entries > 0, "{stats:?}");
    // Too big to cache against this budget: classified, not stored.
    let big = format!("SELECT 1 FROM t WHERE a IN ({})", vec!["1"; 1000].join(","));
    assert_eq!(classifier.classify(&big).access, R);
    let disabled = Classifier::new(&ClassifierConfig {
        cache_bytes: 0,
        ..config
    })
    .unwrap();
    assert_eq!(disabled.classify("SELECT 1").access, R);
    assert_eq!(disabled.cache_stats(), CacheStats::default());
}
