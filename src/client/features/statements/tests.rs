//! Unit tests of statement renaming: no network; frames in, frames out.

use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = format!("{name}\0{sql}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

fn bind(stmt: &str) -> Vec<u8> {
    let mut b = format!("\0{stmt}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    frame(b'B', &b)
}

/// Splits a byte stream into (tag, body) pairs.
fn frames(mut bytes: &[u8]) -> Vec<(char, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push((bytes[0] as char, bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    out
}

struct Harness {
    cache: StatementCache,
    client: ClientStatements,
    backend: BackendStatements,
    pipe: Pipeline,
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Harness {
    fn new() -> Self {
        Harness {
            cache: StatementCache::default(),
            client: ClientStatements::default(),
            backend: BackendStatements::default(),
            pipe: Pipeline::default(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    fn send(&mut self, f: &[u8]) {
        let mut ctx = RewriteContext {
            cache: &self.cache,
            client: &mut self.client,
            backend: &mut self.backend,
            capacity: 2,
            words: None,
        };
        client_frame(
            f,
            &mut ctx,
            &mut self.pipe,
            &mut self.to_server,
            &mut self.to_client,
        );
    }

    /// The server answers with these tags; returns which were forwarded.
    fn answer(&mut self, tags: &[u8]) -> String {
        let mut forwarded = String::new();
        for &t in tags {
            if server_message(
                &[t, 0, 0, 0, 4],
                &mut self.pipe,
                &mut self.client,
                &mut self.backend,
            ) == Disposition::Forward
            {
                forwarded.push(t as char);
            }
            deliver_made(&mut self.pipe, &mut self.client, &mut self.to_client);
        }
        forwarded
    }

    fn take_server(&mut self) -> Vec<(char, Vec<u8>)> {
        frames(&self.to_server.split())
    }

    fn take_client(&mut self) -> String {
        frames(&self.to_client.split()).iter().map(|(t, _)| *t).collect()
    }
}

#[test]
fn named_parse_is_renamed_and_reused_on_the_same_backend() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    let sent = h.take_server();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with(b"tp1\0SELECT 1\0"));
    assert_eq!(h.answer(b"1"), "1");

    // Another client name for the same text: answered without the server.
    h.send(&parse("s2", "SELECT 1"));
    assert!(h.take_server().is_empty());
    assert_eq!(h.take_client(), "1");

    h.send(&bind("s2"));
    let sent = h.take_server();
    assert_eq!(sent[0].0, 'B');
    assert!(sent[0].1.starts_with(b"\0tp1\0"));
}

#[test]
fn bind_on_a_backend_without_the_statement_injects_a_parse_whose_answer_is_swallowed() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.take_server();
    // A different backend: nothing prepared there.
    h.backend = BackendStatements::default();
    h.send(&bind("s1"));
    h.send(&frame(b'E', &[0, 0, 0, 0, 0]));
    h.send(&frame(b'S', &[]));
    let sent: String = h.take_server().iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, "PBES");
    assert_eq!(
        h.answer(b"12DCZ"),
        "2DCZ",
        "the injected ParseComplete is swallowed"
    );
}

#[test]
fn made_up_answers_wait_for_earlier_server_answers() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.send(&parse("s2", "SELECT 1"));
    // ParseComplete for s2 must not overtake s1's.
    assert_eq!(h.take_client(), "");
    assert_eq!(h.answer(b"1"), "1");
    assert_eq!(h.take_client(), "1");
}

#[test]
fn close_of_a_statement_is_answered_locally_and_forgets_the_name() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.take_server();
    h.send(&frame(b'C', b"Ss1\0"));
    assert!(h.take_server().is_empty());
    assert_eq!(h.take_client(), "3");
    assert!(h.client.by_name.is_empty());
    // Reusing the name after Close works.
    h.send(&parse("s1", "SELECT 2"));
    assert_eq!(h.take_server().len(), 1);
}

#[test]
fn duplicate_name_is_42p05_and_skips_to_sync() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.take_server();
    h.take_client();
    h.send(&parse("s1", "SELECT 2"));
    h.send(&bind("s1"));
    h.send(&frame(b'S', &[]));
    let sent: String = h.take_server().iter().map(|(t, _)| *t).collect();
    assert_eq!(
        sent, "S",
        "messages after the error are skipped; Sync goes through"
    );
    assert_eq!(h.take_client(), "E");
    assert_eq!(h.answer(b"Z"), "Z");
}

#[test]
fn a_failed_parse_forgets_the_name_and_skips_queued_answers() {
    let mut h = Harness::new();
    h.send(&parse("bad", "SELEC 1"));
    h.send(&bind("bad"));
    h.send(&frame(b'S', &[]));
    h.take_server();
    assert_eq!(h.answer(b"EZ"), "EZ");
    assert!(h.client.by_name.is_empty());
    assert!(h.backend.is_empty());
    assert!(h.pipe.queue.is_empty());
}

#[test]
fn lru_closes_the_least_recently_used_statement_beyond_capacity() {
    let mut h = Harness::new();
    for (i, sql) in ["SELECT 1", "SELECT 2", "SELECT 3"].iter().enumerate() {
        h.send(&parse(&format!("s{i}"), sql));
    }
    let sent: String = h.take_server().iter().map(|(t, _)| *t).collect();
    assert_eq!(
        sent, "PPCP",
        "capacity 2: the third Parse closes the first statement"
    );
    assert_eq!(h.answer(b"113"), "11");
    assert_eq!(h.answer(b"1"), "1");
    assert_eq!(h.backend.len(), 2);
}

#[test]
fn discard_all_clears_both_sides() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.send(&frame(b'Q', b"discard all\0"));
    assert!(h.client.by_name.is_empty());
    assert!(h.backend.is_empty());
}

