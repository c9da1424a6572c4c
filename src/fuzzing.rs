//! Entry points for fuzz targets: one function per target, shared by `fuzz/` and `tests/fuzz_smoke.rs`.
//!
//! Each takes arbitrary bytes and must never panic. Besides "no crash", each asserts what its
//! decoder promises (bytes consumed match the length word, a re-encoded message equals its
//! input, …): a failed assertion is a finding just like a crash. Nothing here does I/O, and
//! nothing is slow per input (no PBKDF2), so a fuzzer runs thousands of inputs per second.

use crate::auth::fuzz_scram_exchange;
use crate::backend::record_parameter;
use crate::client::features::pinning::may_change_pins;
use crate::client::features::session_state::{may_change_settings, SessionChanges};
use crate::client::features::statements::{
    answer_without_backend, client_frame, deliver_made, server_message, BackendStatements, ClientStatements,
    Pipeline, RewriteContext, StatementCache,
};
use crate::client::params::{follow_reported, settings_diff_sql, ClientParams};
use crate::config::Config;
use crate::protocol::backend_msg::{parse_backend_key_data, parse_parameter_status};
use crate::protocol::error::BackendError;
use crate::protocol::frame::peek_header;
use crate::protocol::frontend_msg::{parse_password, parse_sasl_initial, sasl_initial_response};
use crate::protocol::startup::{encode_startup, StartupDecoder};
use crate::protocol::{
    ErrorFields, Frame, FrameDecoder, FrameError, SqlState, StartupPacket, TransactionStatus,
};
use bytes::{Bytes, BytesMut};

/// A target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/*.rs` and `fuzz/seeds/*` dir).
pub const TARGETS: &[(&str, Target)] = &[
    ("startup_packet", startup_packet),
    ("frame_decoder", frame_decoder),
    ("scram_exchange", scram_exchange),
    ("config", config),
    ("client_messages", client_messages),
    ("statements", statements),
    ("sql_scan", sql_scan),
    ("userlist", userlist),
    ("hba_file", hba_file),
    ("admin_command", admin_command),
    ("http_request", http_request),
    ("patroni_response", patroni_response),
    ("client_batches", client_batches),
    ("isolation_verdict", isolation_verdict),
];

/// An HTTP response from Patroni's REST API: status line, headers, (chunked) body, `/cluster`
/// JSON; never panics, whatever a peer sends.
pub fn patroni_response(data: &[u8]) {
    crate::health::patroni::fuzz_response(data);
}

/// Startup-phase packets, back to back, then the parameters of each StartupMessage as a
/// session would interpret them (`options` parsing, settings SQL).
pub fn startup_packet(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let offset = data.len() - buf.len();
        let decoded = StartupDecoder::decode(&mut buf);
        // Direct TLS is told apart by its first byte (a TLS handshake record, 0x16): no
        // startup packet may begin with it (its length would exceed the 10 000-byte limit).
        if offset == 0 && data.first() == Some(&0x16) {
            assert!(
                !matches!(decoded, Ok(Some(_))),
                "a TLS record decoded as a startup packet"
            );
        }
        match decoded {
            Ok(Some(packet)) => {
                // SSLRequest is exactly 8 bytes: what follows it must stay unread (stuffing check).
                if packet == StartupPacket::SslRequest {
                    assert_eq!(data.len() - buf.len() - offset, 8);
                }
                // A packet is exactly its length word long.
                let used = data.len() - buf.len() - offset;
                let declared = u32::from_be_bytes(data[offset..offset + 4].try_into().expect("4 bytes"));
                assert_eq!(used as u64, u64::from(declared));
                if let StartupPacket::Startup {
                    minor,
                    params,
                    protocol_options,
                } = packet
                {
                    check_startup(minor, &params, &protocol_options, &data[offset..offset + used]);
                    interpret_params(params);
                }
            }
            Ok(None) => {
                assert_eq!(
                    &buf[..],
                    &data[offset..],
                    "an incomplete packet must not be consumed"
                );
                return;
            }
            // The connection would be closed here.
            Err(error) => {
                let _ = error.to_string();
                return;
            }
        }
    }
}

