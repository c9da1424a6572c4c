//! ErrorResponse / NoticeResponse: building ours with PostgreSQL's SQLSTATEs, reading the backend's.

use super::frame::Frame;
use bytes::{BufMut, Bytes, BytesMut};

/// A five-character SQLSTATE code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl std::fmt::Debug for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

impl SqlState {
    /// A code from a literal; panics (at compile time in consts) unless it is 5 ASCII characters.
    pub const fn new(code: &str) -> SqlState {
        let b = code.as_bytes();
        assert!(b.len() == 5, "SQLSTATE codes have five characters");
        SqlState([b[0], b[1], b[2], b[3], b[4]])
    }

    /// A code received from a server; `None` unless it is 5 ASCII letters or digits.
    pub fn parse(code: &str) -> Option<SqlState> {
        let b = code.as_bytes();
        (b.len() == 5 && b.iter().all(u8::is_ascii_alphanumeric))
            .then(|| SqlState([b[0], b[1], b[2], b[3], b[4]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }

    pub const PROTOCOL_VIOLATION: SqlState = SqlState::new("08P01");
    pub const CONNECTION_FAILURE: SqlState = SqlState::new("08006");
    pub const CONNECTION_EXCEPTION: SqlState = SqlState::new("08000");
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState::new("57P03");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState::new("57P01");
    pub const QUERY_CANCELED: SqlState = SqlState::new("57014");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState::new("53300");
    pub const INVALID_PASSWORD: SqlState = SqlState::new("28P01");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState::new("28000");
    pub const INVALID_CATALOG_NAME: SqlState = SqlState::new("3D000");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState::new("0A000");
    pub const INTERNAL_ERROR: SqlState = SqlState::new("XX000");
    pub const IDLE_SESSION_TIMEOUT: SqlState = SqlState::new("57P05");
    pub const IDLE_IN_TRANSACTION_TIMEOUT: SqlState = SqlState::new("25P03");
}

/// ErrorResponse severity (the non-localized `V` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// The fields of an ErrorResponse we produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: Severity,
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    pub fn error(code: SqlState, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: Severity::Fatal,
            ..ErrorFields::error(code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Appends the ErrorResponse (or NoticeResponse for notices and warnings) in wire format.
    pub fn write_to(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => b'E',
            Severity::Notice | Severity::Warning => b'N',
        };
        let start = out.len();
        out.put_u8(tag);
        out.put_u32(0);
        let mut field = |code: u8, value: &str| {
            out.put_u8(code);
            // A NUL inside a field would end it early on the client side.
            out.extend(value.bytes().filter(|&b| b != 0));
            out.put_u8(0);
        };
        field(b'S', self.severity.as_str());
        field(b'V', self.severity.as_str());
        field(b'C', self.code.as_str());
        field(b'M', &self.message);
        if let Some(detail) = &self.detail {
            field(b'D', detail);
        }
        if let Some(hint) = &self.hint {
            field(b'H', hint);
        }
        out.put_u8(0);
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.message.len());
        self.write_to(&mut out);
        out.freeze()
    }
}

/// The fields of a backend's ErrorResponse or NoticeResponse that tidepool looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl BackendError {
    /// Reads the `V` (or `S`), `C` and `M` fields of an ErrorResponse/NoticeResponse body.
    pub fn parse(frame: &Frame) -> BackendError {
        let mut out = BackendError::default();
        for field in frame.body.split(|&b| b == 0) {
            let Some((&code, value)) = field.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match code {
                b'V' => out.severity = value,
                b'S' if out.severity.is_empty() => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                _ => {}
            }
        }
        out
    }

    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameDecoder;

    #[test]
    fn builds_and_parses_error_response() {
        let mut out = BytesMut::new();
        ErrorFields::fatal(
            SqlState::INVALID_PASSWORD,
            "password authentication failed for user \"a\"",
        )
        .with_detail("d\0x")
        .write_to(&mut out);
        let frame = FrameDecoder::new(1 << 20)
            .decode_frame(&mut out)
            .unwrap()
            .unwrap();
        assert_eq!(frame.tag, b'E');
        let parsed = BackendError::parse(&frame);
        assert_eq!(parsed.severity, "FATAL");
        assert_eq!(parsed.code, "28P01");
        assert_eq!(parsed.message, "password authentication failed for user \"a\"");
        assert!(parsed.is_fatal());
        assert!(frame.body.windows(4).any(|w| w == b"Ddx\0"));
    }
}
