//! The application's connection: socket, read buffer and write buffer, kept together so that a
//! read dropped by `select!` loses no bytes.

use crate::protocol::startup::StartupError;
use crate::protocol::{ErrorFields, Frame, FrameDecoder, FrameError, StartupDecoder, StartupPacket};
use crate::tls::{Stream, TlsInfo};
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read size once a client sends more than small requests; buffers are dropped while it idles.
const READ_CHUNK: usize = 8192;
/// First buffer of a client that becomes active: most requests and answers fit. A client that
/// idles between requests takes one from the thread's spares on every request (`buffers`).
pub(crate) const FIRST_BUFFER: usize = 1024;

/// Least room a read gets: a read much smaller than a request would split batches that
/// routing wants to see whole.
const MIN_READ: usize = 512;

/// Makes room in a read buffer before a read: a small first buffer; then, when less than
/// `MIN_READ` is left, the consumed front back (little buffered) or a full chunk (a large frame).
pub(crate) fn make_read_room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() == 0 {
        *buf = super::buffers::take();
    } else if buf.capacity() - buf.len() < MIN_READ {
        // `reserve` moves a small remainder to the front of its allocation when that suffices.
        buf.reserve(if buf.len() < MIN_READ { MIN_READ } else { chunk });
    }
}

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
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// One application connection.
pub struct ClientConn {
    pub(crate) stream: Stream,
    /// Bytes received and not yet handled.
    pub(crate) rbuf: BytesMut,
    /// Bytes to send, written out by `flush` or by the relay.
    pub(crate) wbuf: BytesMut,
    pub peer: SocketAddr,
    /// Set once a TLS handshake completed.
    /// Boxed: most clients have none, and it would size every session.
    pub tls: Option<Box<TlsInfo>>,
    pub(crate) decoder: FrameDecoder,
    /// The pid this client was given in BackendKeyData (set at welcome).
    pub(crate) key_pid: Option<i32>,
}

impl ClientConn {
    /// `peer` of a Unix-socket client is `0.0.0.0:<socket port>` (it has no address).
    pub fn new(stream: Stream, peer: SocketAddr, max_message_size: u32) -> Self {
        ClientConn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            peer,
            tls: None,
            decoder: FrameDecoder::new(max_message_size),
            key_pid: None,
        }
    }

    /// Reads more bytes into the read buffer; `Closed` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, ClientIoError> {
        make_read_room(&mut self.rbuf, READ_CHUNK);
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

    /// The first byte not handled yet, read into the buffer if need be; `Closed` at end of
    /// stream. Lets a caller judge a message by its tag before waiting for its length.
    pub async fn peek_buffered_byte(&mut self) -> Result<u8, ClientIoError> {
        loop {
            if let Some(&b) = self.rbuf.first() {
                return Ok(b);
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
        if !matches!(self.stream, Stream::Plain(_) | Stream::Unix(_)) {
            // rustls may hold decrypted bytes the socket no longer signals: read them.
            self.fill().await?;
            return Ok(());
        }
        if self.wbuf.is_empty() {
            // An idle client costs its socket and task only.
            super::buffers::give(std::mem::take(&mut self.rbuf));
            super::buffers::give(std::mem::take(&mut self.wbuf));
        }
        match &self.stream {
            Stream::Plain(tcp) => tcp.readable().await?,
            Stream::Unix(unix) => unix.readable().await?,
            _ => {}
        }
        Ok(())
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> Result<(), ClientIoError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all_buf(&mut self.wbuf).await?;
            // TLS may still hold records the socket did not take yet.
            self.stream.flush().await?;
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
        // Best effort: the client may already be gone. TLS ends with close_notify, so the client
        // reads the error rather than a truncated stream.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            self.flush().await?;
            if self.stream.is_tls() {
                self.stream.shutdown().await?;
            }
            Ok::<(), ClientIoError>(())
        })
        .await;
    }

    /// The next byte the client will send, left in the socket; `None` at end of stream.
    pub async fn peek_byte(&mut self) -> Result<Option<u8>, ClientIoError> {
        let Stream::Plain(tcp) = &self.stream else {
            return Ok(self.rbuf.first().copied());
        };
        if let Some(&b) = self.rbuf.first() {
            return Ok(Some(b));
        }
        let mut byte = [0u8; 1];
        Ok((tcp.peek(&mut byte).await? == 1).then_some(byte[0]))
    }

    /// Runs the server side of a TLS handshake on the socket and records what it learned.
    /// Nothing may be buffered: those bytes did not come through TLS.
    pub async fn start_tls(&mut self, tls: &crate::tls::ClientTls) -> Result<(), ClientIoError> {
        debug_assert!(self.rbuf.is_empty() && self.wbuf.is_empty());
        let Some(tcp) = self.stream.take_plain() else {
            return Err(ClientIoError::Handshake(std::io::Error::other(
                "TLS is already on",
            )));
        };
        let stream = tls.acceptor.accept(tcp).await.map_err(ClientIoError::Handshake)?;
        // Only a certificate rustls verified against the CA says who the client is.
        let peer_common_name = tls
            .mode
            .verifies_client()
            .then(|| stream.get_ref().1.peer_certificates()?.first())
            .flatten()
            .and_then(|cert| crate::tls::cert::common_name(cert));
        self.tls = Some(Box::new(TlsInfo {
            server_end_point: tls.server_end_point.clone(),
            peer_common_name,
        }));
        self.stream = Stream::Tls(Box::new(stream.into()));
        Ok(())
    }

    /// The ALPN protocol agreed in the TLS handshake.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.tls_state()?.alpn_protocol()
    }

    /// True when bytes were received but not handled yet.
    pub fn has_pending_input(&self) -> bool {
        !self.rbuf.is_empty()
    }
}

#[cfg(test)]
mod read_room_tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn reads_always_get_at_least_min_read_bytes_of_room() {
        let mut buf = BytesMut::new();
        make_read_room(&mut buf, READ_CHUNK);
        assert_eq!(buf.capacity(), FIRST_BUFFER, "a small first buffer");
        // Requests consumed from the front shrink the view; the room comes back.
        for _ in 0..20 {
            buf.extend_from_slice(&[b'x'; 300]);
            buf.advance(290);
            make_read_room(&mut buf, READ_CHUNK);
            assert!(buf.capacity() - buf.len() >= MIN_READ, "{}", buf.capacity());
        }
        assert!(
            buf.capacity() < READ_CHUNK,
            "small leftovers did not grow it to a chunk"
        );
        // A large frame in progress grows it by a chunk.
        buf.extend_from_slice(&vec![b'y'; 2000]);
        make_read_room(&mut buf, READ_CHUNK);
        assert!(buf.capacity() - buf.len() >= READ_CHUNK);
    }
}
