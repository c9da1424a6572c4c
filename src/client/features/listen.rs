//! A client's `LISTEN` / `UNLISTEN` between transactions (transaction mode), answered by tidepool
//! with the pool's listener connection (`notify`) instead of pinning a backend.
//!
//! Taken over: a simple Query made only of `LISTEN ch`, `UNLISTEN ch` and `UNLISTEN *`, and
//! the extended-protocol shape drivers use for one statement (Parse, Bind, optional Describe,
//! Execute, Sync of the unnamed statement). Anything else (a LISTEN inside a transaction block,
//! with comments, next to other statements) goes to the backend as before and pins the client.
//! With several nodes LISTEN is left to the backend too (the listener would have to follow the
//! primary). `DISCARD ALL` also drops the client's subscriptions.

use crate::client::features::keywords::{Word, Words};
use crate::client::session::Session;
use crate::notify::Subscription;
use crate::protocol::backend_msg::{self, read_cstr};
use crate::protocol::{tag, ErrorFields, SqlState};
use bytes::{Buf, BytesMut};

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
const MAX_IDENTIFIER: usize = 63;

/// One LISTEN-family statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenCommand {
    Listen(String),
    Unlisten(String),
    UnlistenAll,
}

impl ListenCommand {
    fn command_tag(&self) -> &'static str {
        match self {
            ListenCommand::Listen(_) => "LISTEN",
            _ => "UNLISTEN",
        }
    }
}

/// The statements of `sql`, if it holds only LISTEN / UNLISTEN statements (at least one).
pub fn parse_listen_sql(sql: &str) -> Option<Vec<ListenCommand>> {
    let mut commands = Vec::new();
    for (text, _) in crate::client::features::session_state::statement_spans(sql) {
        commands.push(parse_statement(text)?);
    }
    (!commands.is_empty()).then_some(commands)
}

fn parse_statement(text: &str) -> Option<ListenCommand> {
    let keyword_end = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (keyword, rest) = text.split_at(keyword_end);
    let rest = rest.trim_start();
    if keyword.len() == text.len() || rest.len() == text.len() - keyword.len() {
        return None; // no argument, or no space after the keyword
    }
    let (argument, tail) = if keyword.eq_ignore_ascii_case("UNLISTEN") && rest.starts_with('*') {
        (None, &rest[1..])
    } else {
        let (name, tail) = identifier(rest)?;
        (Some(name), tail)
    };
    if !tail.trim().is_empty() {
        return None;
    }
    match (keyword.to_ascii_uppercase().as_str(), argument) {
        ("LISTEN", Some(name)) => Some(ListenCommand::Listen(name)),
        ("UNLISTEN", Some(name)) => Some(ListenCommand::Unlisten(name)),
        ("UNLISTEN", None) => Some(ListenCommand::UnlistenAll),
        _ => None,
    }
}

/// An identifier at the start of `s` (quoted or not) as PostgreSQL stores it, and the rest.
fn identifier(s: &str) -> Option<(String, &str)> {
    let (name, rest) = if let Some(quoted) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        loop {
            let (i, c) = chars.next()?;
            if c == '"' {
                if quoted[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                    continue;
                }
                break (name, &quoted[i + 1..]);
            }
            name.push(c);
        }
    } else {
        let first = s.chars().next()?;
        if !(first.is_ascii_alphabetic() || first == '_' || !first.is_ascii()) {
            return None;
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()))
            .unwrap_or(s.len());
        (s[..end].to_ascii_lowercase(), &s[end..])
    };
    if name.is_empty() {
        return None;
    }
    Some((truncate(name), rest))
}

