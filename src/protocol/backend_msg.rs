//! Messages a server sends: builders (tidepool answers clients itself during startup, auth and
//! errors) and readers of the few backend messages tidepool inspects.

use bytes::{BufMut, BytesMut};

/// ParseComplete: a whole message (its body is empty).
pub const PARSE_COMPLETE: [u8; 5] = [b'1', 0, 0, 0, 4];
/// CloseComplete: a whole message (its body is empty).
pub const CLOSE_COMPLETE: [u8; 5] = [b'3', 0, 0, 0, 4];

/// Starts a tagged message in `out`; returns the offset to pass to [`finish`].
#[inline]
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    start
}

/// Writes the length word of the message begun at `start`.
#[inline]
pub fn finish(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
#[inline]
pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.put_u8(0);
}

pub fn authentication_ok(out: &mut BytesMut) {
    let s = begin(out, b'R');
    out.put_i32(0);
    finish(out, s);
}

pub fn authentication_cleartext(out: &mut BytesMut) {
    let s = begin(out, b'R');
    out.put_i32(3);
    finish(out, s);
}

pub fn authentication_md5(out: &mut BytesMut, salt: [u8; 4]) {
    let s = begin(out, b'R');
    out.put_i32(5);
    out.extend_from_slice(&salt);
    finish(out, s);
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    let s = begin(out, b'R');
    out.put_i32(10);
    for m in mechanisms {
        put_cstr(out, m);
    }
    out.put_u8(0);
    finish(out, s);
}

pub fn authentication_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    let s = begin(out, b'R');
    out.put_i32(11);
    out.extend_from_slice(data);
    finish(out, s);
}

pub fn authentication_sasl_final(out: &mut BytesMut, data: &[u8]) {
    let s = begin(out, b'R');
    out.put_i32(12);
    out.extend_from_slice(data);
    finish(out, s);
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let s = begin(out, b'S');
    put_cstr(out, name);
    put_cstr(out, value);
    finish(out, s);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    let s = begin(out, b'K');
    out.put_i32(pid);
    out.put_i32(secret);
    finish(out, s);
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let s = begin(out, b'Z');
    out.put_u8(status);
    finish(out, s);
}

/// NegotiateProtocolVersion: the newest minor version we support and the options we ignored.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: u16, unsupported: &[String]) {
    let s = begin(out, b'v');
    out.put_i32(0x0003_0000 | minor as i32);
    out.put_i32(unsupported.len() as i32);
    for name in unsupported {
        put_cstr(out, name);
    }
    finish(out, s);
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    let s = begin(out, b'C');
    put_cstr(out, tag);
    finish(out, s);
}

/// RowDescription for text columns of the given type OIDs (used by the admin console).
pub fn row_description(out: &mut BytesMut, columns: &[(&str, u32)]) {
    let s = begin(out, b'T');
    out.put_i16(columns.len() as i16);
    for (name, oid) in columns {
        put_cstr(out, name);
        out.put_i32(0); // table oid
        out.put_i16(0); // column number
        out.put_u32(*oid);
        out.put_i16(-1); // type size: unknown is fine for text format
        out.put_i32(-1); // type modifier
        out.put_i16(0); // text format
    }
    finish(out, s);
}

/// DataRow of text values; `None` is SQL NULL.
pub fn data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    let s = begin(out, b'D');
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.extend_from_slice(v.as_bytes());
            }
            None => out.put_i32(-1),
        }
    }
    finish(out, s);
}

/// Reads a NUL-terminated string at the start of `body`; returns it and the rest.
pub fn read_cstr(body: &[u8]) -> Option<(&str, &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&body[..end]).ok()?;
    Some((s, &body[end + 1..]))
}

/// Name and value of a ParameterStatus body.
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((name, value))
}

/// pid and secret of a BackendKeyData body.
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    if body.len() != 8 {
        return None;
    }
    Some((
        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameDecoder;

    #[test]
    fn parameter_status_round_trips() {
        let mut out = BytesMut::new();
        parameter_status(&mut out, "TimeZone", "UTC");
        backend_key_data(&mut out, 7, -9);
        let d = FrameDecoder::new(1024);
        let f = d.decode_frame(&mut out).unwrap().unwrap();
        assert_eq!(parse_parameter_status(&f.body), Some(("TimeZone", "UTC")));
        let f = d.decode_frame(&mut out).unwrap().unwrap();
        assert_eq!(parse_backend_key_data(&f.body), Some((7, -9)));
        assert_eq!(parse_parameter_status(b"abc"), None);
    }
}
