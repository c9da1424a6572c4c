//! One pass over a Query/Parse text for both of its per-request readers: the trigger words
//! ([`Words`], see `keywords.rs`) and the isolation verdict of plain text. Plain text is
//! letters, digits, white space, `$n` parameters and punctuation other than quotes and comment
//! starts, which is what most application statements are. Where the text stops being plain (a
//! literal, a quoted identifier, a comment, a non-ASCII byte, `SET` at a statement start, a
//! word longer than PostgreSQL keeps) or its verdict is settled (an opaque statement), the
//! verdict part ends and the words are found in the rest by `Words::scan_from`; the verdict
//! of such a text is then [`super::judge_tokens`]'s, which is the definition: this pass only
//! ever agrees with it (`tests.rs` checks that, and that the words are `Words::scan`'s, on
//! generated text).
//!
//! The scan runs before the session has a backend, so before it knows the catalog snapshot
//! to judge against: it keeps each word's hash (up to [`MAX_WORDS`]) and [`Scan::verdict`]
//! tests them against the snapshot later.

use super::super::catalog::Hazards;
use super::super::lexer::{is_ident_continue, is_space};
use super::{judge_tokens, statement_verdict_without_lexer, Verdict};
use crate::client::features::keywords::Words;

/// FNV-1a over ASCII-folded bytes, as `catalog::fold_hash`.
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;
/// PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1).
const IDENTIFIER_BYTES: usize = 63;
/// Word hashes a [`Scan`] keeps; a text with more is judged again with the catalog at hand.
pub const MAX_WORDS: usize = 12;

/// What one pass found in a text: its trigger words, and what its verdict needs.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    pub words: Words,
    plain: Plain,
}

/// The verdict part of a [`Scan`].
#[derive(Debug, Clone, Copy)]
struct Plain {
    /// By statement kinds alone (`Opaque` settles it).
    verdict: Verdict,
    ending: Ending,
    /// The hashes of the words, for the catalog filter.
    hashes: [u32; MAX_WORDS],
    len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The pass read the whole text (or stopped at an opaque statement).
    Complete,
    /// Not plain text: the tokens decide.
    Tokens,
    /// More than [`MAX_WORDS`] words: judged again with the catalog in hand.
    Overflow,
}

/// How the verdict part of the pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The text's end or its NUL.
    End,
    /// An opaque statement: nothing further changes the verdict.
    Opaque,
    /// Not plain text.
    Tokens,
    /// The word filter refused a word.
    Filtered,
}

/// Scans `sql` (a Query's text, or a Parse's from its query on; up to its NUL) once.
pub fn scan(sql: &[u8]) -> Scan {
    let mut hashes = [0u32; MAX_WORDS];
    let mut len = 0usize;
    let (words, verdict, stop, at) = plain_pass(sql, |h| {
        let room = len < MAX_WORDS;
        if room {
            hashes[len] = h;
            len += 1;
        }
        room
    });
    let words = match stop {
        Stop::End => words,
        _ => words.with(Words::scan_from(sql, at)),
    };
    let ending = match stop {
        Stop::End | Stop::Opaque => Ending::Complete,
        Stop::Tokens => Ending::Tokens,
        Stop::Filtered => Ending::Overflow,
    };
    Scan {
        words,
        plain: Plain {
            verdict,
            ending,
            hashes,
            len: len as u8,
        },
    }
}

impl Scan {
    /// The verdict of the text this scan read (`sql`, the same text) against `hazards`:
    /// exactly [`super::judge`]'s.
    pub fn verdict(&self, sql: &[u8], hazards: &Hazards) -> Verdict {
        if hazards.opaque_everywhere {
            return super::judge(sql, hazards);
        }
        let plain = &self.plain;
        match plain.ending {
            Ending::Tokens => judge_tokens(sql, hazards),
            Ending::Overflow => judge(sql, hazards).unwrap_or_else(|| judge_tokens(sql, hazards)),
            Ending::Complete if plain.verdict == Verdict::Opaque => Verdict::Opaque,
            Ending::Complete => {
                let hashes = &plain.hashes[..usize::from(plain.len)];
                if hashes.iter().any(|&h| hazards.may_name(h)) {
                    judge_tokens(sql, hazards)
                } else {
                    plain.verdict
                }
            }
        }
    }
}