/// What a decoded StartupMessage promises about the packet it came from.
fn check_startup(minor: u16, params: &[(String, String)], options: &[String], wire: &[u8]) {
    assert!(params.iter().any(|(k, _)| k == "user"), "no user, yet decoded");
    if !options.is_empty() {
        return;
    }
    // Nothing dropped or invented: the parameters re-encode to the very same packet.
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut again = BytesMut::new();
    encode_startup(&pairs, &mut again);
    again[6..8].copy_from_slice(&minor.to_be_bytes());
    assert_eq!(&again[..], wire, "StartupMessage does not re-encode");
}

fn interpret_params(params: Vec<(String, String)>) {
    match ClientParams::from_startup(params) {
        Ok(p) => {
            assert!(!p.user.is_empty() && !p.database.is_empty());
            let _ = p.signature();
            let _ = settings_diff_sql(&[], &p.settings);
            let _ = settings_diff_sql(&p.settings, &[]);
        }
        // What the client would be sent must itself be one well-formed frame.
        Err(fields) => {
            let mut wire = BytesMut::from(&fields.to_bytes()[..]);
            let frame = FrameDecoder::new(1 << 20).decode_frame(&mut wire);
            assert!(
                matches!(frame, Ok(Some(_))) && wire.is_empty(),
                "bad ErrorResponse built"
            );
        }
    }
}

/// Frames arriving a few bytes per read. Byte 0 picks the length limit (low nibble, so
/// oversized frames are common) and the read size (high nibble); the rest is the stream.
pub fn frame_decoder(data: &[u8]) {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let limit = 4 + u32::from(knobs & 0x0f) * 16;
    let read_size = 1 + usize::from(knobs >> 4) * 5;
    let decoder = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    // Bytes of `input` delivered to `buf`, and bytes already returned as frames.
    let (mut fed, mut taken) = (0, 0);
    while fed < input.len() {
        let end = (fed + read_size).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            let before = buf.len();
            match decoder.decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    assert_eq!(used, 5 + frame.body.len(), "consumed bytes != 5 + body");
                    assert!(taken + used <= fed, "consumed more than was read");
                    assert!(frame.body.len() + 4 <= limit as usize, "frame over the limit");
                    let mut again = BytesMut::new();
                    frame.write_to(&mut again);
                    assert_eq!(
                        &again[..],
                        &input[taken..taken + used],
                        "frame does not re-encode"
                    );
                    taken += used;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "consumed bytes without a frame");
                    if let Ok(Some((_, total))) = peek_header(&buf, limit) {
                        assert!(buf.len() < total && total <= limit as usize + 1);
                    }
                    break;
                }
                Err(error) => {
                    let word = u32::from_be_bytes(buf[1..5].try_into().expect("a header was read"));
                    match error {
                        FrameError::BadLength(len) => assert!(len == word && len < 4),
                        FrameError::TooLarge { size, .. } => assert!(size == word && size > limit),
                    }
                    return;
                }
            }
        }
    }
    assert_eq!(&buf[..], &input[taken..], "bytes lost or invented");
}

/// A whole SCRAM exchange; see [`fuzz_scram_exchange`] for how the bytes are split.
pub fn scram_exchange(data: &[u8]) {
    fuzz_scram_exchange(data);
}

/// A configuration file: parse, validate, and the lookups sessions make on a valid one.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text) {
        Ok(config) => config,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(config.validate().is_ok(), "validation is not deterministic");
    for name in config.databases.keys() {
        let _ = config.pool_mode_for(name);
        for user in &config.users {
            assert!(config.pool_size_for(name, user) > 0, "validated pool size of 0");
            assert!(config.user(&user.name).is_some());
        }
    }
    for node in &config.nodes {
        let _ = node.address();
    }
    let _ = format!(
        "{config:?} {} {}",
        config.proxy.max_message_size, config.pool.server_lifetime
    );
}

