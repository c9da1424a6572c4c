//! A logged-in PostgreSQL connection and what tidepool knows about its state.

use crate::protocol::{backend_msg, FrameDecoder, FrameError, TransactionStatus};
use crate::protocol::{tag, Frame};
use crate::tls::Stream;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::BackendError;

/// Backend messages may legitimately be huge (a 1 GB field); only our own queries read whole
/// frames, so this is a sanity bound, not a memory budget.
const BACKEND_FRAME_LIMIT: u32 = 1 << 30;

/// The real cancel key PostgreSQL gave this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// Where a backend connection is in its life. Changed only through [`BackendConn::set_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Between requests; the last ReadyForQuery carried this status.
    Ready(TransactionStatus),
    /// A request was sent and its ReadyForQuery has not arrived yet.
    Busy,
    /// The connection failed or its protocol state is unknown: it must be closed, not reused.
    Broken,
}

/// One connection to PostgreSQL.
pub struct BackendConn {
    pub(crate) stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub(crate) rbuf: BytesMut,
    /// Bytes to send to the server (the relay's client-to-server direction).
    pub(crate) wbuf: BytesMut,
    /// Address of the node, for logs and errors.
    pub addr: Arc<str>,
    /// Real pid and secret, for cancel requests.
    pub key: BackendKey,
    /// Latest value of every parameter the server reported (ParameterStatus).
    pub reported: Vec<(String, String)>,
    /// Client settings applied on top of the startup parameters (lower-case name, raw value);
    /// lets the next client apply only the difference.
    pub applied: Vec<(String, String)>,
    /// Identifies the startup parameters this connection was opened with (session mode matches
    /// clients to connections opened with exactly their parameters).
    pub startup_signature: u64,
    /// Statements tidepool prepared here under its own names (transaction mode).
    pub statements: crate::client::features::statements::BackendStatements,
    pub(crate) state: BackendState,
    pub created: Instant,
    pub last_used: Instant,
    /// Unique within the process, for SHOW SERVERS and logs.
    pub id: u64,
    /// Its entry in the pool's server registry (SHOW SERVERS); leaves with the connection.
    pub ticket: Option<crate::pool::ServerTicket>,
    /// Who uses it, for the notification listener (registered at the first checkout).
    pub users: Option<Arc<super::Users>>,
}

impl std::fmt::Debug for BackendConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConn")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("pid", &self.key.pid)
            .field("state", &self.state)
            .finish()
    }
}

/// Bytes of the read buffer each backend connection allocates when opened (SHOW MEM).
pub const READ_BUFFER: usize = 8192;

impl BackendConn {
    pub(crate) fn new(stream: Stream, addr: Arc<str>, id: u64, startup_signature: u64) -> Self {
        let now = Instant::now();
        BackendConn {
            stream,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            wbuf: BytesMut::new(),
            addr,
            key: BackendKey { pid: 0, secret: 0 },
            reported: Vec::new(),
            applied: Vec::new(),
            startup_signature,
            statements: Default::default(),
            state: BackendState::Busy,
            created: now,
            last_used: now,
            id,
            ticket: None,
            users: None,
        }
    }

    pub fn state(&self) -> BackendState {
        self.state
    }

    /// The one place the state changes; a broken connection never becomes usable again.
    pub fn set_state(&mut self, next: BackendState) {
        if self.state != BackendState::Broken {
            self.state = next;
        }
    }

    /// True when the connection may be handed to another client as is.
    pub fn is_reusable(&self) -> bool {
        self.state == BackendState::Ready(TransactionStatus::Idle)
    }

    /// True when the server sent anything (usually a FATAL, then EOF) or closed the socket while
    /// the connection sat idle between requests; such a connection must not be reused. Costs no
    /// system call unless the socket was reported readable since the last short read.
    pub fn spoke_while_idle(&mut self) -> bool {
        if self.stream.has_input_or_eof() {
            self.set_state(BackendState::Broken);
            true
        } else {
            false
        }
    }

    /// Records a ParameterStatus the server sent.
    pub fn record_parameter(&mut self, body: &[u8]) {
        record_parameter(&mut self.reported, body);
    }

    /// The reported value of a parameter.
    pub fn reported(&self, name: &str) -> Option<&str> {
        self.reported
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn io_error(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Reads one whole frame (used only for tidepool's own exchanges, never for relaying).
    pub(crate) async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        let decoder = FrameDecoder::new(BACKEND_FRAME_LIMIT);
        loop {
            match decoder.decode_frame(&mut self.rbuf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(source) => {
                    self.state = BackendState::Broken;
                    return Err(self.protocol_error(source));
                }
            }
            self.rbuf.reserve(4096);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    self.state = BackendState::Broken;
                    return Err(BackendError::Closed {
                        addr: self.addr.to_string(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.state = BackendState::Broken;
                    return Err(self.io_error(e));
                }
            }
        }
    }

    pub(crate) fn protocol_error(&self, source: FrameError) -> BackendError {
        BackendError::Protocol {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Writes all of `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let written = match self.stream.write_all(bytes).await {
            Ok(()) => self.stream.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.state = BackendState::Broken;
            return Err(self.io_error(e));
        }
        Ok(())
    }

    /// Says goodbye politely; errors are irrelevant as the connection is going away.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::with_capacity(5);
        crate::protocol::frontend_msg::terminate(&mut out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.write_all(&out).await;
            // Shutting down sends TLS's close_notify too.
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// True when the frame is a ReadyForQuery; updates the state from it.
    pub(crate) fn observe(&mut self, frame: &Frame) -> bool {
        match frame.tag {
            tag::READY_FOR_QUERY => {
                let status = frame.body.first().and_then(|&b| TransactionStatus::from_byte(b));
                match status {
                    Some(s) => self.set_state(BackendState::Ready(s)),
                    None => self.set_state(BackendState::Broken),
                }
                true
            }
            tag::PARAMETER_STATUS => {
                self.record_parameter(&frame.body);
                false
            }
            _ => false,
        }
    }
}

/// Updates a reported-parameter list from a ParameterStatus body; returns the (name, value) set.
pub(crate) fn record_parameter<'a>(
    reported: &mut Vec<(String, String)>,
    body: &'a [u8],
) -> Option<(&'a str, &'a str)> {
    let (name, value) = backend_msg::parse_parameter_status(body)?;
    match reported.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => {
            if entry.1 != value {
                entry.1 = value.to_string();
            }
        }
        None => reported.push((name.to_string(), value.to_string())),
    }
    Some((name, value))
}
