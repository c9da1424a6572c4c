//! Messages a client sends: builders for what tidepool itself sends to PostgreSQL, and readers
//! for what it must understand from clients during authentication.

use super::backend_msg::{begin, finish, put_cstr, read_cstr};
use bytes::{BufMut, BytesMut};

/// A simple-protocol Query.
pub fn query(out: &mut BytesMut, sql: &str) {
    let s = begin(out, b'Q');
    put_cstr(out, sql);
    finish(out, s);
}

pub fn terminate(out: &mut BytesMut) {
    let s = begin(out, b'X');
    finish(out, s);
}

pub fn sync(out: &mut BytesMut) {
    let s = begin(out, b'S');
    finish(out, s);
}

/// PasswordMessage carrying raw bytes (cleartext or md5 response, NUL-terminated by the caller).
pub fn password(out: &mut BytesMut, data: &[u8]) {
    let s = begin(out, b'p');
    out.extend_from_slice(data);
    finish(out, s);
}

/// Parse of the unnamed statement, parameter types left to the server.
pub fn parse_unnamed(out: &mut BytesMut, sql: &str) {
    let s = begin(out, b'P');
    put_cstr(out, "");
    put_cstr(out, sql);
    out.put_i16(0);
    finish(out, s);
}

/// Bind of the unnamed statement to the unnamed portal, text parameters and text results.
pub fn bind_text(out: &mut BytesMut, params: &[&str]) {
    let s = begin(out, b'B');
    put_cstr(out, "");
    put_cstr(out, "");
    out.put_i16(0);
    out.put_i16(params.len() as i16);
    for p in params {
        out.put_i32(p.len() as i32);
        out.extend_from_slice(p.as_bytes());
    }
    out.put_i16(0);
    finish(out, s);
}

/// Execute of the unnamed portal, all rows.
pub fn execute_unnamed(out: &mut BytesMut) {
    let s = begin(out, b'E');
    put_cstr(out, "");
    out.put_i32(0);
    finish(out, s);
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let s = begin(out, b'p');
    put_cstr(out, mechanism);
    out.put_i32(data.len() as i32);
    out.extend_from_slice(data);
    finish(out, s);
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    password(out, data);
}

/// Reads a PasswordMessage body as a NUL-terminated string (cleartext or md5 response).
pub fn parse_password(body: &[u8]) -> Option<&str> {
    let (s, rest) = read_cstr(body)?;
    rest.is_empty().then_some(s)
}

/// Reads a SASLInitialResponse body: mechanism and the client-first-message (absent if -1).
pub fn parse_sasl_initial(body: &[u8]) -> Option<(&str, Option<&[u8]>)> {
    let (mechanism, rest) = read_cstr(body)?;
    if rest.len() < 4 {
        return None;
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    match len {
        -1 if data.is_empty() => Some((mechanism, None)),
        n if n >= 0 && n as usize == data.len() => Some((mechanism, Some(data))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameDecoder;

    #[test]
    fn sasl_initial_round_trips() {
        let mut out = BytesMut::new();
        sasl_initial_response(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let f = FrameDecoder::new(1024).decode_frame(&mut out).unwrap().unwrap();
        assert_eq!(
            parse_sasl_initial(&f.body),
            Some(("SCRAM-SHA-256", Some(&b"n,,n=,r=abc"[..])))
        );
        assert_eq!(parse_sasl_initial(b"SCRAM\0\0\0\0\x09abc"), None);
        assert_eq!(parse_password(b"secret\0"), Some("secret"));
        assert_eq!(parse_password(b"secret\0x"), None);
    }
}
