//! Frame sequences and what the tracker must make of them: no socket, no server.

use super::*;
use TransactionStatus::{Failed, Idle, InTransaction};

/// A frame as the tracker sees it: `>x` client to server, `<x` server to client, `<Z` + status.
fn frames(script: &str) -> Vec<(Direction, u8, Vec<u8>)> {
    script
        .split_whitespace()
        .map(|word| {
            let bytes = word.as_bytes();
            let direction = match bytes[0] {
                b'>' => Direction::Frontend,
                b'<' => Direction::Backend,
                _ => panic!("bad direction in {word}"),
            };
            (direction, bytes[1], bytes[2..].to_vec())
        })
        .collect()
}

fn run(tracker: &mut Tracker, script: &str) -> Vec<Step> {
    frames(script)
        .into_iter()
        .map(|(direction, tag, body)| tracker.step(direction, tag, &body))
        .collect()
}

/// What a state looks like from outside.
#[derive(Debug, PartialEq)]
struct Seen {
    pending: u32,
    quiet: bool,
    batch_open: bool,
    copy_in: bool,
    status: TransactionStatus,
    statement_only: bool,
}

fn seen(t: &Tracker) -> Seen {
    Seen {
        pending: t.pending(),
        quiet: t.is_quiet(),
        batch_open: t.batch_open(),
        copy_in: t.in_copy_in(),
        status: t.status(),
        statement_only: t.statement_only_batch(),
    }
}

const QUIET: Seen = Seen {
    pending: 0,
    quiet: true,
    batch_open: false,
    copy_in: false,
    status: Idle,
    statement_only: false,
};

#[test]
fn table() {
    // (what, frames, state after them)
    let cases: &[(&str, &str, Seen)] = &[
        ("simple query answered", ">Q <T <D <C <ZI", QUIET),
        (
            "simple query outstanding",
            ">Q <T <D",
            Seen {
                pending: 1,
                quiet: false,
                ..QUIET
            },
        ),
        ("empty query", ">Q <I <ZI", QUIET),
        ("function call", ">F <V <ZI", QUIET),
        ("extended, one batch", ">P >B >D >E >S <1 <2 <T <D <C <ZI", QUIET),
        (
            "two pipelined batches, one answered",
            ">P >B >E >S >B >E >S <1 <2 <C <ZI <2",
            Seen {
                pending: 1,
                quiet: false,
                ..QUIET
            },
        ),
        (
            "two pipelined batches answered",
            ">P >B >E >S >B >E >S <1 <2 <C <ZI <2 <C <ZI",
            QUIET,
        ),
        (
            "error mid-batch: the server skips to Sync, the next batch runs",
            ">P >B >E >S >P >B >E >S <E <ZI <1 <2 <C <ZI",
            QUIET,
        ),
        (
            "statement-only batch flushed (asyncpg prepares)",
            ">P >D >H <1 <t <T",
            Seen {
                batch_open: true,
                quiet: false,
                statement_only: true,
                ..QUIET
            },
        ),
        (
            "flushed batch with a portal ties the backend",
            ">P >B >H <1 <2",
            Seen {
                batch_open: true,
                quiet: false,
                ..QUIET
            },
        ),
        (
            "statement-only batch inside a transaction is not let go",
            ">Q <C <ZT >P >H <1",
            Seen {
                batch_open: true,
                quiet: false,
                status: InTransaction,
                ..QUIET
            },
        ),
        ("flushed batch closed by Sync", ">P >D >H <1 <t <T >S <ZI", QUIET),
        (
            "COPY FROM STDIN by Query: reading data",
            ">Q <G >d >d",
            Seen {
                pending: 1,
                quiet: false,
                copy_in: true,
                ..QUIET
            },
        ),
        (
            "COPY FROM STDIN by Query: Sync and Flush in the data are ignored",
            ">Q <G >d >S >H >c <C <ZI",
            QUIET,
        ),
        (
            "COPY FROM STDIN failed by the client",
            ">Q <G >d >f <E <ZI",
            QUIET,
        ),
        (
            "COPY by Execute with the Sync sent at once: the COPY swallows the Sync",
            ">P >B >E >S <1 <2 <G >d >c >S <C <ZI",
            QUIET,
        ),
        (
            "COPY by Execute, swallowed Sync, data not ended yet",
            ">P >B >E >S <1 <2 <G >d",
            Seen {
                pending: 0,
                quiet: false,
                batch_open: true,
                copy_in: true,
                ..QUIET
            },
        ),
        (
            "COPY by Execute with data and CopyDone sent ahead",
            ">P >B >E >d >c >S <1 <2 <G <C <ZI",
            QUIET,
        ),
        ("COPY TO STDOUT", ">Q <H <d <d <c <C <ZI", QUIET),
        (
            "transaction opened",
            ">Q <C <ZT",
            Seen {
                status: InTransaction,
                ..QUIET
            },
        ),
        (
            "transaction failed",
            ">Q <C <ZT >Q <E <ZE",
            Seen {
                status: Failed,
                ..QUIET
            },
        ),
        ("transaction rolled back", ">Q <C <ZT >Q <E <ZE >Q <C <ZI", QUIET),
        ("stray ReadyForQuery does not underflow", "<ZI <ZI", QUIET),
        (
            "notices, notifications and parameters change nothing",
            "<N <A <S",
            QUIET,
        ),
    ];
    for (what, script, expected) in cases {
        let mut tracker = Tracker::default();
        run(&mut tracker, script);
        assert_eq!(&seen(&tracker), expected, "{what}: {script}");
    }
}