fn truncate(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER {
        let mut end = MAX_IDENTIFIER;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// A LISTEN-family request at the start of `input`: its commands, the bytes it takes, and
/// whether it is the extended-protocol shape (then the answer includes Parse/Bind completions
/// and NoData if described).
#[derive(Debug, PartialEq, Eq)]
pub struct ListenRequest {
    pub commands: Vec<ListenCommand>,
    pub len: usize,
    /// Extended protocol: (described).
    pub extended: Option<bool>,
}

/// Recognises a LISTEN-family request at the start of `input` (whole frames only).
pub fn listen_request(input: &[u8]) -> Option<ListenRequest> {
    let mut frames = Frames { input, pos: 0 };
    let (first, body) = frames.next()?;
    // Runs before every request in transaction mode: parse only what may be one (UNLISTEN
    // contains LISTEN).
    let text = match first {
        tag::QUERY => body,
        tag::PARSE => read_cstr(body).map_or(&[][..], |(_, rest)| rest),
        _ => return None,
    };
    if !Words::scan(text).any(&[Word::Listen, Word::Unlisten]) {
        return None;
    }
    if first == tag::QUERY {
        let sql = std::str::from_utf8(body.strip_suffix(&[0])?).ok()?;
        return Some(ListenRequest {
            commands: parse_listen_sql(sql)?,
            len: frames.pos,
            extended: None,
        });
    }
    if first != tag::PARSE {
        return None;
    }
    // Parse "" "LISTEN x" with no parameter types.
    let (name, rest) = read_cstr(body)?;
    let (sql, types) = read_cstr(rest)?;
    if !name.is_empty() || types != [0, 0] {
        return None;
    }
    let commands = parse_listen_sql(sql)?;
    if commands.len() != 1 {
        return None;
    }
    // Bind "" "" with no parameters.
    let (bind, body) = frames.next()?;
    if bind != tag::BIND || body.get(..6)? != [0, 0, 0, 0, 0, 0] {
        return None;
    }
    let (mut next, mut body) = frames.next()?;
    let mut described = false;
    if next == tag::DESCRIBE {
        if body != b"P\0" {
            return None;
        }
        described = true;
        (next, body) = frames.next()?;
    }
    if next != tag::EXECUTE || body.first() != Some(&0) {
        return None;
    }
    let (sync, _) = frames.next()?;
    if sync != tag::SYNC {
        return None;
    }
    Some(ListenRequest {
        commands,
        len: frames.pos,
        extended: Some(described),
    })
}

/// Whole frames at the start of a buffer.
struct Frames<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let rest = self.input.get(self.pos..)?;
        let header = rest.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let body = rest.get(5..1 + len.max(4))?;
        self.pos += 1 + len.max(4);
        Some((header[0], body))
    }
}

/// `DISCARD ALL` alone: the client's subscriptions go with everything else.
fn is_discard_all(input: &[u8]) -> bool {
    let mut frames = Frames { input, pos: 0 };
    let Some((tag::QUERY, body)) = frames.next() else {
        return false;
    };
    if !Words::scan(body).has(Word::Discard) {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ';' || c == '\0')
        .filter(|w| !w.is_empty())
        .collect();
    matches!(words.as_slice(), [a, b] if a.eq_ignore_ascii_case("DISCARD") && b.eq_ignore_ascii_case("ALL"))
}

impl Session {
    /// True when `words` (the trigger words of the request at the head of the client's input)
    /// may make it one [`Self::answer_listen`] answers: the caller checks this first, so the
    /// (boxed) answer costs nothing on other requests.
    pub(crate) fn may_answer_listen(&self, words: Words) -> bool {
        words.any(&[Word::Listen, Word::Unlisten, Word::Discard]) && !self.has_health()
    }

