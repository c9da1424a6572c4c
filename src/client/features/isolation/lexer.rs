//! A small SQL lexer, exactly as strict as the isolation verdict needs: it follows PostgreSQL's
//! rules for strings, quoted identifiers, dollar quotes and (nested) comments, so that a
//! statement boundary or a function name can never hide from it. What it is not sure about
//! (a backslash in a standard string, whose meaning depends on `standard_conforming_strings`;
//! an unterminated literal or comment) it reports as [`Token::Unsure`].

/// One token of SQL text; words borrow from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A bare identifier or keyword (case as written).
    Word(&'a [u8]),
    /// A `"quoted"` identifier, quotes removed (doubled quotes left doubled: compared only).
    Quoted(&'a [u8]),
    /// A string literal's contents (standard, E'', U&'' or dollar-quoted).
    Str(&'a [u8]),
    /// `;` outside any literal: the end of a statement.
    Semicolon,
    /// Any other punctuation, operator character, number or parameter.
    Other(u8),
    /// Something whose meaning this lexer cannot pin down: the caller must assume the worst.
    Unsure,
}

/// Iterates over the tokens of `sql`, stopping at its first NUL (where PostgreSQL's reading of
/// a Query or Parse text ends).
#[derive(Clone)]
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Lexer<'a> {
        let end = sql.iter().position(|&b| b == 0).unwrap_or(sql.len());
        Lexer {
            sql: &sql[..end],
            pos: 0,
        }
    }

    fn peek(&self, at: usize) -> Option<u8> {
        self.sql.get(self.pos + at).copied()
    }

    /// Skips whitespace and comments; `false` if a block comment never ends.
    fn skip_blank(&mut self) -> bool {
        loop {
            let rest = self.sql.get(self.pos..).unwrap_or(&[]);
            self.pos += rest
                .iter()
                .position(|&b| CLASSES[b as usize] & SPACE == 0)
                .unwrap_or(rest.len());
            match self.peek(0) {
                Some(b'-') if self.peek(1) == Some(b'-') => {
                    while let Some(b) = self.peek(0) {
                        self.pos += 1;
                        if b == b'\n' || b == b'\r' {
                            break;
                        }
                    }
                }
                Some(b'/') if self.peek(1) == Some(b'*') => {
                    self.pos += 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => return false,
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return true,
            }
        }
    }

    /// A quoted run ending at `quote` (doubled quotes escape it); `backslash` makes `\` escape
    /// the next byte (E'' strings). Returns the contents, or None if it never ends.
    fn quoted(&mut self, quote: u8, backslash: bool) -> Option<&'a [u8]> {
        let start = self.pos;
        loop {
            match self.peek(0)? {
                b'\\' if backslash => self.pos += 2,
                b if b == quote => {
                    if self.peek(1) == Some(quote) {
                        self.pos += 2;
                    } else {
                        let contents = &self.sql[start..self.pos];
                        self.pos += 1;
                        return Some(contents);
                    }
                }
                _ => self.pos += 1,
            }
            if self.pos > self.sql.len() {
                // A backslash as the last byte: never ends.
                self.pos = self.sql.len();
                return None;
            }
        }
    }

    /// A standard string: a backslash in it means different things depending on
    /// `standard_conforming_strings`, so it makes the token unsure. Adjacent literals separated
    /// by a newline continue the string in PostgreSQL; treating them as two strings is the same
    /// for our purpose.
    fn standard_string(&mut self) -> Token<'a> {
        match self.quoted(b'\'', false) {
            Some(contents) if !contents.contains(&b'\\') => Token::Str(contents),
            _ => Token::Unsure,
        }
    }

    /// `$tag$ … $tag$` at the current `$`, if it is one (else None, nothing consumed).
    fn dollar_quote(&mut self) -> Option<Token<'a>> {
        let rest = &self.sql[self.pos + 1..];
        let tag_len = rest
            .iter()
            .position(|&b| !(is_ident_start(b) || b.is_ascii_digit()))
            .unwrap_or(rest.len());
        let tag = &rest[..tag_len];
        if rest.get(tag_len) != Some(&b'$') || tag.first().is_some_and(|b| b.is_ascii_digit()) {
            return None;
        }
        let delimiter = &self.sql[self.pos..self.pos + tag_len + 2];
        let body_start = self.pos + tag_len + 2;
        let body = &self.sql[body_start..];
        match find(body, delimiter) {
            Some(end) => {
                self.pos = body_start + end + delimiter.len();
                Some(Token::Str(&body[..end]))
            }
            None => {
                self.pos = self.sql.len();
                Some(Token::Unsure)
            }
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_blank() {
            self.pos = self.sql.len();
            return Some(Token::Unsure);
        }
        let byte = self.peek(0)?;
        let token = match byte {
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'\'' => {
                self.pos += 1;
                self.standard_string()
            }
            b'"' => {
                self.pos += 1;
                match self.quoted(b'"', false) {
                    Some(name) => Token::Quoted(name),
                    None => Token::Unsure,
                }
            }
            b'$' => match self.dollar_quote() {
                Some(token) => token,
                None => {
                    // A parameter ($1) or a stray dollar.
                    self.pos += 1;
                    while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    Token::Other(b'$')
                }
            },
            b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                self.pos += 2;
                match self.quoted(b'\'', true) {
                    Some(contents) => Token::Str(contents),
                    None => Token::Unsure,
                }
            }
            // U&'…' and U&"…": their backslash escapes cannot end the literal; a UESCAPE
            // clause that follows is read as a word and a string.
            b'u' | b'U' if self.peek(1) == Some(b'&') && matches!(self.peek(2), Some(b'\'' | b'"')) => {
                let quote = self.peek(2).expect("checked");
                self.pos += 3;
                match self.quoted(quote, false) {
                    Some(contents) if quote == b'\'' => Token::Str(contents),
                    Some(name) => Token::Quoted(name),
                    None => Token::Unsure,
                }
            }
            // B'…' and X'…' bit strings: no backslash meaning, read like standard strings.
            b if is_ident_start(b) => {
                let rest = &self.sql[self.pos..];
                let len = rest[1..]
                    .iter()
                    .position(|&b| !is_ident_continue(b))
                    .map_or(rest.len(), |n| n + 1);
                self.pos += len;
                Token::Word(&rest[..len])
            }
            b if b.is_ascii_digit() => {
                // Numbers, with their exponent, decimal point and trailing junk letters.
                while self
                    .peek(0)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                {
                    self.pos += 1;
                }
                Token::Other(b'0')
            }
            other => {
                self.pos += 1;
                Token::Other(other)
            }
        };
        Some(token)
    }
}

