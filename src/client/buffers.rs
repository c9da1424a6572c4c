//! Spare client buffers, kept per worker thread. An idle client holds no buffer (10,000 idle
//! clients must cost almost nothing), so a client that idles between requests gives its read
//! and write buffers back after every transaction and needs new ones at its next request.
//! Allocating and freeing them each time cost ~600 instructions per request (the task moves
//! between threads, so malloc's per-thread cache of the freeing thread overflows); taking a
//! spare is a pop and giving it back a push.
//!
//! Bounded: at most [`SPARES_PER_THREAD`] buffers of [`FIRST_BUFFER`] bytes per thread; a
//! buffer that grew larger, or that cannot be reclaimed whole, is freed as before. A spare
//! carries no data: it is cleared before it is kept.

use crate::client::conn::FIRST_BUFFER;
use bytes::BytesMut;
use std::cell::RefCell;

/// Enough for every client of a busy pool on one thread; 128 KiB at most.
const SPARES_PER_THREAD: usize = 128;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`FIRST_BUFFER`] bytes.
pub(crate) fn take() -> BytesMut {
    SPARES
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(FIRST_BUFFER))
}

/// An empty buffer with room for `len` bytes: a spare when that fits in one (growing a spare
/// would free it rather than keep it), else one of exactly that size.
pub(crate) fn take_for(len: usize) -> BytesMut {
    match len <= FIRST_BUFFER {
        true => take(),
        false => BytesMut::with_capacity(len),
    }
}

/// Gives a buffer back (its contents are dropped); only the first buffer size is kept.
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    // Reading advanced the buffer's start: reclaim the whole allocation (no copy, it is empty).
    if !buf.try_reclaim(FIRST_BUFFER) || buf.capacity() != FIRST_BUFFER {
        return;
    }
    SPARES.with_borrow_mut(|spares| {
        if spares.len() < SPARES_PER_THREAD {
            spares.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_spare_comes_back_empty_with_its_whole_room() {
        let mut buf = take();
        assert_eq!(buf.capacity(), FIRST_BUFFER);
        buf.extend_from_slice(&[7; 300]);
        buf.advance(200);
        let at = buf.as_ptr() as usize - 200;
        give(buf);
        let again = take();
        assert!(again.is_empty(), "a spare carries no data");
        assert_eq!(again.capacity(), FIRST_BUFFER);
        assert_eq!(again.as_ptr() as usize, at, "the same allocation, reclaimed");
    }

    #[test]
    fn grown_buffers_are_not_kept_and_the_count_is_bounded() {
        let mut big = take();
        big.reserve(10 * FIRST_BUFFER);
        give(big);
        assert_eq!(SPARES.with_borrow(Vec::len), 0);
        give(BytesMut::new());
        assert_eq!(SPARES.with_borrow(Vec::len), 0);
        for _ in 0..SPARES_PER_THREAD + 5 {
            give(BytesMut::with_capacity(FIRST_BUFFER));
        }
        assert_eq!(SPARES.with_borrow(Vec::len), SPARES_PER_THREAD);
    }
}