#[test]
fn steps_tell_the_relay_what_happened() {
    let mut t = Tracker::default();
    assert_eq!(
        run(&mut t, ">P >B >E >S >Q >F >X"),
        [
            Step::Pass,
            Step::Pass,
            Step::Pass,
            Step::Request,
            Step::Request,
            Step::Request,
            Step::Terminate
        ]
    );
    assert_eq!(
        run(&mut t, "<C <ZT <E <ZE <ZI"),
        [
            Step::Pass,
            Step::Ready {
                status: InTransaction,
                quiet: false
            },
            Step::Error,
            Step::Ready {
                status: Failed,
                quiet: false
            },
            Step::Ready {
                status: Idle,
                quiet: true
            },
        ]
    );
    assert_eq!(run(&mut t, "<Zx"), [Step::BadReady]);
    assert_eq!(run(&mut t, "<Z"), [Step::BadReady]);
}

#[test]
fn copy_in_reports_swallowed_syncs() {
    let mut t = Tracker::default();
    let steps = run(&mut t, ">P >B >E >S >S <1 <2 <G");
    assert_eq!(steps.last(), Some(&Step::CopyIn { swallowed: 2 }));
    assert_eq!(
        run(&mut t, ">S >H"),
        [Step::IgnoredByServer, Step::IgnoredByServer]
    );
    // By Query, nothing is swallowed.
    let mut t = Tracker::default();
    assert_eq!(run(&mut t, ">Q <G").last(), Some(&Step::CopyIn { swallowed: 0 }));
}

#[test]
fn errors_are_seen_until_ready() {
    let mut t = Tracker::default();
    run(&mut t, ">P >B >E >S <E");
    assert!(t.error_seen());
    run(&mut t, "<ZI");
    assert!(!t.error_seen());
}

#[test]
fn copy_out_is_followed() {
    let mut t = Tracker::default();
    run(&mut t, ">Q <H <d");
    assert!(t.in_copy_out());
    run(&mut t, "<c");
    assert!(!t.in_copy_out());
    run(&mut t, ">Q <H <E");
    assert!(!t.in_copy_out(), "an error ends COPY OUT");
}

#[test]
fn a_tracker_can_start_inside_a_transaction() {
    let t = Tracker::at(InTransaction);
    assert!(t.is_quiet());
    assert_eq!(t.status(), InTransaction);
    assert!(!t.is_idle());
}
