//! Unit tests of the pool bookkeeping: no network, no runtime needed beyond oneshot channels.

use super::*;

#[derive(Debug, PartialEq, Eq)]
struct Fake {
    id: u32,
    sig: u64,
    created: Instant,
}

impl Pooled for Fake {
    fn signature(&self) -> u64 {
        self.sig
    }
    fn created(&self) -> Instant {
        self.created
    }
}

fn fake(id: u32, sig: u64) -> Fake {
    Fake {
        id,
        sig,
        created: Instant::now(),
    }
}

fn limits(pool_size: usize) -> Limits {
    Limits {
        pool_size,
        reserve_size: 0,
        min_size: 0,
    }
}

#[test]
fn connects_until_full_then_waits_fifo() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(2));
    assert!(matches!(core.acquire(None), Acquire::Connect));
    assert!(matches!(core.acquire(None), Acquire::Connect));
    let Acquire::Wait { grant: mut first, .. } = core.acquire(None) else {
        panic!("expected wait")
    };
    let Acquire::Wait {
        grant: mut second, ..
    } = core.acquire(None)
    else {
        panic!("expected wait")
    };
    assert_eq!(core.waiting(), 2);
    assert!(matches!(
        core.release(fake(1, 0), Instant::now()),
        Released::HandedOff
    ));
    assert!(matches!(first.try_recv(), Ok(Grant::Conn(Fake { id: 1, .. }))));
    assert!(second.try_recv().is_err());
    assert!(matches!(
        core.release(fake(2, 0), Instant::now()),
        Released::HandedOff
    ));
    assert!(matches!(second.try_recv(), Ok(Grant::Conn(Fake { id: 2, .. }))));
    assert_eq!(core.open(), 2);
}

#[test]
fn idle_connections_are_reused_most_recent_first() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(3));
    for _ in 0..2 {
        assert!(matches!(core.acquire(None), Acquire::Connect));
    }
    core.release(fake(1, 0), Instant::now());
    core.release(fake(2, 0), Instant::now());
    assert!(matches!(core.acquire(None), Acquire::Idle(Fake { id: 2, .. })));
    assert_eq!(core.idle_count(), 1);
}

#[test]
fn abandoned_waiters_are_skipped() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    assert!(matches!(core.acquire(None), Acquire::Connect));
    let Acquire::Wait { grant, .. } = core.acquire(None) else {
        panic!()
    };
    drop(grant);
    assert!(matches!(
        core.release(fake(1, 0), Instant::now()),
        Released::Stored
    ));
    assert_eq!(core.idle_count(), 1);
    assert_eq!(core.waiting(), 0);
}

#[test]
fn cancel_wait_removes_only_pending_waiters() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    core.acquire(None);
    let Acquire::Wait { waiter, .. } = core.acquire(None) else {
        panic!()
    };
    assert!(core.cancel_wait(waiter));
    assert!(!core.cancel_wait(waiter));
    assert_eq!(core.waiting(), 0);
}

#[test]
fn session_mode_matches_signatures_and_replaces_mismatches() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    assert!(matches!(core.acquire(Some(7)), Acquire::Connect));
    core.release(fake(1, 7), Instant::now());
    assert!(matches!(core.acquire(Some(7)), Acquire::Idle(Fake { id: 1, .. })));
    core.release(fake(1, 7), Instant::now());
    // Pool full with a connection of other parameters: it is replaced, the slot is kept.
    assert!(matches!(
        core.acquire(Some(8)),
        Acquire::Replace(Fake { id: 1, .. })
    ));
    assert_eq!(core.open(), 1);
}

#[test]
fn mismatched_release_hands_the_slot_to_the_waiter() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    core.acquire(Some(1));
    let Acquire::Wait { mut grant, .. } = core.acquire(Some(2)) else {
        panic!()
    };
    assert!(matches!(
        core.release(fake(1, 1), Instant::now()),
        Released::Close(_)
    ));
    assert!(matches!(grant.try_recv(), Ok(Grant::Slot)));
    assert_eq!(core.open(), 1);
}

#[test]
fn forget_frees_the_slot_for_a_waiter() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    core.acquire(None);
    let Acquire::Wait { mut grant, .. } = core.acquire(None) else {
        panic!()
    };
    core.forget();
    assert!(matches!(grant.try_recv(), Ok(Grant::Slot)));
    assert_eq!(core.open(), 1);
    core.forget();
    assert_eq!(core.open(), 0);
}

