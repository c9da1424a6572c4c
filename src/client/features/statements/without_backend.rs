//! Statement traffic tidepool answers between transactions, before any backend is attached.

use super::{ClientStatements, Statement, StatementCache};
use crate::protocol::backend_msg::read_cstr;
use crate::protocol::tag;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Answers `Parse`/`Describe` of statements PostgreSQL already accepted, and `Close` of named
/// statements, up to a `Sync`, with no backend at all, so a client preparing between transactions
/// never waits for the pool (a driver that prepares synchronously would otherwise stall the
/// clients sharing its thread) and closing statements needs no node.
/// Returns the bytes consumed from `input`, or `None` when a backend is needed.
pub fn answer_without_backend(
    input: &[u8],
    cache: &StatementCache,
    client: &mut ClientStatements,
    to_client: &mut BytesMut,
) -> Option<usize> {
    let mut pos = 0;
    let mut registrations: Vec<(String, Arc<Statement>)> = Vec::new();
    // Names the batch closes; the client's map forgets them only if the whole batch is answered.
    let mut closes: Vec<String> = Vec::new();
    let mut reply = BytesMut::new();
    let mut parses = 0;
    loop {
        let rest = &input[pos..];
        if rest.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < 1 + len {
            return None;
        }
        let body = &rest[5..1 + len];
        match rest[0] {
            tag::PARSE => {
                registrations.push(known_parse(body, cache, client, &registrations, &closes)?);
                reply.extend_from_slice(&crate::protocol::backend_msg::PARSE_COMPLETE);
                parses += 1;
            }
            tag::DESCRIBE if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..])?;
                let stmt = registrations
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s)
                    .or_else(|| {
                        client
                            .by_name
                            .get(name)
                            .filter(|_| !closes.iter().any(|n| n == name))
                    })?;
                reply.extend_from_slice(stmt.description.get()?);
            }
            // Closing a named statement only forgets the client's name (the backend's copy
            // stays for other clients), so a batch of Closes, as drivers send when statements
            // are dropped, needs no backend either, and no particular node.
            tag::CLOSE if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..])?;
                if name.is_empty() {
                    return None;
                }
                match registrations.iter().position(|(n, _)| n == name) {
                    Some(i) => drop(registrations.remove(i)),
                    None => closes.push(name.to_string()),
                }
                reply.extend_from_slice(&crate::protocol::backend_msg::CLOSE_COMPLETE);
            }
            tag::SYNC | tag::FLUSH => {
                pos += 1 + len;
                if rest[0] == tag::SYNC {
                    crate::protocol::backend_msg::ready_for_query(&mut reply, b'I');
                }
                break;
            }
            _ => return None,
        }
        pos += 1 + len;
    }
    for name in &closes {
        client.by_name.remove(name);
    }
    client.by_name.extend(registrations);
    client.answered_parses += parses;
    to_client.extend_from_slice(&reply);
    Some(pos)
}

/// A named Parse of a statement PostgreSQL already accepted, under a name the client does not
/// use (or closes earlier in the batch): the registration to make. `None`: needs a backend.
fn known_parse(
    body: &[u8],
    cache: &StatementCache,
    client: &ClientStatements,
    registrations: &[(String, Arc<Statement>)],
    closes: &[String],
) -> Option<(String, Arc<Statement>)> {
    let (name, definition) = read_cstr(body)?;
    if name.is_empty()
        || client.by_name.contains_key(name) && !closes.iter().any(|n| n == name)
        || registrations.iter().any(|(n, _)| n == name)
    {
        return None;
    }
    let stmt = cache.lookup(definition)?;
    if !stmt.parsed_ok.load(Ordering::Relaxed) {
        return None;
    }
    Some((name.to_string(), stmt))
}
