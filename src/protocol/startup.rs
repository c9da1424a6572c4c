//! The untagged packets a client may send before the session starts: StartupMessage,
//! SSLRequest, GSSENCRequest and CancelRequest.

use bytes::{Buf, BytesMut};

/// PostgreSQL refuses startup packets whose body (after the length word) is longer than this
/// (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Protocol 3.x. `minor` > 0 gets a NegotiateProtocolVersion answer; `_pq_.` options
    /// (protocol extensions) are kept apart from ordinary parameters.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
        protocol_options: Vec<String>,
    },
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
}

impl StartupPacket {
    /// The (major, minor) protocol version PostgreSQL reads in a request's code: what it names
    /// when a second SSLRequest or GSSENCRequest arrives (it takes it for a startup packet).
    pub fn request_version(&self) -> (u16, u16) {
        let code = match self {
            StartupPacket::SslRequest => SSL_REQUEST_CODE,
            StartupPacket::GssEncRequest => GSSENC_REQUEST_CODE,
            StartupPacket::Cancel { .. } => CANCEL_REQUEST_CODE,
            StartupPacket::Startup { minor, .. } => 0x0003_0000 | u32::from(*minor),
        };
        ((code >> 16) as u16, (code & 0xffff) as u16)
    }
}

/// Why a startup packet is refused. Each carries the text PostgreSQL would log or send.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadLayout,
    #[error("invalid byte sequence in startup packet")]
    NotUtf8,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

/// Decodes startup-phase packets from a buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct StartupDecoder;

impl StartupDecoder {
    /// Splits one packet off `buf` once it is complete.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(8..=MAX_STARTUP_PACKET + 4).contains(&len) {
            return Err(StartupError::BadLength);
        }
        if buf.len() < len {
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        let mut packet = buf.split_to(len);
        packet.advance(4);
        let code = packet.get_u32();
        let body = &packet[..];
        match code {
            SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !body.is_empty() => Err(StartupError::BadLength),
            SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
            GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
            CANCEL_REQUEST_CODE => {
                if body.len() != 8 {
                    return Err(StartupError::BadLength);
                }
                let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                Ok(Some(StartupPacket::Cancel { pid, secret }))
            }
            _ => {
                let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
                if major != 3 {
                    return Err(StartupError::UnsupportedProtocol { major, minor });
                }
                let (params, protocol_options) = parse_params(body)?;
                if !params.iter().any(|(k, _)| k == "user") {
                    return Err(StartupError::NoUser);
                }
                Ok(Some(StartupPacket::Startup {
                    minor,
                    params,
                    protocol_options,
                }))
            }
        }
    }
}

type Params = (Vec<(String, String)>, Vec<String>);

/// Parses the `name\0value\0…\0` list of a StartupMessage.
fn parse_params(body: &[u8]) -> Result<Params, StartupError> {
    if body.last() != Some(&0) {
        return Err(StartupError::BadLayout);
    }
    let mut params = Vec::new();
    let mut protocol_options = Vec::new();
    let mut fields = body[..body.len() - 1].split(|&b| b == 0);
    loop {
        // Running out of fields before the empty name means the terminator is missing.
        let name = fields.next().ok_or(StartupError::BadLayout)?;
        if name.is_empty() {
            // The terminating empty name; nothing may follow it.
            if fields.next().is_some() {
                return Err(StartupError::BadLayout);
            }
            break;
        }
        let value = fields.next().ok_or(StartupError::BadLayout)?;
        let name = std::str::from_utf8(name).map_err(|_| StartupError::NotUtf8)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::NotUtf8)?;
        if name.starts_with("_pq_.") {
            protocol_options.push(name.to_string());
        } else {
            params.push((name.to_string(), value.to_string()));
        }
    }
    Ok((params, protocol_options))
}

/// Encodes a StartupMessage (protocol 3.0) with the given parameters.
pub fn encode_startup(params: &[(&str, &str)], out: &mut BytesMut) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&[0]);
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(&[0]);
    }
    out.extend_from_slice(&[0]);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The 8-byte SSLRequest.
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

/// Encodes a CancelRequest.
pub fn encode_cancel(pid: i32, secret: i32, out: &mut BytesMut) {
    out.extend_from_slice(&16u32.to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&secret.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn startup_message_round_trips() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "app"), ("database", "db")], &mut buf);
        let got = StartupDecoder::decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            StartupPacket::Startup {
                minor: 0,
                params: vec![("user".into(), "app".into()), ("database".into(), "db".into())],
                protocol_options: vec![],
            }
        );
    }

    #[test]
    fn special_requests() {
        let mut b = packet(SSL_REQUEST_CODE, b"");
        assert_eq!(
            StartupDecoder::decode(&mut b),
            Ok(Some(StartupPacket::SslRequest))
        );
        let mut b = packet(GSSENC_REQUEST_CODE, b"");
        assert_eq!(
            StartupDecoder::decode(&mut b),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        let mut b = BytesMut::new();
        encode_cancel(42, -7, &mut b);
        assert_eq!(
            StartupDecoder::decode(&mut b),
            Ok(Some(StartupPacket::Cancel { pid: 42, secret: -7 }))
        );
    }

    #[test]
    fn newer_minor_version_and_protocol_options() {
        let mut b = packet(0x0003_0002, b"user\0u\0_pq_.x\x001\0\0");
        match StartupDecoder::decode(&mut b).unwrap().unwrap() {
            StartupPacket::Startup {
                minor,
                protocol_options,
                ..
            } => {
                assert_eq!(minor, 2);
                assert_eq!(protocol_options, vec!["_pq_.x".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_packets() {
        let mut b = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLength));
        let mut b = BytesMut::from(&[0, 1, 0, 0][..]);
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLength));
        // PostgreSQL's limit is on the body: 10,000 bytes after the length word.
        let mut b = BytesMut::from(&10_004u32.to_be_bytes()[..]);
        assert_eq!(StartupDecoder::decode(&mut b), Ok(None));
        let mut b = BytesMut::from(&10_005u32.to_be_bytes()[..]);
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLength));
        let mut b = packet(0x0002_0000, b"user\0u\0\0");
        assert!(matches!(
            StartupDecoder::decode(&mut b),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        let mut b = packet(0x0003_0000, b"user\0u");
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLayout));
        let mut b = packet(0x0003_0000, b"user\0u\0");
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLayout));
        let mut b = packet(0x0003_0000, b"database\0d\0\0");
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::NoUser));
        let mut b = packet(0x0003_0000, b"user\0\xff\0\0");
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::NotUtf8));
        let mut b = packet(SSL_REQUEST_CODE, b"x");
        assert_eq!(StartupDecoder::decode(&mut b), Err(StartupError::BadLength));
    }

    #[test]
    fn waits_for_the_whole_packet() {
        let mut full = BytesMut::new();
        encode_startup(&[("user", "app")], &mut full);
        let mut b = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(StartupDecoder::decode(&mut b), Ok(None));
    }
}
