//! Header-only framing of tagged messages: a 1-byte tag, a 4-byte length, the body as `Bytes`.
//!
//! Only the header is examined; the body is split off the read buffer without copying.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One tagged protocol message. `body` excludes the tag and the length word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        5 + self.body.len()
    }

    /// Appends the frame in wire format.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        out.extend_from_slice(&[self.tag]);
        out.extend_from_slice(&((self.body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(u32),
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u32, limit: u32 },
}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Reads the header at the start of `buf`: `Ok(None)` until 5 bytes are there, then the tag and
/// the total wire length (tag + length word + body), checked against `limit` (body + 4).
#[inline]
pub fn peek_header(buf: &[u8], limit: u32) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    if len > limit {
        return Err(FrameError::TooLarge { size: len, limit });
    }
    Ok(Some((buf[0], len as usize + 1)))
}

/// True if `buf` holds whole frames and then the start of one more. A bad length word ends
/// the look (whoever reads the frames answers it).
pub fn ends_with_partial_frame(buf: &[u8], limit: u32) -> bool {
    let mut pos = 0;
    loop {
        match peek_header(&buf[pos..], limit) {
            Ok(Some((_, total))) if buf.len() - pos >= total => pos += total,
            Ok(Some(_)) => return true,
            Ok(None) => return pos < buf.len(),
            Err(_) => return false,
        }
    }
}

/// tokio-util decoder yielding whole frames; rejects any length field above `max_len`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_len: u32,
}

impl FrameDecoder {
    /// `max_len` bounds the length field (body + 4), so memory per message is bounded.
    pub fn new(max_len: u32) -> Self {
        FrameDecoder { max_len }
    }

    /// The largest length field accepted.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Splits one whole frame off `buf`, if one is there.
    #[inline]
    pub fn decode_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some((tag, total)) = peek_header(buf, self.max_len)? else {
            return Ok(None);
        };
        if buf.len() < total {
            // Reserve what this frame still needs, so one read can complete it.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(5);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
        }))
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Ok(self.decode_frame(src)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_cut_by_a_read_is_seen_behind_whole_ones() {
        use super::ends_with_partial_frame as partial;
        let sync = [b'S', 0, 0, 0, 4];
        let query = [b'Q', 0, 0, 0, 6, b'x', 0];
        let two = [&query[..], &sync[..]].concat();
        assert!(!partial(&[], 100));
        assert!(!partial(&two, 100));
        assert!(partial(&two[..two.len() - 1], 100), "body cut");
        assert!(partial(&two[..query.len() + 2], 100), "header cut");
        assert!(!partial(&[b'Q', 0, 0, 0, 1], 100), "bad length: not waited for");
    }

    use super::*;

    fn wire(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_whole_frames_and_waits_for_partial_ones() {
        let d = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&wire(b'Q', b"SELECT 1\0"));
        buf.extend_from_slice(&wire(b'S', b""));
        let partial = wire(b'X', b"abc");
        buf.extend_from_slice(&partial[..3]);

        let f = d.decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'Q', &b"SELECT 1\0"[..]));
        let f = d.decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, f.body.len()), (b'S', 0));
        assert_eq!(d.decode_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&partial[3..]);
        let f = d.decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'X', &b"abc"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(d.decode_frame(&mut buf), Err(FrameError::BadLength(3)));
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 101][..]);
        assert_eq!(
            d.decode_frame(&mut buf),
            Err(FrameError::TooLarge {
                size: 101,
                limit: 100
            })
        );
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(d.decode_frame(&mut buf).is_err());
    }

    #[test]
    fn write_to_round_trips() {
        let f = Frame {
            tag: b'd',
            body: Bytes::from_static(b"row data"),
        };
        let mut out = BytesMut::new();
        f.write_to(&mut out);
        assert_eq!(&out[..], &wire(b'd', b"row data")[..]);
        let back = FrameDecoder::new(1024).decode_frame(&mut out).unwrap().unwrap();
        assert_eq!(back, f);
    }
}
