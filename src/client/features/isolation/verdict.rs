//! The per-request verdict: can this SQL text leave anything on the backend that outlives its
//! transaction? A text is `Clean` only when every statement is of a kind known not to touch
//! session state and no word in it names something that might (a function from outside the
//! core catalog, a core function that changes session state, a relation whose triggers,
//! rules, defaults or policies run such code: see `catalog.rs`). The verdict never decides
//! *what* changed — the check after the transaction asks PostgreSQL that — it only lets the
//! common case skip the check.

use super::catalog::Hazards;
use super::lexer::{Lexer, Token};

/// What a request may have left behind, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Verdict {
    /// Nothing that outlives the transaction.
    #[default]
    Clean,
    /// Only `SET` / `RESET` / `DISCARD` statements changed settings, by names the text gives:
    /// reading the settings back is exact.
    Settings,
    /// Anything else: code ran that could change any setting (also ones whose names nothing
    /// shows), the role, or sequence state.
    Opaque,
}

/// Core functions that change session state or run SQL given as text. Calls with is_local =
/// true of `set_config` are the one exception (transaction-scoped, see `local_set_config`).
pub(super) const DANGEROUS_BUILTINS: &[&[u8]] = &[
    b"cursor_to_xml",
    b"cursor_to_xmlschema",
    b"database_to_xml",
    b"database_to_xml_and_xmlschema",
    b"database_to_xmlschema",
    b"nextval",
    b"pg_advisory_lock",
    b"pg_advisory_lock_shared",
    b"pg_backup_start",
    b"pg_backup_stop",
    b"pg_create_logical_replication_slot",
    b"pg_create_physical_replication_slot",
    b"pg_replication_origin_session_reset",
    b"pg_replication_origin_session_setup",
    b"pg_try_advisory_lock",
    b"pg_try_advisory_lock_shared",
    b"query_to_xml",
    b"query_to_xml_and_xmlschema",
    b"query_to_xmlschema",
    b"schema_to_xml",
    b"schema_to_xml_and_xmlschema",
    b"schema_to_xmlschema",
    b"set_config",
    b"setval",
    b"table_to_xml",
    b"table_to_xml_and_xmlschema",
    b"table_to_xmlschema",
    b"ts_rewrite",
    b"ts_stat",
];

fn is_dangerous_builtin(lower: &[u8]) -> bool {
    DANGEROUS_BUILTINS.binary_search(&lower).is_ok()
}

/// Judges one Query or Parse text against what the catalog says of the database.
pub fn judge(sql: &[u8], hazards: &Hazards) -> Verdict {
    if hazards.opaque_everywhere {
        // User-defined operators or casts run code that no word names (or nothing is known).
        return match Lexer::new(sql).next() {
            None => Verdict::Clean,
            Some(_) => Verdict::Opaque,
        };
    }
    // Plain text in one pass over the bytes; anything else through the tokens.
    fast::judge(sql, hazards).unwrap_or_else(|| judge_tokens(sql, hazards))
}

/// The verdict by tokens: the definition (`fast::judge` only ever agrees with it).
fn judge_tokens(sql: &[u8], hazards: &Hazards) -> Verdict {
    let mut lexer = Lexer::new(sql);
    let mut verdict = Verdict::Clean;
    let mut statement_start = true;
    let mut lower = [0u8; 64];
    while let Some(token) = lexer.next() {
        match token {
            Token::Unsure => return Verdict::Opaque,
            Token::Semicolon => statement_start = true,
            Token::Other(b'(') if statement_start => {}
            Token::Other(_) | Token::Str(_) => statement_start = false,
            Token::Word(raw) | Token::Quoted(raw) => {
                let cut = cut_len(raw);
                if statement_start {
                    statement_start = false;
                    if matches!(token, Token::Quoted(_)) {
                        return Verdict::Opaque;
                    }
                    match statement_verdict(lowercase(&raw[..cut], &mut lower), &lexer) {
                        Verdict::Clean => {}
                        Verdict::Settings => verdict = Verdict::Settings,
                        Verdict::Opaque => return Verdict::Opaque,
                    }
                }
                if !hazards.may_name(super::catalog::fold_hash(&raw[..cut])) {
                    continue;
                }
                let word = lowercase(&raw[..cut], &mut lower);
                if word == b"set_config" {
                    if !local_set_config(&mut lexer, hazards) {
                        return Verdict::Opaque;
                    }
                    continue;
                }
                if is_dangerous_builtin(word) || hazards.names(word) {
                    return Verdict::Opaque;
                }
            }
        }
    }
    verdict
}

/// The verdict of a statement by its first word (lower case); for SET, the next word tells
/// the transaction-scoped forms. Statements whose own execution leaves no session state are
/// clean (what they call or touch is judged word by word); everything not listed is opaque.
fn statement_verdict(first: &[u8], lexer: &Lexer<'_>) -> Verdict {
    match first {
        b"select" | b"insert" | b"update" | b"delete" | b"with" | b"values" | b"begin" | b"commit"
        | b"end" | b"rollback" | b"abort" | b"start" | b"savepoint" | b"release" | b"table" | b"merge"
        | b"show" | b"fetch" | b"move" | b"close" | b"declare" | b"explain" | b"copy" | b"lock"
        | b"prepare" | b"deallocate" | b"listen" | b"unlisten" | b"notify" => Verdict::Clean,
        b"set" => match lexer.clone().next() {
            Some(Token::Word(w)) if is_any(w, &[b"local", b"transaction", b"constraints"]) => Verdict::Clean,
            _ => Verdict::Settings,
        },
        b"reset" | b"discard" => Verdict::Settings,
        _ => Verdict::Opaque,
    }
}

