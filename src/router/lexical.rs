//! Token-level checks: write functions, locking clauses, `INTO`, DML keywords, and the
//! transaction-control / `tidepool.route` statements.
//!
//! Working on tokens rather than the AST means a write function is found wherever it hides
//! (subquery, `CASE`, `ORDER BY`, `FROM f()`, `ROWS FROM`, a window frame…) without walking
//! every AST node type sqlparser has, and strings, quoted identifiers and comments are
//! already told apart by a tokenizer that follows PostgreSQL's quoting rules.

use sqlparser::tokenizer::{Token, Word};

use super::config::Functions;
use super::{Control, Reason, RouteSetting};

/// Significant tokens (no whitespace or comments) of one statement string.
pub(super) type Tokens<'a> = [&'a Token];

/// An unquoted word, compared case-insensitively; quoted identifiers are never keywords.
fn keyword(token: &Token) -> Option<&str> {
    match token {
        Token::Word(Word {
            value,
            quote_style: None,
            ..
        }) => Some(value),
        _ => None,
    }
}

fn is_kw(token: Option<&&Token>, kw: &str) -> bool {
    token
        .and_then(|t| keyword(t))
        .is_some_and(|w| w.eq_ignore_ascii_case(kw))
}

/// First reason found to treat the statement string as a write, if any.
pub(super) fn scan(tokens: &Tokens, functions: &Functions, starts_with_with: bool) -> Option<Reason> {
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        if word.quote_style.is_none() {
            let found = if word.value.eq_ignore_ascii_case("for") {
                let next = tokens.get(i + 1);
                ["update", "share", "no", "key"]
                    .iter()
                    .any(|kw| is_kw(next, kw))
                    .then_some(Reason::LockingRead)
            } else if word.value.eq_ignore_ascii_case("into") {
                Some(Reason::SelectInto)
            } else if ["insert", "update", "delete", "merge"]
                .iter()
                .any(|kw| word.value.eq_ignore_ascii_case(kw))
            {
                Some(if starts_with_with {
                    Reason::WritableCte
                } else {
                    Reason::Write
                })
            } else {
                None
            };
            if found.is_some() {
                return found;
            }
        }
        if is_write_function(tokens, i, word, functions) {
            return Some(Reason::WriteFunction);
        }
    }
    None
}

/// Matches every identifier, not only `name(`: PostgreSQL also calls `f(x)` when written as
/// `x.f` (attribute notation), and a false match only costs a trip to the primary.
fn is_write_function(tokens: &Tokens, i: usize, word: &Word, functions: &Functions) -> bool {
    let bare = identifier(&word.value);
    let schema = match (
        i.checked_sub(2).map(|j| tokens[j]),
        i.checked_sub(1).map(|j| tokens[j]),
    ) {
        (Some(Token::Word(schema)), Some(Token::Period)) => Some(identifier(&schema.value)),
        _ => None,
    };
    let qualified = schema.map(|s| format!("{s}.{bare}"));
    functions.is_write(&bare, qualified.as_deref())
}

/// The name PostgreSQL looks up: truncated to 63 bytes (NAMEDATALEN - 1) on a character
/// boundary, as its lexer does, then lowercased for our case-insensitive lists.
fn identifier(value: &str) -> String {
    let mut end = value.len().min(63);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_lowercase()
}

/// Recognises one transaction-control or `tidepool.route` statement (`tokens` holds exactly
/// one statement, without its trailing semicolon).
pub(super) fn control(tokens: &Tokens) -> Option<Control> {
    let word = |i: usize| {
        tokens
            .get(i)
            .and_then(|t| keyword(t))
            .map(str::to_ascii_lowercase)
    };
    let has = |kw: &str| tokens.iter().any(|t| is_kw(Some(t), kw));
    let read_only = || {
        let pair = |second: &str| {
            tokens
                .windows(2)
                .any(|w| is_kw(Some(&w[0]), "read") && is_kw(Some(&w[1]), second))
        };
        pair("only") && !pair("write")
    };
    match word(0)?.as_str() {
        "begin" => Some(if read_only() {
            Control::BeginReadOnly
        } else {
            Control::Begin
        }),
        "start" if word(1).as_deref() == Some("transaction") => Some(if read_only() {
            Control::BeginReadOnly
        } else {
            Control::Begin
        }),
        // `ROLLBACK TO SAVEPOINT` keeps the transaction; `COMMIT PREPARED` ends another one.
        "commit" | "end" | "rollback" | "abort" if !has("to") && !has("prepared") => Some(Control::End),
        "prepare" if word(1).as_deref() == Some("transaction") => Some(Control::End),
        "set" => set_control(tokens, read_only),
        "reset" if word(1).as_deref() == Some("all") && tokens.len() == 2 => auto_route(),
        "reset" if is_route_setting(&tokens[1..]) && tokens.len() == 4 => auto_route(),
        "discard" if word(1).as_deref() == Some("all") && tokens.len() == 2 => auto_route(),
        _ => None,
    }
}

fn auto_route() -> Option<Control> {
    Some(Control::SetRoute {
        route: RouteSetting::Auto,
        local: false,
    })
}

/// `SET [SESSION|LOCAL] TRANSACTION … READ ONLY` or `SET [SESSION|LOCAL] tidepool.route …`.
fn set_control(tokens: &Tokens, read_only: impl Fn() -> bool) -> Option<Control> {
    let scope = tokens
        .get(1)
        .and_then(|t| keyword(t))
        .map(str::to_ascii_lowercase);
    let (local, rest) = match scope.as_deref() {
        Some("local") => (true, &tokens[2..]),
        Some("session") => (false, &tokens[2..]),
        _ => (false, &tokens[1..]),
    };
    if is_kw(rest.first(), "transaction") {
        return read_only().then_some(Control::SetTransactionReadOnly);
    }
    if !is_route_setting(rest) || !(matches!(rest.get(3), Some(Token::Eq)) || is_kw(rest.get(3), "to")) {
        return None;
    }
    let value = match rest.get(4..)? {
        [Token::SingleQuotedString(v)] => v.as_str(),
        [Token::Word(w)] => w.value.as_str(),
        _ => return None,
    };
    let route = match value.to_ascii_lowercase().as_str() {
        "primary" => RouteSetting::Primary,
        "standby" => RouteSetting::Standby,
        "auto" | "default" => RouteSetting::Auto,
        // PostgreSQL accepts any string for a custom setting; we do not guess.
        _ => return None,
    };
    Some(Control::SetRoute { route, local })
}

/// `tidepool . route` (quoted or not, any case) at the start of `tokens`.
fn is_route_setting(tokens: &Tokens) -> bool {
    let name =
        |t: Option<&&Token>, n: &str| matches!(t, Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(n));
    name(tokens.first(), "tidepool")
        && matches!(tokens.get(1), Some(Token::Period))
        && name(tokens.get(2), "route")
}