/// Byte classes, one table lookup per byte on the hot loops.
const START: u8 = 1;
const CONTINUE: u8 = 2;
const SPACE: u8 = 4;
const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // PostgreSQL's identifier start: a letter, `_`, or any byte of a multi-byte character.
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            table[b] |= START | CONTINUE;
        }
        if c.is_ascii_digit() || c == b'$' {
            table[b] |= CONTINUE;
        }
        // PostgreSQL 16+ also takes a vertical tab for white space: so does this lexer, or a
        // statement after one would not be seen as one.
        if c.is_ascii_whitespace() || c == 0x0b {
            table[b] |= SPACE;
        }
        b += 1;
    }
    table
};

/// White space as PostgreSQL's scanner reads it (and a vertical tab, as 16+ does).
pub(super) fn is_space(b: u8) -> bool {
    CLASSES[b as usize] & SPACE != 0
}

pub(super) fn is_ident_start(b: u8) -> bool {
    CLASSES[b as usize] & START != 0
}

pub(super) fn is_ident_continue(b: u8) -> bool {
    CLASSES[b as usize] & CONTINUE != 0
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::{Lexer, Token};

    fn tokens(sql: &str) -> Vec<Token<'_>> {
        Lexer::new(sql.as_bytes()).collect()
    }

    #[test]
    fn words_strings_and_boundaries() {
        use Token::*;
        assert_eq!(
            tokens("SELECT 'a;b', \"X;y\" FROM t; DO $$x$$"),
            vec![
                Word(b"SELECT"),
                Str(b"a;b"),
                Other(b','),
                Quoted(b"X;y"),
                Word(b"FROM"),
                Word(b"t"),
                Semicolon,
                Word(b"DO"),
                Str(b"x"),
            ]
        );
        assert_eq!(
            tokens("select $1, $tag$ ; $$ $tag$, e'it\\'s;'"),
            vec![
                Word(b"select"),
                Other(b'$'),
                Other(b','),
                Str(b" ; $$ "),
                Other(b','),
                Str(b"it\\'s;"),
            ]
        );
    }

    #[test]
    fn comments_nest_and_hide_nothing_after_them() {
        use Token::*;
        assert_eq!(
            tokens("/* a /* b */ ; */ SELECT 1 -- ; DO\n; DO"),
            vec![Word(b"SELECT"), Other(b'0'), Semicolon, Word(b"DO")]
        );
        assert_eq!(tokens("SELECT /* never ends"), vec![Word(b"SELECT"), Unsure]);
    }

    #[test]
    fn what_depends_on_server_settings_is_unsure() {
        // With standard_conforming_strings off, the backslash escapes the quote and the
        // string swallows the rest; with it on, `; DO` is a statement. Either way: unsure.
        assert!(tokens("SELECT 'a\\'; DO $$ $$; --'").contains(&Token::Unsure));
        assert!(tokens("SELECT 'unterminated").contains(&Token::Unsure));
        assert!(tokens("SELECT $x$ unterminated").contains(&Token::Unsure));
        assert_eq!(tokens("SELECT e'\\"), vec![Token::Word(b"SELECT"), Token::Unsure]);
        assert_eq!(
            tokens("SELECT 1\0; DO"),
            vec![Token::Word(b"SELECT"), Token::Other(b'0')]
        );
    }
}