/// [`statement_verdict`] of a first word that needs no look at what follows it (`None`: SET,
/// whose next word decides, or a word longer than an identifier).
fn statement_verdict_without_lexer(first: &[u8]) -> Option<Verdict> {
    let mut lower = [0u8; 64];
    if first.len() >= lower.len() {
        return None;
    }
    let first = lowercase(first, &mut lower);
    (first != b"set").then(|| statement_verdict(first, &Lexer::new(b"")))
}

/// `set_config(name, value, true)`: transaction-scoped, so clean when its arguments are. The
/// lexer stands after `set_config`; false when it is not (or may not be) such a call.
fn local_set_config(lexer: &mut Lexer<'_>, hazards: &Hazards) -> bool {
    if lexer.next() != Some(Token::Other(b'(')) {
        return false;
    }
    let mut depth = 1usize;
    let mut commas = 0;
    let mut last_argument: Vec<Token<'_>> = Vec::new();
    let mut lower = [0u8; 64];
    while depth > 0 {
        let Some(token) = lexer.next() else {
            return false;
        };
        match token {
            Token::Unsure | Token::Semicolon => return false,
            Token::Other(b'(') => depth += 1,
            Token::Other(b')') => depth -= 1,
            Token::Other(b',') if depth == 1 => {
                commas += 1;
                last_argument.clear();
                continue;
            }
            Token::Word(raw) | Token::Quoted(raw) => {
                let word = lowercase(&raw[..cut_len(raw)], &mut lower);
                if word == b"set_config" || is_dangerous_builtin(word) || hazards.names(word) {
                    return false;
                }
            }
            Token::Str(_) | Token::Other(_) => {}
        }
        if depth > 0 {
            last_argument.push(token);
        }
    }
    let local = match last_argument.as_slice() {
        [Token::Word(w)] => w.eq_ignore_ascii_case(b"true"),
        [Token::Str(s)] => is_any(s, &[b"t", b"true", b"on", b"yes", b"1"]),
        _ => false,
    };
    commas == 2 && local
}

/// True if a statement of `sql` is `LOAD` (run only for opaque texts).
pub fn loads_module(sql: &[u8]) -> bool {
    let mut statement_start = true;
    for token in Lexer::new(sql) {
        match token {
            Token::Semicolon => statement_start = true,
            Token::Other(b'(') if statement_start => {}
            Token::Word(w) if statement_start && w.eq_ignore_ascii_case(b"load") => return true,
            _ => statement_start = false,
        }
    }
    false
}

/// Custom setting names (`prefix.name`) a text shows, as `SET`/`RESET` targets or as string
/// literals (`set_config('app.x', …)`): candidates for the check after a transaction, which can
/// only read custom settings by name. Run only for texts that were not clean.
pub fn setting_names(sql: &[u8], names: &mut Vec<String>) {
    setting_names_in(sql, names, 0)
}

fn setting_names_in(sql: &[u8], names: &mut Vec<String>, depth: u8) {
    let mut previous: [Option<Token<'_>>; 2] = [None, None];
    for token in Lexer::new(sql) {
        match (previous, token) {
            // A function or DO body: its own literals and SET statements count.
            (_, Token::Str(contents))
                if !note_setting_name(contents, names) && depth < 2 && contents.contains(&b'.') =>
            {
                setting_names_in(contents, names, depth + 1)
            }
            (
                [Some(Token::Word(a) | Token::Quoted(a)), Some(Token::Other(b'.'))],
                Token::Word(b) | Token::Quoted(b),
            ) if a.len() + b.len() < 63 => push_name(names, &[a, b".", b].concat()),
            _ => {}
        }
        previous = [previous[1], Some(token)];
    }
}

/// A literal that looks like a custom setting name (`prefix.name`) becomes a check candidate.
fn note_setting_name(contents: &[u8], names: &mut Vec<String>) -> bool {
    let Some(dot) = contents.iter().position(|&b| b == b'.') else {
        return false;
    };
    let part = |p: &[u8]| {
        !p.is_empty()
            && (p[0].is_ascii_alphabetic() || p[0] == b'_')
            && p.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    };
    let is_name = contents.len() <= 63 && part(&contents[..dot]) && part(&contents[dot + 1..]);
    if is_name {
        push_name(names, contents);
    }
    is_name
}

/// Candidate names kept per transaction; past this many the check resets everything anyway.
const MAX_NAMES: usize = 64;

fn push_name(names: &mut Vec<String>, name: &[u8]) {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    if names.len() < MAX_NAMES && !names.contains(&name) {
        names.push(name);
    }
}

fn is_any(word: &[u8], list: &[&[u8]]) -> bool {
    list.iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// How much of an identifier PostgreSQL keeps: 63 bytes, cut at a character boundary.
fn cut_len(word: &[u8]) -> usize {
    let mut len = word.len().min(63);
    while len < word.len() && len > 0 && (word[len] & 0xC0) == 0x80 {
        len -= 1;
    }
    len
}

/// `word` (already cut, see [`cut_len`]) lower-cased into `buf`.
fn lowercase<'b>(word: &[u8], buf: &'b mut [u8; 64]) -> &'b [u8] {
    let out = &mut buf[..word.len()];
    for (o, b) in out.iter_mut().zip(word) {
        *o = b.to_ascii_lowercase();
    }
    out
}

mod fast;

#[cfg(test)]
mod tests;
