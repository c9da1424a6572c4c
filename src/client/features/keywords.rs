//! Trigger-word search in SQL text. It runs on every Query and Parse in transaction mode, so
//! it is one pass that finds every word any consumer cares about (settings, pins, SQL
//! PREPARE, LISTEN, locally answered commands) and returns them as a bit set.
//!
//! A word is found where it *starts* a run of ASCII letters, in any case, also as a prefix of a
//! longer word (`SET` in `set_config`, `TEMP` in `TEMPORARY`): consumers use the set as a cheap
//! filter, where a false positive only costs a closer look. Words that matter inside another
//! word are listed on their own (`RESET`, `UNLISTEN`).

/// A trigger word; its discriminant is its bit in [`Words`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Word {
    Abort,
    Advisory,
    Begin,
    Close,
    Database,
    Deallocate,
    Discard,
    Drop,
    Execute,
    Hold,
    Listen,
    Notify,
    Prepare,
    Reset,
    Rollback,
    Set,
    Start,
    Temp,
    Tidepool,
    Unlisten,
}

/// A spelling as the little-endian u64 of its first (up to) 8 lower-case letters, and the mask
/// of those bytes: one load and one compare per candidate at a word start.
#[derive(Clone, Copy)]
struct Spelling {
    letters: u64,
    mask: u64,
    word: Word,
}

const fn spelling(text: &[u8], word: Word) -> Spelling {
    let (mut letters, mut mask, mut i) = (0u64, 0u64, 0);
    while i < text.len() && i < 8 {
        letters |= (text[i].to_ascii_lowercase() as u64) << (8 * i);
        mask |= 0xff << (8 * i);
        i += 1;
    }
    Spelling { letters, mask, word }
}

/// Candidates by first letter, so a word start compares against four at most. Words longer
/// than 8 letters match on their first 8 (`DEALLOCA`): a filter may over-report.
fn candidates(first_lower: u8) -> &'static [Spelling] {
    const A: &[Spelling] = &[
        spelling(b"abort", Word::Abort),
        spelling(b"advisory", Word::Advisory),
    ];
    const B: &[Spelling] = &[spelling(b"begin", Word::Begin)];
    const C: &[Spelling] = &[spelling(b"close", Word::Close)];
    const D: &[Spelling] = &[
        spelling(b"database", Word::Database),
        spelling(b"deallocate", Word::Deallocate),
        spelling(b"discard", Word::Discard),
        spelling(b"drop", Word::Drop),
    ];
    const E: &[Spelling] = &[spelling(b"execute", Word::Execute)];
    const H: &[Spelling] = &[spelling(b"hold", Word::Hold)];
    const L: &[Spelling] = &[spelling(b"listen", Word::Listen)];
    const N: &[Spelling] = &[spelling(b"notify", Word::Notify)];
    const P: &[Spelling] = &[spelling(b"prepare", Word::Prepare)];
    const R: &[Spelling] = &[
        spelling(b"reset", Word::Reset),
        spelling(b"rollback", Word::Rollback),
    ];
    const S: &[Spelling] = &[spelling(b"set", Word::Set), spelling(b"start", Word::Start)];
    const T: &[Spelling] = &[
        spelling(b"temp", Word::Temp),
        spelling(b"tidepool", Word::Tidepool),
    ];
    const U: &[Spelling] = &[spelling(b"unlisten", Word::Unlisten)];
    match first_lower {
        b'a' => A,
        b'b' => B,
        b'c' => C,
        b'd' => D,
        b'e' => E,
        b'h' => H,
        b'l' => L,
        b'n' => N,
        b'p' => P,
        b'r' => R,
        b's' => S,
        b't' => T,
        b'u' => U,
        _ => &[],
    }
}

/// First letters of the trigger words, as bits a..z (the byte-at-a-time definition's filter).
#[cfg(test)]
const FIRST_LETTERS: u32 = {
    let mut bits = 0u32;
    let letters = b"abcdehlnprstu";
    let mut i = 0;
    while i < letters.len() {
        bits |= 1 << (letters[i] - b'a');
        i += 1;
    }
    bits
};

