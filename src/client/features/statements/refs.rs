//! Where SQL text names a prepared statement: `EXECUTE name`, `EXPLAIN … EXECUTE name`,
//! `CREATE TABLE … AS EXECUTE name`, `DEALLOCATE [PREPARE] name | ALL` and `PREPARE name`, with
//! each name as PostgreSQL resolves it (unquoted: lower-cased; quoted: as written; truncated to
//! 63 bytes) and its byte span, so that `statements` can keep names a client does not own away
//! from tidepool's own statements on a shared backend.

use std::ops::Range;

/// What a statement does with the name it mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Execute,
    Deallocate,
    DeallocateAll,
    Prepare,
}

/// One mention of a prepared statement's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    pub kind: RefKind,
    /// The name as PostgreSQL looks it up.
    pub name: String,
    /// Bytes of the name token in the text (empty for `DEALLOCATE ALL`).
    pub span: Range<usize>,
    /// Which statement of the text (0 = the first).
    pub statement: usize,
}

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
const MAX_IDENTIFIER: usize = 63;

/// Cheap filter before `scan`: could the text mention a statement name at all?
pub fn may_refer(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 3] = [b"execute", b"deallocate", b"prepare"];
    sql.windows(7)
        .any(|w| WORDS.iter().any(|word| w.eq_ignore_ascii_case(&word[..7])))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword: folded value, and whether it was quoted.
    Name {
        value: String,
        quoted: bool,
    },
    Semicolon,
    Other,
}

/// Every name mention in `sql`, in text order.
pub fn scan(sql: &str) -> Vec<NameRef> {
    let mut refs = Vec::new();
    let mut statement: Vec<(Token, Range<usize>)> = Vec::new();
    let mut index = 0;
    let mut lexer = Lexer { sql, pos: 0 };
    loop {
        let next = lexer.next_token();
        let end = matches!(next, None | Some((Token::Semicolon, _)));
        if end {
            if let Some(r) = mention(&statement, index) {
                refs.push(r);
            }
            if !statement.is_empty() {
                index += 1;
            }
            statement.clear();
            if next.is_none() {
                return refs;
            }
        } else if let Some(token) = next {
            // The first few tokens say what a statement is; EXPLAIN and CREATE … AS need more.
            if statement.len() < 16 {
                statement.push(token);
            }
        }
    }
}

/// The first `limit` tokens of each statement of `sql`: a name (folded value, quoted) or
/// `None` for anything else (punctuation, literals). For other modules' small grammars.
pub(crate) fn statement_tokens(sql: &str, limit: usize) -> Vec<Vec<Option<(String, bool)>>> {
    let mut out = vec![Vec::new()];
    let mut lexer = Lexer { sql, pos: 0 };
    while let Some((token, _)) = lexer.next_token() {
        let current = out.last_mut().expect("never empty");
        match token {
            Token::Semicolon if current.is_empty() => {}
            Token::Semicolon => out.push(Vec::new()),
            _ if current.len() >= limit => {}
            Token::Name { value, quoted } => current.push(Some((value, quoted))),
            Token::Other => current.push(None),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn keyword(token: Option<&(Token, Range<usize>)>, kw: &str) -> bool {
    matches!(token, Some((Token::Name { value, quoted: false }, _)) if value == kw)
}

fn name_at(tokens: &[(Token, Range<usize>)], i: usize, kind: RefKind, statement: usize) -> Option<NameRef> {
    match tokens.get(i)? {
        (Token::Name { value, .. }, span) => Some(NameRef {
            kind,
            name: value.clone(),
            span: span.clone(),
            statement,
        }),
        _ => None,
    }
}

/// The name one statement mentions, if it is one of the forms above.
fn mention(tokens: &[(Token, Range<usize>)], statement: usize) -> Option<NameRef> {
    let first = tokens.first();
    if keyword(first, "execute") {
        return name_at(tokens, 1, RefKind::Execute, statement);
    }
    if keyword(first, "prepare") {
        return name_at(tokens, 1, RefKind::Prepare, statement);
    }
    if keyword(first, "deallocate") {
        let at = if keyword(tokens.get(1), "prepare") { 2 } else { 1 };
        if keyword(tokens.get(at), "all") {
            return Some(NameRef {
                kind: RefKind::DeallocateAll,
                name: String::new(),
                span: 0..0,
                statement,
            });
        }
        return name_at(tokens, at, RefKind::Deallocate, statement);
    }
    if keyword(first, "explain") || keyword(first, "create") {
        let at = (1..tokens.len()).find(|&i| keyword(tokens.get(i), "execute"))?;
        return name_at(tokens, at + 1, RefKind::Execute, statement);
    }
    None
}

struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn next_token(&mut self) -> Option<(Token, Range<usize>)> {
        let bytes = self.sql.as_bytes();
        loop {
            let start = self.pos;
            let c = *bytes.get(start)?;
            let token = match c {
                b';' => {
                    self.pos += 1;
                    Token::Semicolon
                }
                c if c.is_ascii_whitespace() => {
                    self.pos += 1;
                    continue;
                }
                b'-' if bytes.get(start + 1) == Some(&b'-') => {
                    self.pos = find_from(bytes, start, b'\n').unwrap_or(bytes.len());
                    continue;
                }
                b'/' if bytes.get(start + 1) == Some(&b'*') => {
                    self.pos = skip_block_comment(bytes, start);
                    continue;
                }
                b'\'' => {
                    self.pos = skip_string(bytes, start + 1, false);
                    Token::Other
                }
                b'"' => {
                    let (value, end) = quoted_identifier(self.sql, start);
                    self.pos = end;
                    Token::Name {
                        value: truncate(value),
                        quoted: true,
                    }
                }
                b'$' => {
                    self.pos = skip_dollar(bytes, start).unwrap_or(start + 1);
                    Token::Other
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                    let end = word_end(bytes, start);
                    // E'…' strings take backslash escapes.
                    if end == start + 1 && matches!(c, b'e' | b'E') && bytes.get(end) == Some(&b'\'') {
                        self.pos = skip_string(bytes, end + 1, true);
                        Token::Other
                    } else {
                        self.pos = end;
                        Token::Name {
                            value: truncate(self.sql[start..end].to_ascii_lowercase()),
                            quoted: false,
                        }
                    }
                }
                _ => {
                    self.pos += self.sql[start..].chars().next().map_or(1, char::len_utf8);
                    Token::Other
                }
            };
            return Some((token, start..self.pos));
        }
    }
}

fn truncate(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER {
        let mut cut = MAX_IDENTIFIER;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

fn find_from(bytes: &[u8], from: usize, b: u8) -> Option<usize> {
    bytes[from..].iter().position(|&c| c == b).map(|i| from + i)
}

fn word_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'$') || bytes[i] >= 0x80)
    {
        i += 1;
    }
    i
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(bytes: &[u8], mut i: usize, backslashes: bool) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslashes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The value of the quoted identifier at `start` and the position after it.
fn quoted_identifier(sql: &str, start: usize) -> (String, usize) {
    let bytes = sql.as_bytes();
    let mut value = String::new();
    let mut i = start + 1;
    let mut from = i;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            value.push_str(&sql[from..i]);
            if bytes.get(i + 1) == Some(&b'"') {
                value.push('"');
                i += 2;
                from = i;
                continue;
            }
            return (value, i + 1);
        }
        i += 1;
    }
    value.push_str(&sql[from..]);
    (value, bytes.len())
}

fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    // Block comments nest in PostgreSQL.
    let mut depth = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Past a `$tag$ … $tag$` string at `start`, or `None` if `$` does not open one there.
fn skip_dollar(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80) {
        if i == start + 1 && bytes[i].is_ascii_digit() {
            return None; // `$1`: a parameter
        }
        i += 1;
    }
    if bytes.get(i) != Some(&b'$') {
        return None;
    }
    let delimiter = &bytes[start..=i];
    let body = i + 1;
    let end = bytes[body..]
        .windows(delimiter.len())
        .position(|w| w == delimiter)
        .map_or(bytes.len(), |p| body + p + delimiter.len());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<(RefKind, String, usize)> {
        scan(sql)
            .into_iter()
            .map(|r| (r.kind, r.name, r.statement))
            .collect()
    }

    #[test]
    fn finds_each_form_with_postgres_folding() {
        use RefKind::*;
        assert_eq!(names("EXECUTE TP5(1, 2)"), [(Execute, "tp5".into(), 0)]);
        assert_eq!(names("execute \"TP5\""), [(Execute, "TP5".into(), 0)]);
        assert_eq!(names("DEALLOCATE _pg3_0"), [(Deallocate, "_pg3_0".into(), 0)]);
        assert_eq!(names("deallocate prepare x"), [(Deallocate, "x".into(), 0)]);
        assert_eq!(names("DEALLOCATE ALL"), [(DeallocateAll, String::new(), 0)]);
        assert_eq!(
            names("DEALLOCATE PREPARE ALL"),
            [(DeallocateAll, String::new(), 0)]
        );
        assert_eq!(names("PREPARE q AS SELECT 1"), [(Prepare, "q".into(), 0)]);
        assert_eq!(
            names("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE tp7(1)"),
            [(Execute, "tp7".into(), 0)]
        );
        assert_eq!(
            names("CREATE TABLE t AS EXECUTE tp8"),
            [(Execute, "tp8".into(), 0)]
        );
        assert_eq!(
            names("SELECT 1; /* EXECUTE no */ EXECUTE \"a\"\"b\"; SELECT 'EXECUTE no'"),
            [(Execute, "a\"b".into(), 1)]
        );
    }

    #[test]
    fn strings_comments_and_dollar_quotes_are_not_statements() {
        assert!(names("SELECT 'x; EXECUTE tp1'").is_empty());
        assert!(names("SELECT E'\\'; EXECUTE tp1'").is_empty());
        assert!(names("SELECT $$ ; EXECUTE tp1 $$, $a$ ; DEALLOCATE tp2 $a$").is_empty());
        assert!(names("-- EXECUTE tp1\nSELECT 1").is_empty());
        assert!(names("/* /* nested */ ; EXECUTE tp1 */ SELECT 1").is_empty());
        assert!(names("SELECT execute FROM t").is_empty());
    }

    #[test]
    fn spans_point_at_the_name_and_long_names_are_truncated() {
        let sql = "DEALLOCATE  \"Tp1\" ";
        let r = &scan(sql)[0];
        assert_eq!(&sql[r.span.clone()], "\"Tp1\"");
        let long = "x".repeat(70);
        assert_eq!(scan(&format!("EXECUTE {long}"))[0].name.len(), 63);
        assert!(may_refer(b"select 1; ExEcUtE x"));
        assert!(!may_refer(b"SELECT 1"));
    }
}