#[test]
fn parse_and_describe_of_known_statements_need_no_backend() {
    let mut h = Harness::new();
    // Unknown statement: a backend is needed.
    let mut input = parse("a", "SELECT 1");
    input.extend(frame(b'S', &[]));
    assert_eq!(
        answer_without_backend(&input, &h.cache, &mut h.client, &mut h.to_client),
        None
    );
    // Learn it (parsed once, described once).
    h.send(&parse("s1", "SELECT 1"));
    h.send(&frame(b'D', b"Ss1\0"));
    h.send(&frame(b'S', &[]));
    let mut answers = Vec::new();
    answers.extend(frame(b'1', &[]));
    let t = frame(b't', &[0, 0]);
    let row = frame(b'T', &[0, 0]);
    for f in [&answers[..], &t[..], &row[..], &frame(b'Z', b"I")[..]] {
        server_message(f, &mut h.pipe, &mut h.client, &mut h.backend);
    }
    h.take_client();
    // Another client prepares and describes the same text: answered locally.
    let mut other = ClientStatements::default();
    let mut input = parse("x", "SELECT 1");
    input.extend(frame(b'D', b"Sx\0"));
    input.extend(frame(b'S', &[]));
    input.extend(b"leftover");
    let mut out = BytesMut::new();
    let used = answer_without_backend(&input, &h.cache, &mut other, &mut out).unwrap();
    assert_eq!(used, input.len() - "leftover".len());
    let tags: String = frames(&out).iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, "1tTZ");
    assert!(other.by_name.contains_key("x"));
    // SHOW STATS: a Parse of the client's, none for a server.
    assert_eq!(other.answered_parses, 1);
    assert_eq!(
        h.client.answered_parses, 0,
        "the first client's Parse went to the backend"
    );
}

#[test]
fn parses_written_to_the_backend_are_counted() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.send(&parse("", "SELECT 2"));
    assert_eq!(
        h.pipe.server_parses, 2,
        "a named Parse the backend lacks, an unnamed one"
    );
    h.send(&frame(b'S', &[]));
    h.answer(b"11Z");
    // The same text under another name: the backend has it, nothing is sent.
    h.send(&parse("s2", "SELECT 1"));
    assert_eq!(h.pipe.server_parses, 2);
    // A Bind of a statement the backend lost (capacity 2, two more pushed it out): injected.
    h.send(&frame(b'S', &[]));
    h.answer(b"1Z");
    h.send(&parse("s3", "SELECT 3"));
    h.send(&parse("s4", "SELECT 4"));
    h.send(&frame(b'S', &[]));
    h.answer(b"131Z");
    let before = h.pipe.server_parses;
    h.send(&bind("s1"));
    assert_eq!(h.pipe.server_parses, before + 1);
}

#[test]
fn closing_named_statements_needs_no_backend() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.take_client();
    assert!(h.client.by_name.contains_key("s1"));
    // Close s1 + Close of a name never prepared + Sync: CloseComplete twice, ReadyForQuery.
    let mut input = frame(b'C', b"Ss1\0");
    input.extend(frame(b'C', b"Snever\0"));
    input.extend(frame(b'S', &[]));
    let mut out = BytesMut::new();
    let used = answer_without_backend(&input, &h.cache, &mut h.client, &mut out).unwrap();
    assert_eq!(used, input.len());
    let tags: String = frames(&out).iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, "33Z");
    assert!(!h.client.by_name.contains_key("s1"));
    // Closing the unnamed statement or a portal is left to the backend.
    for body in [&b"S\0"[..], &b"Pp1\0"[..]] {
        let mut input = frame(b'C', body);
        input.extend(frame(b'S', &[]));
        assert_eq!(
            answer_without_backend(&input, &h.cache, &mut h.client, &mut BytesMut::new()),
            None
        );
    }
}

#[test]
fn a_batch_that_closes_then_describes_a_name_goes_to_the_backend() {
    let mut h = Harness::new();
    h.send(&parse("s1", "SELECT 1"));
    h.answer(b"1");
    h.take_client();
    let mut input = frame(b'C', b"Ss1\0");
    input.extend(frame(b'D', b"Ss1\0"));
    input.extend(frame(b'S', &[]));
    assert_eq!(
        answer_without_backend(&input, &h.cache, &mut h.client, &mut BytesMut::new()),
        None
    );
    assert!(h.client.by_name.contains_key("s1"), "nothing was applied");
}

#[test]
fn statements_put_back_by_a_skipped_close_are_closed_at_the_next_prepare() {
    // Capacity 2. A Close tidepool injected is put back when the server skips it; the
    // backend then holds one statement more than allowed until tidepool prepares another,
    // which closes down to the capacity (found by the `statements` fuzz target).
    let mut h = Harness::new();
    for (name, sql) in [("a", "SELECT 1"), ("b", "SELECT 2")] {
        h.send(&parse(name, sql));
        h.answer(b"1");
    }
    h.take_server();
    h.send(&parse("c", "SELECT 3"));
    let sent: String = h.take_server().iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, "CP", "the least recently used is closed first");
    let c = h.client.by_name.get("c").cloned().expect("registered");
    // The batch fails before the Close runs: both are rolled back...
    h.answer(b"E");
    assert_eq!(h.backend.len(), 2);
    // ...but a server that still confirms the new statement leaves three.
    h.backend.add(&c);
    assert_eq!(h.backend.len(), 3);
    h.send(&parse("d", "SELECT 4"));
    let sent: String = h.take_server().iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, "CCP", "two closes bring it back to the capacity");
    assert_eq!(h.backend.len(), 2);
}