/// An auth_file (PgBouncer userlist.txt): what parses re-encodes to text that parses the same.
pub fn userlist(data: &[u8]) {
    use crate::auth::userlist::parse_userlist;
    use crate::auth::Secret;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries = match parse_userlist(text) {
        Ok(entries) => entries,
        Err(error) => {
            assert!(
                error.line >= 1 && error.line <= text.lines().count().max(1),
                "{error}"
            );
            return;
        }
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut again = String::new();
    for entry in &entries {
        assert!(!entry.name.is_empty());
        let secret = match &entry.secret {
            Secret::Plain(p) => p.clone(),
            Secret::Md5(hash) => format!("md5{}", crate::auth::md5::hex_lower(hash)),
            Secret::Scram(verifier) => verifier.to_string(),
        };
        again.push_str(&format!("{} {}\n", quote(&entry.name), quote(&secret)));
    }
    let reparsed = parse_userlist(&again).expect("re-encoded userlist parses");
    assert_eq!(reparsed.len(), entries.len());
    for (a, b) in entries.iter().zip(&reparsed) {
        assert_eq!(a.name, b.name);
        assert!(a.secret == b.secret, "secret of {:?} changed", a.name);
    }
}

/// An auth_hba_file: parse, then decide a few connections; errors name a real line.
pub fn hba_file(data: &[u8]) {
    use crate::auth::hba::HbaRules;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    let rules = match HbaRules::parse_file(text) {
        Ok((rules, skipped)) => {
            assert!(skipped.iter().all(|&n| n >= 1 && n <= lines));
            rules
        }
        Err(error) => {
            assert!(error.line >= 1 && error.line <= lines, "{error}");
            return;
        }
    };
    for addr in ["127.0.0.1", "10.1.2.3", "::1", "::ffff:192.168.0.1"] {
        let addr = addr.parse().expect("literal address");
        for tls in [false, true] {
            for (db, user) in [("app", "app"), ("all", "x"), ("postgres", "postgres")] {
                if let Some(rule) = rules.decide(tls, db, user, Some(addr)) {
                    let n: usize = rule
                        .origin
                        .strip_prefix("line ")
                        .and_then(|n| n.parse().ok())
                        .expect("origin");
                    assert!(n >= 1 && n <= lines);
                }
            }
        }
    }
}

/// One message body read with every reader tidepool applies to client and server bodies
/// during authentication and relaying.
pub fn client_messages(data: &[u8]) {
    if let Some(password) = parse_password(data) {
        assert_eq!(password.len() + 1, data.len());
    }
    if let Some((mechanism, payload)) = parse_sasl_initial(data) {
        let mut again = BytesMut::new();
        match payload {
            Some(payload) => sasl_initial_response(&mut again, mechanism, payload),
            None => {
                // The builder has no form for "no data": write the -1 length by hand.
                again.extend_from_slice(&[b'p', 0, 0, 0, 0]);
                again.extend_from_slice(mechanism.as_bytes());
                again.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
            }
        }
        assert_eq!(&again[5..], data, "SASLInitialResponse does not re-encode");
    }

    let frame = Frame {
        tag: b'E',
        body: Bytes::copy_from_slice(data),
    };
    let _ = BackendError::parse(&frame).is_fatal();
    let mut reported = Vec::new();
    if let Some((name, value)) = parse_parameter_status(data) {
        assert_eq!(record_parameter(&mut reported, data), Some((name, value)));
        let mut settings = Vec::new();
        follow_reported(&mut settings, &reported);
    }
    let _ = parse_backend_key_data(data);
    if let Some(&first) = data.first() {
        if let Some(status) = TransactionStatus::from_byte(first) {
            assert_eq!(status.as_byte(), first);
        }
    }

    // Our own ErrorResponse carrying arbitrary text must read back as that text, minus NULs.
    let text = String::from_utf8_lossy(data);
    if let Some(code) = SqlState::parse(&text) {
        assert_eq!(code.as_str(), text);
    }
    let mut wire =
        BytesMut::from(&ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, text.clone()).to_bytes()[..]);
    let frame = FrameDecoder::new(u32::MAX).decode_frame(&mut wire);
    let Ok(Some(frame)) = frame else {
        panic!("our ErrorResponse is not a frame: {frame:?}");
    };
    let parsed = BackendError::parse(&frame);
    assert_eq!(parsed.message, text.replace('\0', ""));
    assert_eq!((parsed.code.as_str(), parsed.is_fatal()), ("08P01", true));
}