    /// Answers a LISTEN-family request at the head of the client's input without a backend.
    /// Returns true when it did. Called only where [`Self::may_answer_listen`] said yes; for
    /// anything else the parsers below find no LISTEN and no DISCARD ALL and it returns false.
    pub(crate) async fn answer_listen(&mut self) -> bool {
        if is_discard_all(&self.client.rbuf) {
            if let Some(sub) = self.listens.as_mut() {
                sub.unlisten_all();
            }
            return false;
        }
        let Some(request) = listen_request(&self.client.rbuf) else {
            return false;
        };
        let mut failed = None;
        for command in &request.commands {
            match command {
                ListenCommand::Listen(channel) => {
                    let shutdown = self.shared.shutdown.subscribe();
                    let sub = self.listens.get_or_insert_with(|| {
                        // Boxed: few clients LISTEN; inline it would size every session.
                        Box::new(Subscription::new(self.shared.notify.hub(
                            self.checkout.pool(),
                            &self.shared.cancels.users,
                            shutdown,
                        )))
                    });
                    if !sub.listen(channel).await {
                        failed = Some(channel.clone());
                        break;
                    }
                }
                ListenCommand::Unlisten(channel) => {
                    if let Some(sub) = self.listens.as_mut() {
                        sub.unlisten(channel);
                    }
                }
                ListenCommand::UnlistenAll => {
                    if let Some(sub) = self.listens.as_mut() {
                        sub.unlisten_all();
                    }
                }
            }
        }
        let out = &mut self.client.wbuf;
        if let Some(channel) = failed {
            // Statements before the failure took effect, as they would have in PostgreSQL
            // (LISTEN in an implicit transaction is undone on error, a harmless difference).
            let error = ErrorFields::error(
                SqlState::CONNECTION_FAILURE,
                format!("could not listen on channel \"{channel}\": the server connection failed"),
            );
            out.extend_from_slice(&error.to_bytes());
        } else {
            if let Some(described) = request.extended {
                out.extend_from_slice(&[b'1', 0, 0, 0, 4, b'2', 0, 0, 0, 4]);
                if described {
                    out.extend_from_slice(&[b'n', 0, 0, 0, 4]);
                }
            }
            for command in &request.commands {
                command_complete(out, command.command_tag());
            }
        }
        backend_msg::ready_for_query(out, b'I');
        self.client.rbuf.advance(request.len);
        true
    }

    /// Queues the client's pending notifications for sending.
    pub(crate) fn deliver_notifications(&mut self) {
        if let Some(sub) = self.listens.as_ref() {
            sub.inbox.drain_into(&mut self.client.wbuf);
        }
    }
}

/// Resolves when the client has notifications to deliver (never, without subscriptions).
pub(crate) async fn notified(listens: &Option<Box<Subscription>>) {
    match listens {
        Some(sub) => sub.inbox.ready().await,
        None => std::future::pending().await,
    }
}

fn command_complete(out: &mut BytesMut, tag_text: &str) {
    let s = backend_msg::begin(out, b'C');
    backend_msg::put_cstr(out, tag_text);
    backend_msg::finish(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenCommand::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn listen_statements() {
        assert_eq!(
            parse_listen_sql("LISTEN Jobs; unlisten \"Mixed \"\"Case\"\"\" ; UNLISTEN *;"),
            Some(vec![
                Listen("jobs".into()),
                Unlisten("Mixed \"Case\"".into()),
                UnlistenAll
            ])
        );
        assert_eq!(
            parse_listen_sql(&format!("LISTEN {}", "a".repeat(70))),
            Some(vec![Listen("a".repeat(63))])
        );
        for sql in [
            "",
            "LISTEN",
            "LISTEN *",
            "LISTEN a b",
            "LISTEN a; SELECT 1",
            "LISTEN/**/a",
            "LISTENa",
            "NOTIFY a",
            "LISTEN \"\"",
            "LISTEN \"open",
            "LISTEN 1a",
        ] {
            assert_eq!(parse_listen_sql(sql), None, "{sql}");
        }
    }

    #[test]
    fn simple_and_extended_requests() {
        let q = frame(b'Q', b"LISTEN a\0");
        let r = listen_request(&q).unwrap();
        assert_eq!((r.len, r.extended), (q.len(), None));
        let mut ext = frame(b'P', b"\0LISTEN a\0\0\0");
        ext.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        ext.extend(frame(b'D', b"P\0"));
        ext.extend(frame(b'E', b"\0\0\0\0\0"));
        ext.extend(frame(b'S', b""));
        let r = listen_request(&ext).unwrap();
        assert_eq!(
            (r.commands, r.len, r.extended),
            (vec![Listen("a".into())], ext.len(), Some(true))
        );
        // Incomplete, named, or something else: not ours.
        assert_eq!(listen_request(&ext[..ext.len() - 1]), None);
        assert_eq!(listen_request(&frame(b'P', b"s1\0LISTEN a\0\0\0")), None);
        assert_eq!(listen_request(&frame(b'Q', b"SELECT 1\0")), None);
        assert!(is_discard_all(&frame(b'Q', b"discard  ALL;\0")));
        assert!(!is_discard_all(&frame(b'Q', b"DISCARD TEMP\0")));
    }
}
