//! Parsing the two SCRAM client messages (RFC 5802 §7) into borrowed views; policy lives in `scram.rs`.

use super::{Malformed, ScramError, Unsupported};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// The `gs2-cbind-flag` that opens a client-first-message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gs2Flag<'a> {
    /// `n`: the client does not support channel binding.
    Unsupported,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client binds to the channel with this binding type.
    Bound(&'a [u8]),
}

/// A parsed client-first-message.
#[derive(Debug)]
pub(super) struct ClientFirst<'a> {
    pub flag: Gs2Flag<'a>,
    /// The gs2-header verbatim (`n,,`, …): the client repeats it, base64'd, in `c=`.
    pub gs2_header: &'a [u8],
    /// client-first-message-bare verbatim: the first part of AuthMessage.
    pub bare: &'a [u8],
    /// The client's nonce; already checked to be printable.
    pub nonce: &'a [u8],
}

/// A parsed client-final-message.
#[derive(Debug)]
pub(super) struct ClientFinal<'a> {
    /// `c=`, decoded: gs2-header followed by any channel-binding data.
    pub channel_binding: Vec<u8>,
    /// `r=`: must be the client nonce followed by ours.
    pub nonce: &'a [u8],
    /// Everything before `,p=`: the last part of AuthMessage.
    pub without_proof: &'a [u8],
    pub proof: [u8; 32],
}

/// Parses `gs2-header client-first-message-bare`.
pub(super) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    if msg.is_empty() {
        return Err(Malformed::Empty.into());
    }
    let mut cur = Cursor { buf: msg, pos: 0 };
    let flag = match cur.next() {
        Some(b'n') => Gs2Flag::Unsupported,
        Some(b'y') => Gs2Flag::ClientOnly,
        Some(b'p') if cur.eat(b'=') => match cur.value() {
            [] => return Err(Malformed::Gs2Flag.into()),
            name => Gs2Flag::Bound(name),
        },
        _ => return Err(Malformed::Gs2Flag.into()),
    };
    cur.comma()?;
    // PostgreSQL refuses an authorization identity rather than ignoring it.
    if cur.peek() == Some(b'a') {
        return Err(Unsupported::Authzid.into());
    }
    cur.comma()?;
    let gs2_header = cur.consumed();
    let bare_start = cur.pos;

    if cur.peek() == Some(b'm') {
        return Err(Unsupported::MandatoryExtension.into());
    }
    // The user name is ignored, as in PostgreSQL: the startup packet's `user` is authoritative,
    // and libpq sends `n=` empty.
    cur.attr(b'n')?;
    cur.comma()?;
    let nonce = cur.attr(b'r')?;
    if nonce.is_empty() || !nonce.iter().all(|&b| is_nonce_char(b)) {
        return Err(Malformed::Nonce.into());
    }
    while !cur.at_end() {
        cur.comma()?;
        cur.extension()?;
    }
    Ok(ClientFirst {
        flag,
        gs2_header,
        bare: &msg[bare_start..],
        nonce,
    })
}

/// Parses `c=…,r=…[,ext…],p=…`.
pub(super) fn parse_client_final(msg: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    if msg.is_empty() {
        return Err(Malformed::Empty.into());
    }
    let mut cur = Cursor { buf: msg, pos: 0 };
    let channel_binding = BASE64
        .decode(cur.attr(b'c')?)
        .map_err(|_| Malformed::Base64('c'))?;
    cur.comma()?;
    let nonce = cur.attr(b'r')?;
    let without_proof = loop {
        let end = cur.pos;
        cur.comma()?;
        if cur.rest().starts_with(b"p=") {
            break &msg[..end];
        }
        cur.extension()?;
    };
    let proof = cur.attr(b'p')?;
    if !cur.at_end() {
        return Err(Malformed::Trailing.into());
    }
    let proof = BASE64.decode(proof).map_err(|_| Malformed::Base64('p'))?;
    let proof = proof.try_into().map_err(|_| Malformed::ProofLength)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// RFC 5802 `printable`: visible ASCII except ','.
pub(super) fn is_nonce_char(byte: u8) -> bool {
    matches!(byte, 0x21..=0x2b | 0x2d..=0x7e)
}

/// A read position in a message made of `,`-separated `x=value` attributes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn comma(&mut self) -> Result<(), Malformed> {
        if self.eat(b',') {
            Ok(())
        } else {
            Err(Malformed::Separator)
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes up to the next ',' or the end.
    fn value(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// The value of attribute `name`, which must come next.
    fn attr(&mut self, name: u8) -> Result<&'a [u8], Malformed> {
        if !self.rest().starts_with(&[name, b'=']) {
            return Err(Malformed::Attribute(char::from(name)));
        }
        self.pos += 2;
        Ok(self.value())
    }

    /// An optional extension attribute (`<letter>=<value>`), which we skip as PostgreSQL does.
    fn extension(&mut self) -> Result<(), Malformed> {
        match self.rest() {
            [name, b'=', ..] if name.is_ascii_alphabetic() => {
                self.pos += 2;
                self.value();
                Ok(())
            }
            _ => Err(Malformed::Extension),
        }
    }
}
