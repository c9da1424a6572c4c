//! Classifier tests: a table over every rule, control statements, hints, configurable
//! function lists, the cache, tokenizer assumptions, and never-panic properties.
//!
//! This file holds the shared helpers and the tests of the classifier as a whole; the themed
//! modules hold the rest.

mod caching;
mod control;
mod functions;
mod robustness;
mod statements;

use super::*;

const R: Access = Access::Read;
const W: Access = Access::Write;

fn classifier() -> Classifier {
    Classifier::new(&ClassifierConfig::default()).unwrap()
}

/// Runs a table, reporting every mismatch at once.
fn check_table(classifier: &Classifier, cases: &[(&str, Access, Reason)]) {
    let mut failures = Vec::new();
    for &(sql, access, reason) in cases {
        let got = classifier.classify(sql);
        if (got.access, got.reason) != (access, reason) {
            failures.push(format!("{sql:?}: expected {access:?}/{reason:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reason_labels_are_distinct() {
    let reasons = [
        Reason::Empty,
        Reason::Read,
        Reason::Shortcut,
        Reason::Control,
        Reason::Write,
        Reason::WritableCte,
        Reason::LockingRead,
        Reason::SelectInto,
        Reason::WriteFunction,
        Reason::Unparsable,
    ];
    let labels: std::collections::HashSet<_> = reasons.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), reasons.len());
}

#[test]
fn classifier_is_shareable_across_sessions() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
    assert!(format!("{:?}", classifier()).contains("Classifier"));
}