/// Transaction-mode statement renaming, driven by client and server frames interleaved.
/// Byte 0 sets the backend's statement capacity (1 to 4, so evictions are common). Then
/// records: a byte whose bit 0 says the frame comes from the client (else from the server) and
/// whose bit 1 first offers the rest of the input to `answer_without_backend`, then a frame.
pub fn statements(data: &[u8]) {
    let Some((&knobs, mut rest)) = data.split_first() else {
        return;
    };
    let capacity = 1 + usize::from(knobs & 3);
    let cache = StatementCache::default();
    let (mut client, mut backend) = (ClientStatements::default(), BackendStatements::default());
    let mut pipe = Pipeline::default();
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    while let Some((&op, after)) = rest.split_first() {
        if op & 2 != 0 {
            let mut answers = BytesMut::new();
            if let Some(used) = answer_without_backend(after, &cache, &mut client, &mut answers) {
                assert!(used <= after.len(), "answered more than was sent");
                assert_whole_frames(&answers);
            }
        }
        let Ok(Some((_, total))) = peek_header(after, 1 << 16) else {
            break;
        };
        let Some((frame, next)) = after.split_at_checked(total) else {
            break;
        };
        let added_before = backend.added();
        if op & 1 != 0 {
            let mut ctx = RewriteContext {
                cache: &cache,
                client: &mut client,
                backend: &mut backend,
                capacity,
                words: None,
            };
            client_frame(frame, &mut ctx, &mut pipe, &mut to_server, &mut to_client);
        } else {
            let _ = server_message(frame, &mut pipe, &mut client, &mut backend);
            deliver_made(&mut pipe, &mut client, &mut to_client);
        }
        // A Close the server skipped puts its statement back (the server says it still has
        // it); whenever tidepool prepares one more under its own name, it closes down to the
        // capacity first.
        assert!(
            backend.added() == added_before || backend.len() <= capacity,
            "backend keeps more statements than allowed"
        );
        rest = next;
    }
    assert_whole_frames(&to_server);
    assert_whole_frames(&to_client);
}

/// `bytes` is a sequence of whole, well-formed frames.
fn assert_whole_frames(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    let decoder = FrameDecoder::new(u32::MAX);
    while let Ok(Some(_)) = decoder.decode_frame(&mut buf) {}
    assert!(
        buf.is_empty(),
        "not whole frames: {:?}",
        buf.escape_ascii().to_string()
    );
}

/// The lexical scans the relay runs on Query and Parse text: settings a batch may change and
/// whether it may pin the client. The text is cut at its first NUL, as the relay does.
pub fn sql_scan(data: &[u8]) {
    let sql = &data[..data.iter().position(|&b| b == 0).unwrap_or(data.len())];
    let words = crate::client::features::keywords::Words::scan(sql);
    let mut changes = SessionChanges::default();
    changes.scan(&String::from_utf8_lossy(sql));
    // The relay scans only what the cheap filter lets through: it must never hide a change.
    if !changes.is_empty() {
        assert!(may_change_settings(words), "filter hides a change: {changes:?}");
    }
    let _ = may_change_pins(words, false) | may_change_pins(words, true);
    // SHOW tidepool.lsn / SET tidepool.min_lsn, answered without a backend: a value accepted
    // reads back as itself.
    if let Some(crate::client::session::local_commands::LsnCommand::SetMin(Ok(lsn))) =
        crate::client::session::local_commands::parse_lsn_command(&String::from_utf8_lossy(sql))
    {
        assert_eq!(crate::health::Lsn::parse(&lsn.to_string()), Some(lsn));
    }
    let _ = crate::client::features::sql_prepared::may_change(words);
    // Statement spans are pieces of the text; SQL PREPAREs are cut out of them; LISTEN
    // statements give names PostgreSQL could store.
    let text = String::from_utf8_lossy(sql);
    for (span, words) in crate::client::features::session_state::statement_spans(&text) {
        assert!(text.contains(span) && !words.is_empty());
        if let Some(name) = words.get(1) {
            let row = vec![Some(name.clone()), Some(text.to_string())];
            let set = crate::client::features::sql_prepared::from_rows(&[row]);
            assert!(set.text(name).is_some_and(|t| t.is_empty() || text.contains(t)));
        }
    }
    // Names of prepared statements that SQL mentions (kept from tidepool's own, see
    // `client/statements/guard.rs`).
    crate::client::features::statements::fuzz_statement_refs(&text);
    for command in crate::client::features::listen::parse_listen_sql(&text).unwrap_or_default() {
        if let crate::client::features::listen::ListenCommand::Listen(name)
        | crate::client::features::listen::ListenCommand::Unlisten(name) = command
        {
            assert!(!name.is_empty() && name.len() <= 63);
        }
    }
}