/// Second letters of the trigger words by first letter (bit `c - b'a'` of entry `f - b'a'`):
/// a word start is looked at closely only when its first two letters begin a trigger word
/// (`abalance`, `accounts` and `pgbench` are not; every trigger word has at least 3 letters).
const SECOND_LETTERS: [u32; 26] = {
    const TEXTS: [&[u8]; 20] = [
        b"abort",
        b"advisory",
        b"begin",
        b"close",
        b"database",
        b"deallocate",
        b"discard",
        b"drop",
        b"execute",
        b"hold",
        b"listen",
        b"notify",
        b"prepare",
        b"reset",
        b"rollback",
        b"set",
        b"start",
        b"temp",
        b"tidepool",
        b"unlisten",
    ];
    let mut table = [0u32; 26];
    let mut i = 0;
    while i < TEXTS.len() {
        table[(TEXTS[i][0] - b'a') as usize] |= 1 << (TEXTS[i][1] - b'a');
        i += 1;
    }
    table
};

/// The trigger words found in a text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Words(u32);

impl Words {
    /// Every trigger word that starts a letter run of `sql`, up to its first NUL (where
    /// PostgreSQL's reading of a Query or Parse text ends).
    ///
    /// Eight bytes at a time (this runs on every request): a bit mask of the ASCII letters in
    /// the chunk, the letters not preceded by one (word starts), and a closer look only at
    /// those starts whose first two letters begin some trigger word (`SECOND_LETTERS`).
    pub fn scan(sql: &[u8]) -> Words {
        let mut found = 0u32;
        // The last byte of the previous chunk was a letter (as the chunk's top bit).
        let mut carry = 0u64;
        let mut base = 0;
        while base < sql.len() {
            let chunk = match sql.get(base..base + 8) {
                Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")),
                None => {
                    // Zero padding reads as the NUL that ends the text.
                    let mut padded = [0u8; 8];
                    padded[..sql.len() - base].copy_from_slice(&sql[base..]);
                    u64::from_le_bytes(padded)
                }
            };
            let mut letters = ascii_letters(chunk);
            let nul = zero_bytes(chunk);
            if nul != 0 {
                // Keep only the bytes before the first NUL.
                letters &= (nul & nul.wrapping_neg()).wrapping_sub(1);
            }
            let mut starts = letters & !((letters << 8) | carry);
            while starts != 0 {
                let i = base + (starts.trailing_zeros() / 8) as usize;
                let first = sql[i] | 0x20;
                let second = sql.get(i + 1).map_or(0, |&b| b | 0x20).wrapping_sub(b'a');
                if second < 26 && SECOND_LETTERS[(first - b'a') as usize] & (1 << second) != 0 {
                    found |= words_at(&sql[i..], first);
                }
                starts &= starts - 1;
            }
            if nul != 0 {
                break;
            }
            carry = letters >> 56;
            base += 8;
        }
        Words(found)
    }

    pub fn has(self, word: Word) -> bool {
        self.0 & (1 << word as u8) != 0
    }

