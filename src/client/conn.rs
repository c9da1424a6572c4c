//! The application's connection: socket, read buffer and write buffer, kept together so that a
//! read dropped by `select!` loses no bytes.

use crate::protocol::startup::StartupError;
use crate::protocol::{ErrorFields, Frame, FrameDecoder, FrameError, StartupDecoder, StartupPacket};
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read size when a client becomes active; buffers are dropped again while it idles.
const READ_CHUNK: usize = 8192;

/// Why reading from or writing to a client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientIoError {
    #[error("client closed the connection")]
    Closed,
    #[error("client I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// What the TLS layer learned about a client connection (`ClientConn::tls`, `None` on plain TCP).
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `tls-server-end-point` channel-binding data (RFC 5929): the hash of our certificate.
    pub server_end_point: Vec<u8>,
    /// Common name of the client's verified certificate, when it sent one.
    pub peer_common_name: Option<String>,
}

/// One application connection.
pub struct ClientConn {
    pub(crate) stream: TcpStream,
    /// Bytes received and not yet handled.
    pub(crate) rbuf: BytesMut,
    /// Bytes to send, written out by `flush` or by the relay.
    pub(crate) wbuf: BytesMut,
    pub peer: SocketAddr,
    /// Set once a TLS handshake completed.
    pub tls: Option<TlsInfo>,
    pub(crate) decoder: FrameDecoder,
}

impl ClientConn {
    pub fn new(stream: TcpStream, peer: SocketAddr, max_message_size: u32) -> Self {
        ClientConn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            peer,
            tls: None,
            decoder: FrameDecoder::new(max_message_size),
        }
    }

    /// Reads more bytes into the read buffer; `Closed` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, ClientIoError> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ClientIoError::Closed),
            n => Ok(n),
        }
    }

    /// Reads one startup-phase packet.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, ClientIoError> {
        loop {
            if let Some(packet) = StartupDecoder::decode(&mut self.rbuf)? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// Reads one whole tagged message.
    pub async fn read_frame(&mut self) -> Result<Frame, ClientIoError> {
        loop {
            if let Some(frame) = self.decoder.decode_frame(&mut self.rbuf)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Waits until the client sends something, holding no buffer memory meanwhile.
    pub async fn wait_readable(&mut self) -> Result<(), ClientIoError> {
        if !self.rbuf.is_empty() {
            return Ok(());
        }
        if self.wbuf.is_empty() {
            // An idle client costs its socket and task only.
            self.rbuf = BytesMut::new();
            self.wbuf = BytesMut::new();
        }
        self.stream.readable().await?;
        Ok(())
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> Result<(), ClientIoError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all_buf(&mut self.wbuf).await?;
        }
        Ok(())
    }

    /// Queues an ErrorResponse.
    pub fn queue_error(&mut self, error: &ErrorFields) {
        error.write_to(&mut self.wbuf);
    }

    /// Sends a FATAL error and flushes; the caller then closes the connection.
    pub async fn send_fatal(&mut self, error: ErrorFields) {
        self.queue_error(&error);
        // Best effort: the client may already be gone.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.flush()).await;
    }

    /// True when bytes were received but not handled yet.
    pub fn has_pending_input(&self) -> bool {
        !self.rbuf.is_empty()
    }
}
