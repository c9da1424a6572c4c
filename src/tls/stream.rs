//! A socket that is plain TCP, TLS (either side) or a Unix-domain socket (clients only), so
//! client and backend connections keep one type and the relay one code path.
//!
//! Plain TCP costs one extra match per call. With TLS, rustls may keep encrypted bytes after
//! `poll_write` returned (the socket was full): callers that stop writing must `poll_flush`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Plain TCP, TLS, a Unix-domain socket, or nothing while a handshake owns the socket.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A client on `unix_socket_dir` (never TLS, as in PostgreSQL).
    Unix(UnixStream),
    /// The socket was handed to a TLS handshake that failed; every operation errors.
    Detached,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Plain",
            Stream::Tls(_) => "Tls",
            Stream::Unix(_) => "Unix",
            Stream::Detached => "Detached",
        })
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during the TLS handshake",
    )
}

impl Stream {
    /// Our end of the connection (SHOW CLIENTS' local address); an error on a Unix socket.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(tcp) => tcp.local_addr(),
            Stream::Tls(tls) => tls.get_ref().0.local_addr(),
            Stream::Unix(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "unix socket")),
            Stream::Detached => Err(detached()),
        }
    }

    /// The TCP socket underneath (plain or TLS), for socket options.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(tls.get_ref().0),
            _ => None,
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// True when the peer sent something or closed the connection, without consuming anything
    /// (TLS records stay for rustls). Costs a system call only when the socket was reported
    /// readable since the last short read.
    pub fn has_input_or_eof(&self) -> bool {
        // `try_io` reads the reactor's readiness without registering a waker: when nothing was
        // signalled since the last short read (the usual case) there is no syscall at all.
        use tokio::io::Interest;
        let peeked = match self {
            Stream::Plain(tcp) => tcp.try_io(Interest::READABLE, || peek_one(tcp)),
            Stream::Tls(tls) => {
                let tcp = tls.get_ref().0;
                tcp.try_io(Interest::READABLE, || peek_one(tcp))
            }
            Stream::Unix(unix) => unix.try_io(Interest::READABLE, || peek_one(unix)),
            Stream::Detached => return true,
        };
        // Bytes or end of stream, or an error: broken all the same.
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Takes the TCP socket out for a handshake, leaving `Detached`; `None` if not plain TCP.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The rustls state after a handshake (certificates, ALPN).
    pub fn tls_state(&self) -> Option<&rustls::CommonState> {
        match self {
            Stream::Tls(tls) => Some(match &**tls {
                tokio_rustls::TlsStream::Client(c) => c.get_ref().1,
                tokio_rustls::TlsStream::Server(s) => s.get_ref().1,
            }),
            _ => None,
        }
    }
}

/// Peeks at one byte of `socket` without consuming it.
fn peek_one(socket: &impl std::os::fd::AsFd) -> io::Result<usize> {
    socket2::SockRef::from(socket).peek(&mut [std::mem::MaybeUninit::uninit()])
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            Stream::Unix(unix) => Pin::new(unix).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            Stream::Unix(unix) => Pin::new(unix).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) | Stream::Unix(_) => Poll::Ready(Ok(())),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            Stream::Unix(unix) => Pin::new(unix).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}