    /// True if any of `words` was found.
    pub fn any(self, words: &[Word]) -> bool {
        words.iter().any(|&w| self.has(w))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// 0x80 in every byte of `chunk` that is an ASCII letter, 0 elsewhere. `| 0x20` lower-cases
/// letters and maps nothing else into a..=z; a byte's 7 low bits plus (0x80 - c) carries into
/// its high bit exactly when they are ≥ c, and never into the next byte.
fn ascii_letters(chunk: u64) -> u64 {
    let low = (chunk | 0x2020_2020_2020_2020) & LOW7;
    let at_least_a = (low + ONES * (0x80 - b'a' as u64)) & HIGH;
    let beyond_z = (low + ONES * (0x80 - (b'z' as u64 + 1))) & HIGH;
    at_least_a & !beyond_z & !chunk
}

/// 0x80 in the first zero byte of `chunk` and possibly in later ones (never in earlier ones).
fn zero_bytes(chunk: u64) -> u64 {
    chunk.wrapping_sub(ONES) & !chunk & HIGH
}

/// Bits of the trigger words `rest` starts with (`first_lower` is its first byte, lower-cased).
fn words_at(rest: &[u8], first_lower: u8) -> u32 {
    let head = match rest.get(..8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")),
        None => {
            let mut padded = [0u8; 8];
            padded[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(padded)
        }
    };
    // Lower-cases letters; other bytes (padding included) never equal a letter after it.
    let head = head | 0x2020_2020_2020_2020;
    let mut found = 0;
    for candidate in candidates(first_lower) {
        if head & candidate.mask == candidate.letters {
            found |= 1 << candidate.word as u8;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{candidates, Word, Words, FIRST_LETTERS, SECOND_LETTERS};

    #[test]
    fn the_two_letter_filter_lets_every_trigger_word_through() {
        let mut seen = 0;
        for first in b'a'..=b'z' {
            for spelling in candidates(first) {
                let second = (spelling.letters >> 8) as u8;
                assert!(
                    SECOND_LETTERS[(first - b'a') as usize] & (1 << (second - b'a')) != 0,
                    "{:?}",
                    spelling.word
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 20, "every word has a spelling");
    }

    /// The byte-at-a-time definition `Words::scan` must agree with.
    fn scan_bytewise(sql: &[u8]) -> Words {
        let mut found = 0u32;
        let mut after_letter = false;
        for (i, &byte) in sql.iter().enumerate() {
            if byte == 0 {
                break;
            }
            let from_a = (byte | 0x20).wrapping_sub(b'a');
            let letter = from_a < 26;
            if letter && !after_letter && FIRST_LETTERS & (1 << from_a) != 0 {
                found |= super::words_at(&sql[i..], byte | 0x20);
            }
            after_letter = letter;
        }
        Words(found)
    }

    #[test]
    fn eight_at_a_time_agrees_with_byte_at_a_time() {
        // Texts built from pieces that straddle chunk boundaries in every position.
        let pieces: &[&[u8]] = &[
            b"set",
            b"SET",
            b"reset",
            b"x",
            b"_",
            b" ",
            b"1",
            b"\0",
            b"\xc3\x89",
            b"temp",
            b"tidepool",
            b"deallocate",
            b"unlisten",
            b"listen",
            b"begin",
            b"@",
            b"[",
            b"`",
            b"{",
            b"Z",
            b"\x80",
            b"\xff",
            b"advisory",
            b"a",
            b"se",
            b"s",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut text = Vec::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut r = state;
            for _ in 0..(r % 9) {
                r = r.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
                text.extend_from_slice(pieces[(r % pieces.len() as u64) as usize]);
            }
            assert_eq!(
                Words::scan(&text),
                scan_bytewise(&text),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn finds_words_starting_letter_runs_in_any_case() {
        let found = Words::scan(b"set search_path = x; SELECT set_config('a', 'b', false)");
        assert!(found.has(Word::Set));
        assert!(!found.has(Word::Reset));
        assert!(Words::scan(b"select 1; DiScArD all").has(Word::Discard));
        assert!(Words::scan(b"RESET ALL").has(Word::Reset));
        assert!(Words::scan(b"unlisten *").has(Word::Unlisten));
        assert!(
            !Words::scan(b"unlisten *").has(Word::Listen),
            "inside a word: not LISTEN"
        );
        assert!(
            Words::scan(b"select pg_advisory_lock(1)").has(Word::Advisory),
            "after _"
        );
        assert!(
            Words::scan(b"CREATE TEMPORARY TABLE t()").has(Word::Temp),
            "a prefix"
        );
        assert!(Words::scan(b"SHOW tidepool.lsn").has(Word::Tidepool));
        assert!(Words::scan(b"NOTIFY c, 'x'").has(Word::Notify));
        assert!(
            Words::scan(b"SELECT pg_notify('c', 'x')").has(Word::Notify),
            "after _"
        );
        assert!(
            !Words::scan(b"SELECT 1 OFFSET 2").has(Word::Set),
            "inside a word: no"
        );
        assert!(Words::scan(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1").is_empty());
        assert!(Words::scan(b"").is_empty());
        assert!(
            Words::scan(b"SELECT 1\0SET x = 1").is_empty(),
            "the text ends at NUL"
        );
        assert!(
            Words::scan(b"SE").is_empty(),
            "a prefix at the end is not a match"
        );
        assert!(Words::scan("SÉT \u{0}\u{ff}".as_bytes()).is_empty());
        let all = Words::scan(b"begin;start;close;drop;hold;listen;prepare;deallocate;rollback;abort");
        for word in [
            Word::Begin,
            Word::Start,
            Word::Close,
            Word::Drop,
            Word::Hold,
            Word::Listen,
            Word::Prepare,
            Word::Deallocate,
            Word::Rollback,
            Word::Abort,
        ] {
            assert!(all.has(word), "{word:?}");
        }
        assert!(all.any(&[Word::Set, Word::Abort]));
        assert!(!all.any(&[Word::Set, Word::Temp]));
    }
}