/// The verdict of plain text with the catalog at hand (`None`: the tokens decide).
pub(super) fn judge(sql: &[u8], hazards: &Hazards) -> Option<Verdict> {
    match plain_pass(sql, |h| !hazards.may_name(h)) {
        (_, verdict, Stop::End | Stop::Opaque, _) => Some(verdict),
        _ => None,
    }
}

/// The pass itself: the trigger words up to where it stopped, the verdict by statement kinds,
/// why it stopped and where (the words from there on are not read). `word` sees the hash of
/// every word and may refuse it (the pass stops, `Stop::Filtered`).
fn plain_pass(sql: &[u8], mut word: impl FnMut(u32) -> bool) -> (Words, Verdict, Stop, usize) {
    let mut words = Words::default();
    let mut verdict = Verdict::Clean;
    let mut statement_start = true;
    let mut i = 0;
    let stop = loop {
        let Some(&b) = sql.get(i) else {
            break Stop::End;
        };
        if is_space(b) {
            i += 1;
            continue;
        }
        match b {
            0 => break Stop::End,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                // Never right after a letter: whatever came before ended a token.
                let start = i;
                let mut h = FNV_OFFSET;
                let mut after_letter = false;
                while let Some(&c) = sql.get(i).filter(|&&c| is_ident_continue(c)) {
                    if c >= 0x80 {
                        break;
                    }
                    let letter = is_letter(c);
                    if letter && !after_letter {
                        words = words.with(Words::starting(&sql[i..]));
                    }
                    after_letter = letter;
                    h = (h ^ u32::from(c | 0x20)).wrapping_mul(FNV_PRIME);
                    i += 1;
                }
                let next = sql.get(i).copied();
                if next.is_some_and(|c| c >= 0x80 && is_ident_continue(c)) {
                    break Stop::Tokens;
                }
                let text = &sql[start..i];
                if text.len() > IDENTIFIER_BYTES || next.is_some_and(|c| c == b'\'' || c == b'&') {
                    // Cut like PostgreSQL, or a prefixed literal (E'', B'', X'', U&''): the
                    // token path reads those.
                    break Stop::Tokens;
                }
                if statement_start {
                    statement_start = false;
                    match statement_verdict_without_lexer(text) {
                        None => break Stop::Tokens,
                        Some(Verdict::Clean) => {}
                        Some(Verdict::Settings) => verdict = Verdict::Settings,
                        Some(Verdict::Opaque) => {
                            verdict = Verdict::Opaque;
                            break Stop::Opaque;
                        }
                    }
                }
                if !word(h) {
                    break Stop::Filtered;
                }
            }
            b'0'..=b'9' => {
                // A number, with its exponent, decimal point and trailing junk letters.
                let mut after_letter = false;
                while let Some(&c) = sql
                    .get(i)
                    .filter(|c| c.is_ascii_alphanumeric() || **c == b'.' || **c == b'_')
                {
                    let letter = is_letter(c);
                    if letter && !after_letter {
                        words = words.with(Words::starting(&sql[i..]));
                    }
                    after_letter = letter;
                    i += 1;
                }
                statement_start = false;
            }
            b'$' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                // A parameter; `$1$…` is not a dollar quote (a tag cannot start with a digit).
                i += 1;
                while sql.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                statement_start = false;
            }
            b';' => {
                statement_start = true;
                i += 1;
            }
            b'(' => i += 1,
            b'-' if sql.get(i + 1) == Some(&b'-') => break Stop::Tokens,
            b'/' if sql.get(i + 1) == Some(&b'*') => break Stop::Tokens,
            b'\'' | b'"' | b'$' | b'\\' => break Stop::Tokens,
            0x80.. => break Stop::Tokens,
            _ => {
                statement_start = false;
                i += 1;
            }
        }
    };
    (words, verdict, stop, i)
}

fn is_letter(c: u8) -> bool {
    (c | 0x20).wrapping_sub(b'a') < 26
}
