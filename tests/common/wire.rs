//! A raw protocol client for tests that need exact control of the bytes: pipelining, bad input,
//! partial messages. Blocking std I/O with timeouts; no tidepool code is used to build frames
//! for the requests, so encoder bugs cannot cancel out decoder bugs.
#![allow(dead_code)]

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One backend message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The `C` (SQLSTATE) field of an ErrorResponse/NoticeResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// The `M` (message) field of an ErrorResponse/NoticeResponse.
    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    /// The `V` (severity) field.
    pub fn severity(&self) -> Option<String> {
        self.field(b'V')
    }

    pub fn field(&self, code: u8) -> Option<String> {
        self.body
            .split(|&b| b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
    }

    /// First column of a DataRow as text.
    pub fn first_value(&self) -> Option<String> {
        if self.tag != b'D' {
            return None;
        }
        let len = i32::from_be_bytes(self.body[2..6].try_into().ok()?);
        (len >= 0).then(|| String::from_utf8_lossy(&self.body[6..6 + len as usize]).into_owned())
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

/// Parse of an unnamed statement with no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &body)
}

/// Bind of statement `stmt` to the unnamed portal, no parameters, text results.
pub fn bind(stmt: &str) -> Vec<u8> {
    let mut body = vec![0u8]; // unnamed portal
    body.extend_from_slice(stmt.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
    body.extend_from_slice(&0i16.to_be_bytes()); // parameters
    body.extend_from_slice(&0i16.to_be_bytes()); // result formats
    frame(b'B', &body)
}

pub fn execute() -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &body)
}

pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

impl RawClient {
    /// Runs one simple query and returns the first value of its first row.
    pub fn value(&mut self, sql: &str) -> String {
        self.send(&query(sql));
        let msgs = self.until_ready();
        msgs.iter()
            .find_map(Msg::first_value)
            .unwrap_or_else(|| panic!("{sql}: {msgs:?}"))
    }

    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Next message, or `None` at end of stream.
    pub fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return Some(Msg { tag, body });
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads a single raw byte (the answer to SSLRequest).
    pub fn recv_byte(&mut self) -> Option<u8> {
        if !self.buf.is_empty() {
            return Some(self.buf.remove(0));
        }
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    /// Messages up to and including the next ReadyForQuery (or end of stream).
    pub fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv() {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Logs in with SCRAM-SHA-256 (or whatever simple method is asked) and reads to ReadyForQuery.
    pub fn login(addr: SocketAddr, user: &str, password: &str, db: &str) -> (RawClient, Vec<Msg>) {
        let mut c = RawClient::connect(addr);
        c.send(&startup_packet(&[("user", user), ("database", db)]));
        finish_login(&mut c, user, password)
    }
}

/// Answers authentication after a StartupMessage was sent; returns the welcome messages.
pub fn finish_login(c: &mut RawClient, user: &str, password: &str) -> (RawClient, Vec<Msg>) {
    match authenticate(c, user, password) {
        Ok(()) => {}
        Err(m) => panic!("login failed: {:?}", m.message()),
    }
    let welcome = c.until_ready();
    let stream = c.stream.try_clone().unwrap();
    let buf = std::mem::take(&mut c.buf);
    (RawClient { stream, buf }, welcome)
}

/// Answers authentication and expects an ErrorResponse (during or right after it).
pub fn finish_login_expecting_error(c: &mut RawClient, user: &str, password: &str) -> Msg {
    if let Err(m) = authenticate(c, user, password) {
        return m;
    }
    let welcome = c.until_ready();
    welcome
        .into_iter()
        .find(|m| m.tag == b'E')
        .expect("an ErrorResponse after authentication")
}

/// Runs the authentication exchange; `Err` carries an ErrorResponse received instead.
fn authenticate(c: &mut RawClient, user: &str, password: &str) -> Result<(), Msg> {
    {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = c.recv().expect("login: connection closed");
            match m.tag {
                b'R' => {
                    let code = i32::from_be_bytes(m.body[..4].try_into().unwrap());
                    match code {
                        0 => break,
                        10 => {
                            let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                            let mut body = b"SCRAM-SHA-256\0".to_vec();
                            body.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                            body.extend_from_slice(s.message());
                            c.send(&frame(b'p', &body));
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().unwrap();
                            s.update(&m.body[4..]).unwrap();
                            let msg = s.message().to_vec();
                            c.send(&frame(b'p', &msg));
                        }
                        12 => scram.as_mut().unwrap().finish(&m.body[4..]).unwrap(),
                        3 => {
                            let mut body = password.as_bytes().to_vec();
                            body.push(0);
                            c.send(&frame(b'p', &body));
                        }
                        5 => {
                            let salt: [u8; 4] = m.body[4..8].try_into().unwrap();
                            let h = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password.as_bytes(),
                                salt,
                            );
                            let mut body = h.into_bytes();
                            body.push(0);
                            c.send(&frame(b'p', &body));
                        }
                        other => panic!("unexpected auth request {other}"),
                    }
                }
                b'E' => return Err(m),
                other => panic!("unexpected message {:?} during auth", other as char),
            }
        }
    }
    Ok(())
}
