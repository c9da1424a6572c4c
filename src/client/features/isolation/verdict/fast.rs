//! The verdict of plain text in one pass over its bytes, without tokens: letters, digits,
//! white space, `$n` parameters and punctuation other than quotes and comment starts, which is
//! what most application statements are. Anything else (a literal, a quoted identifier, a
//! comment, a non-ASCII byte, a word the catalog filter does not clear, `SET` at a statement
//! start, a word longer than PostgreSQL keeps) returns `None`: the caller then runs
//! [`super::judge_tokens`], which is the definition; this only ever agrees with it
//! (`tests.rs` checks that on generated text).

use super::super::catalog::Hazards;
use super::super::lexer::{is_ident_continue, is_space};
use super::{statement_verdict_without_lexer, Verdict};

/// FNV-1a over ASCII-folded bytes, as `catalog::fold_hash`.
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;
/// PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1).
const IDENTIFIER_BYTES: usize = 63;

pub(super) fn judge(sql: &[u8], hazards: &Hazards) -> Option<Verdict> {
    let mut verdict = Verdict::Clean;
    let mut statement_start = true;
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        if is_space(b) {
            i += 1;
            continue;
        }
        match b {
            0 => break,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                let mut h = FNV_OFFSET;
                while i < sql.len() && is_ident_continue(sql[i]) {
                    let c = sql[i];
                    if c >= 0x80 {
                        return None;
                    }
                    h = (h ^ u32::from(c | 0x20)).wrapping_mul(FNV_PRIME);
                    i += 1;
                }
                let word = &sql[start..i];
                if word.len() > IDENTIFIER_BYTES || sql.get(i).is_some_and(|&c| c == b'\'' || c == b'&') {
                    // Cut like PostgreSQL, or a prefixed literal (E'', B'', X'', U&''): the
                    // token path reads those.
                    return None;
                }
                if statement_start {
                    statement_start = false;
                    match statement_verdict_without_lexer(word)? {
                        Verdict::Clean => {}
                        Verdict::Settings => verdict = Verdict::Settings,
                        Verdict::Opaque => return Some(Verdict::Opaque),
                    }
                }
                if hazards.may_name(h) {
                    return None;
                }
            }
            b'0'..=b'9' => {
                // A number, with its exponent, decimal point and trailing junk letters.
                while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'.' || sql[i] == b'_') {
                    i += 1;
                }
                statement_start = false;
            }
            b'$' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                // A parameter; `$1$…` is not a dollar quote (a tag cannot start with a digit).
                i += 1;
                while i < sql.len() && sql[i].is_ascii_digit() {
                    i += 1;
                }
                statement_start = false;
            }
            b';' => {
                statement_start = true;
                i += 1;
            }
            b'(' => i += 1,
            b'-' if sql.get(i + 1) == Some(&b'-') => return None,
            b'/' if sql.get(i + 1) == Some(&b'*') => return None,
            b'\'' | b'"' | b'$' | b'\\' => return None,
            0x80.. => return None,
            _ => {
                statement_start = false;
                i += 1;
            }
        }
    }
    Some(verdict)
}
