//! Table tests of the session's one transition function: every phase × event, no socket.

use super::{step, Effect, Event, Phase, Sharing};

const fn sharing(transaction_mode: bool, per_transaction: bool, pinned: bool) -> Event {
    Event::BetweenTransactions(Sharing {
        transaction_mode,
        per_transaction,
        pinned,
    })
}

#[test]
fn transitions() {
    use Effect::*;
    use Phase::*;
    #[rustfmt::skip]
    let table: &[(Phase, Event, Phase, Effect)] = &[
        // Checking out.
        (Idle, Event::CheckedOut, Attached, Take),
        (Attached, Event::CheckedOut, Attached, DiscardIncoming),
        (Closed, Event::CheckedOut, Closed, DiscardIncoming),
        // Login: transaction mode gives the backend back once the welcome is sent.
        (Attached, Event::Welcomed { transaction_mode: true }, Idle, Release),
        (Attached, Event::Welcomed { transaction_mode: false }, Attached, None),
        // Between transactions.
        (Attached, sharing(true, true, false), Idle, Release),
        (Attached, sharing(true, true, true), Attached, None),
        (Attached, sharing(false, true, false), Idle, Park),
        (Attached, sharing(false, true, true), Attached, None),
        (Attached, sharing(false, false, false), Attached, None),
        // A statement-only batch tidepool closed itself.
        (Attached, Event::BatchClosed { ok: true, pinned: false }, Idle, Release),
        (Attached, Event::BatchClosed { ok: true, pinned: true }, Attached, None),
        (Attached, Event::BatchClosed { ok: false, pinned: false }, Idle, Discard),
        (Attached, Event::BatchClosed { ok: false, pinned: true }, Idle, Discard),
        // Failures.
        (Attached, Event::Refused, Idle, Release),
        (Attached, Event::Lost, Idle, Discard),
        // The client leaves.
        (Attached, Event::Left { cleaned: true }, Closed, Release),
        (Attached, Event::Left { cleaned: false }, Closed, Discard),
        (Idle, Event::Left { cleaned: true }, Closed, None),
        (Closed, Event::Left { cleaned: false }, Closed, None),
        // No backend: nothing to move.
        (Idle, Event::Lost, Idle, None),
        (Idle, Event::Refused, Idle, None),
        (Idle, sharing(true, true, false), Idle, None),
        (Idle, Event::Welcomed { transaction_mode: true }, Idle, None),
        (Idle, Event::BatchClosed { ok: true, pinned: false }, Idle, None),
        (Closed, Event::Lost, Closed, None),
    ];
    for &(from, event, to, effect) in table {
        assert_eq!(step(from, event), (to, effect), "{from:?} --{event:?}-->");
    }
}

#[test]
fn a_backend_leaves_only_by_an_effect_that_hands_it_on() {
    // Every way out of Attached either keeps the backend or moves it somewhere named.
    let events = [
        Event::Welcomed {
            transaction_mode: true,
        },
        Event::Welcomed {
            transaction_mode: false,
        },
        sharing(true, false, false),
        sharing(false, true, false),
        sharing(false, false, true),
        Event::BatchClosed {
            ok: true,
            pinned: false,
        },
        Event::BatchClosed {
            ok: false,
            pinned: false,
        },
        Event::Refused,
        Event::Lost,
        Event::Left { cleaned: true },
        Event::Left { cleaned: false },
    ];
    for event in events {
        let (to, effect) = step(Phase::Attached, event);
        let kept = to == Phase::Attached;
        assert_eq!(kept, effect == Effect::None, "{event:?}: {to:?} {effect:?}");
        if !kept {
            assert!(
                matches!(effect, Effect::Release | Effect::Discard | Effect::Park),
                "{event:?}"
            );
        }
    }
}