/// Transaction-mode isolation's lexer and verdict on a client's SQL text: never panics; a
/// statement appended after any text it did not find opaque is always seen (nothing a client
/// writes can hide a statement boundary from it); naming more hazards never makes a text cleaner.
pub fn isolation_verdict(data: &[u8]) {
    use crate::client::features::isolation::lexer::{Lexer, Token};
    use crate::client::features::isolation::verdict::{judge, setting_names};
    use crate::client::features::isolation::{Hazards, Verdict};
    let sql = &data[..data.iter().position(|&b| b == 0).unwrap_or(data.len())];
    let known = Hazards::from_rows([("f", "tenant")]);
    let verdict = judge(sql, &known);
    let mut words: Vec<String> = Vec::new();
    for token in Lexer::new(sql) {
        if let Token::Word(w) | Token::Quoted(w) = token {
            assert!(w.is_empty() || sql.windows(w.len()).any(|x| x == w));
            words.push(String::from_utf8_lossy(w).to_ascii_lowercase());
        }
    }
    let every: Vec<(&str, &str)> = words.iter().map(|w| ("f", w.as_str())).collect();
    assert!(judge(sql, &Hazards::from_rows(every)) >= verdict || words.iter().any(|w| w.len() > 63));
    if verdict != Verdict::Opaque {
        let mut longer = sql.to_vec();
        longer.extend_from_slice(b"\n;CALL x()");
        assert_eq!(
            judge(&longer, &known),
            Verdict::Opaque,
            "a CALL hid after {:?}",
            sql.escape_ascii().to_string()
        );
    }
    let mut names = Vec::new();
    setting_names(sql, &mut names);
    assert!(names.len() <= 64 && names.iter().all(|n| n.contains('.') && n.len() <= 63));
}

/// Client frames back to back, as transaction mode reads them between transactions and in the
/// relay: the LISTEN-family recogniser (`client/listen.rs`) and the batch copy kept for a retry
/// after a schema change (`client/schema_retry.rs`).
pub fn client_batches(data: &[u8]) {
    if let Some(request) = crate::client::features::listen::listen_request(data) {
        assert!(request.len <= data.len() && !request.commands.is_empty());
    }
    crate::client::features::schema_retry::fuzz_batch_copy(data);
    // CREATE/DROP/ALTER DATABASE recognition (`client/database_ddl.rs`).
    for name in crate::client::features::database_ddl::databases_needing_exclusive_use(data) {
        assert!(name.len() <= 63);
    }
}

/// xorshift64: a tiny deterministic generator for property tests and the fuzz smoke test, so a
/// failure reproduces on every run without an extra crate. Not for anything secret.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// The admin console's statement splitter and command parser: never panics; a statement it
/// returns is never empty and never holds a semicolon outside quotes; SHOW is read-only.
pub fn admin_command(data: &[u8]) {
    use crate::admin::command::{parse, split_statements, Command};
    let text = String::from_utf8_lossy(data);
    let Ok(statements) = split_statements(&text) else {
        return;
    };
    for statement in statements {
        assert!(!statement.trim().is_empty(), "empty statement from {text:?}");
        if let Ok(command) = parse(statement) {
            assert_eq!(command.is_read_only(), matches!(command, Command::Show(_)));
        }
    }
}

/// The metrics endpoint's basic-auth check: never panics, and only the exact expected header
/// value is accepted.
pub fn http_request(data: &[u8]) {
    let expected = crate::health::patroni::basic_authorization("prometheus", "secret");
    assert_eq!(
        crate::metrics::http::authorized(&expected, Some(data)),
        data == expected.as_bytes()
    );
}
