//! Byte-level look at a statement's start: routing hints in leading comments, then the first
//! keyword, which alone settles most writes without tokenizing.

use std::time::Duration;

use super::Hint;

/// How the statement starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Nothing but whitespace and comments.
    Empty,
    /// A block comment never closes: PostgreSQL will reject it; send it to the primary.
    Unterminated,
    /// The first keyword cannot begin a read or a control statement we track.
    Write,
    /// Needs the tokenizer (and maybe the parser) from this byte offset on.
    Analyze(usize),
}

/// Result of [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prescan {
    pub start: Start,
    pub hint: Option<Hint>,
    pub max_lag: Option<Duration>,
}

/// Keywords that can start a read-only statement.
const READ_STARTS: &[&str] = &["select", "with", "values", "table", "show", "explain"];

/// Keywords that start statements `lexical::control` inspects (all of them are writes, but the
/// session layer needs to know about `BEGIN READ ONLY`, `COMMIT`, `SET tidepool.route`…).
pub(super) const CONTROL_STARTS: &[&str] = &[
    "begin", "start", "commit", "end", "rollback", "abort", "prepare", "set", "reset", "discard",
];

/// Skips leading whitespace and comments (collecting hints from them) and classifies the
/// first keyword.
pub(super) fn scan(sql: &str) -> Prescan {
    let bytes = sql.as_bytes();
    let mut out = Prescan {
        start: Start::Empty,
        hint: None,
        max_lag: None,
    };
    let mut i = 0;
    loop {
        // PostgreSQL's whitespace is ASCII only; anything else starts a token.
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            i += 1;
        }
        if bytes[i..].starts_with(b"--") {
            let end = bytes[i..].iter().position(|&b| b == b'\n' || b == b'\r');
            let end = end.map_or(bytes.len(), |e| i + e);
            read_hints(&sql[i + 2..end], &mut out);
            i = end;
        } else if bytes[i..].starts_with(b"/*") {
            let Some(end) = block_comment_end(bytes, i) else {
                out.start = Start::Unterminated;
                return out;
            };
            read_hints(&sql[i + 2..end - 2], &mut out);
            i = end;
        } else {
            break;
        }
    }
    out.start = first_keyword(sql, i);
    out
}

/// Byte offset just past the `*/` closing the comment that opens at `start`. PostgreSQL nests
/// block comments, so we do too: stopping at the first `*/` could hide a write in a "comment".
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn first_keyword(sql: &str, at: usize) -> Start {
    let rest = &sql.as_bytes()[at..];
    let Some(&first) = rest.first() else {
        return Start::Empty;
    };
    // `(SELECT …) UNION …` and `;SELECT` go to the full analysis, which will decide.
    if first == b'(' || first == b';' {
        return Start::Analyze(at);
    }
    if !first.is_ascii_alphabetic() {
        return Start::Write;
    }
    // Identifier characters as PostgreSQL's lexer sees them, so `selectx` is not `select`.
    let len = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80))
        .unwrap_or(rest.len());
    let word = &rest[..len];
    let is = |list: &[&str]| list.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()));
    if is(READ_STARTS) || is(CONTROL_STARTS) {
        Start::Analyze(at)
    } else {
        Start::Write
    }
}

/// Reads `tidepool: primary`, `tidepool: standby`, `tidepool: max_lag=200ms` (items separated
/// by spaces or commas) from one comment's text. Later items override earlier ones; comments
/// that do not start with `tidepool:` and unknown or malformed items are ignored, so a typo
/// never changes a route silently towards a standby.
fn read_hints(comment: &str, out: &mut Prescan) {
    let text = comment.trim_start();
    let Some(prefix) = text.get(..9) else { return };
    if !prefix.eq_ignore_ascii_case("tidepool:") {
        return;
    }
    for item in text[9..].split(|c: char| c == ',' || c.is_ascii_whitespace()) {
        if item.eq_ignore_ascii_case("primary") {
            out.hint = Some(Hint::Primary);
        } else if item.eq_ignore_ascii_case("standby") {
            out.hint = Some(Hint::Standby);
        } else if let Some((key, value)) = item.split_once('=') {
            if key.eq_ignore_ascii_case("max_lag") {
                if let Ok(lag) = crate::config::parse_duration(value) {
                    out.max_lag = Some(lag);
                }
            }
        }
    }
}