#[test]
fn reserve_allows_extra_connections_up_to_its_size() {
    let mut core: PoolCore<Fake> = PoolCore::new(Limits {
        pool_size: 1,
        reserve_size: 1,
        min_size: 0,
    });
    core.acquire(None);
    let Acquire::Wait { waiter: a, .. } = core.acquire(None) else {
        panic!()
    };
    let Acquire::Wait { waiter: b, .. } = core.acquire(None) else {
        panic!()
    };
    assert!(core.try_reserve(a));
    assert!(!core.try_reserve(b));
    assert_eq!(core.open(), 2);
    // Back under the normal size, the extra connection is closed at release, not kept.
    assert!(core.cancel_wait(b));
    assert!(matches!(
        core.release(fake(1, 0), Instant::now()),
        Released::Close(_)
    ));
    assert_eq!(core.open(), 1);
}

#[test]
fn expire_respects_idle_timeout_lifetime_and_min_size() {
    let mut core: PoolCore<Fake> = PoolCore::new(Limits {
        pool_size: 3,
        reserve_size: 0,
        min_size: 1,
    });
    for _ in 0..3 {
        core.acquire(None);
    }
    let start = Instant::now();
    for id in 0..3 {
        core.release(fake(id, 0), start);
    }
    let later = start + Duration::from_secs(10);
    let gone = core.expire(later, Some(Duration::from_secs(5)), None);
    assert_eq!(gone.len(), 2, "min_size keeps one");
    assert_eq!(core.open(), 1);
    let gone = core.expire(later, None, Some(Duration::from_secs(1)));
    assert_eq!(gone.len(), 1, "lifetime ignores min_size");
    assert_eq!(core.open(), 0);
    assert_eq!(core.prewarm(), 1);
    assert_eq!(core.open(), 1);
}

#[test]
fn growing_on_reload_hands_new_slots_to_waiters_and_shrinking_closes_at_release() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(1));
    assert!(matches!(core.acquire(None), Acquire::Connect));
    let mut grants = Vec::new();
    for _ in 0..3 {
        let Acquire::Wait { grant, .. } = core.acquire(None) else {
            panic!("expected wait")
        };
        grants.push(grant);
    }
    core.set_limits(limits(3));
    assert_eq!(core.open(), 3, "two new slots taken at once");
    assert!(matches!(grants[0].try_recv(), Ok(Grant::Slot)));
    assert!(matches!(grants[1].try_recv(), Ok(Grant::Slot)));
    assert!(grants[2].try_recv().is_err(), "the third still waits");
    assert_eq!(core.waiting(), 1);

    // Shrink to 1: connections coming back close until the pool fits, then the waiter gets one.
    core.set_limits(limits(1));
    assert!(matches!(
        core.release(fake(1, 0), Instant::now()),
        Released::Close(_)
    ));
    assert!(matches!(
        core.release(fake(2, 0), Instant::now()),
        Released::Close(_)
    ));
    assert!(grants[2].try_recv().is_err());
    assert!(matches!(
        core.release(fake(3, 0), Instant::now()),
        Released::HandedOff
    ));
    assert!(matches!(
        grants[2].try_recv(),
        Ok(Grant::Conn(Fake { id: 3, .. }))
    ));
    assert_eq!(core.open(), 1);
}

#[test]
fn take_idle_takes_the_latest_match_only_when_accepted() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(3));
    for _ in 0..3 {
        assert!(matches!(core.acquire(None), Acquire::Connect));
    }
    core.release(fake(1, 7), Instant::now());
    core.release(fake(2, 8), Instant::now());
    core.release(fake(3, 7), Instant::now());
    assert_eq!(core.take_idle(Some(7), |_| false), None, "refused: nothing taken");
    assert_eq!(core.idle_count(), 3);
    assert_eq!(core.take_idle(Some(7), |_| true).map(|c| c.id), Some(3));
    assert_eq!(core.take_idle(Some(9), |_| true), None, "no match");
    assert_eq!(core.take_idle(None, |_| true).map(|c| c.id), Some(2));
    assert_eq!(core.idle_count(), 1);
    assert_eq!(core.open(), 3, "taken connections stay open");
}

#[test]
fn retirement_closes_idle_now_and_older_busy_ones_at_release() {
    let mut core: PoolCore<Fake> = PoolCore::new(limits(2));
    for _ in 0..2 {
        assert!(matches!(core.acquire(None), Acquire::Connect));
    }
    let (busy, idle) = (fake(1, 0), fake(2, 0));
    assert!(matches!(core.release(idle, Instant::now()), Released::Stored));

    let drained = core.retire_open(Instant::now());
    assert_eq!(drained.iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
    assert_eq!(core.open(), 1, "the idle one counts as closed");

    // A connection opened before the retirement closes when it comes back; its slot is freed.
    assert!(matches!(
        core.release(busy, Instant::now()),
        Released::Close(Fake { id: 1, .. })
    ));
    assert_eq!(core.open(), 0);
    // One opened after it is stored as usual.
    std::thread::sleep(Duration::from_millis(1));
    assert!(matches!(core.acquire(None), Acquire::Connect));
    assert!(matches!(
        core.release(fake(3, 0), Instant::now()),
        Released::Stored
    ));
}
