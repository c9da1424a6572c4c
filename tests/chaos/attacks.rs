//! Hostile clients: slowloris logins that trickle a byte a second, and a storm of simultaneous
//! connection attempts.

use crate::common::wire::startup_packet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How one slowloris client ended.
#[derive(Debug)]
pub enum Slowloris {
    /// tidepool closed it after this many bytes of the startup packet.
    ClosedBy {
        bytes_sent: usize,
    },
    /// It sent its whole packet and was still open (the login timeout never fired).
    Completed,
    ConnectFailed(#[expect(dead_code, reason = "shown by Debug in assertion messages")] String),
    /// Still open when the test stopped waiting.
    StillOpen,
}

/// Opens `clients` connections that each send a startup packet one byte per `pace`, stopping
/// when tidepool closes them; gives up after `limit`.
pub fn slowloris(addr: SocketAddr, clients: usize, pace: Duration, limit: Duration) -> JoinSet<Slowloris> {
    let mut set = JoinSet::new();
    for _ in 0..clients {
        set.spawn(async move {
            tokio::time::timeout(limit, trickle(addr, pace))
                .await
                .unwrap_or(Slowloris::StillOpen)
        });
    }
    set
}

async fn trickle(addr: SocketAddr, pace: Duration) -> Slowloris {
    let packet = startup_packet(&[("user", "app"), ("database", "app")]);
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Slowloris::ConnectFailed(e.to_string()),
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut sent = 0;
    let mut buf = [0u8; 256];
    loop {
        if sent == packet.len() {
            return Slowloris::Completed;
        }
        if wr.write_all(&packet[sent..sent + 1]).await.is_err() {
            return Slowloris::ClosedBy { bytes_sent: sent };
        }
        sent += 1;
        // Anything from tidepool before the packet is complete (an error, EOF) means it gave up
        // on us.
        if let Ok(read) = tokio::time::timeout(pace, rd.read(&mut buf)).await {
            let _ = read;
            return Slowloris::ClosedBy { bytes_sent: sent };
        }
    }
}

/// What a storm of connection attempts met.
#[derive(Debug, Default)]
pub struct StormOutcome {
    /// Connected, sent a startup packet and got an authentication request.
    pub answered: usize,
    /// Errors by kind, with a count.
    pub failures: std::collections::BTreeMap<String, usize>,
}

/// `attempts` connections at once, each: TCP connect, startup packet, read the authentication
/// request (`R`), drop. Every step is bounded by `limit`.
pub async fn storm(addr: SocketAddr, attempts: usize, limit: Duration) -> StormOutcome {
    let packet: &'static [u8] = Vec::leak(startup_packet(&[("user", "app"), ("database", "app")]));
    let mut set = JoinSet::new();
    for _ in 0..attempts {
        set.spawn(async move { tokio::time::timeout(limit, knock(addr, packet)).await });
    }
    let mut outcome = StormOutcome::default();
    while let Some(done) = set.join_next().await {
        match done.expect("a storm task does not panic") {
            Ok(Ok(())) => outcome.answered += 1,
            Ok(Err(kind)) => *outcome.failures.entry(kind).or_default() += 1,
            Err(_) => *outcome.failures.entry("timed out".into()).or_default() += 1,
        }
    }
    outcome
}

async fn knock(addr: SocketAddr, packet: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    stream
        .write_all(packet)
        .await
        .map_err(|e| format!("write: {:?}", e.kind()))?;
    let mut first = [0u8; 1];
    match stream.read(&mut first).await {
        Ok(1) if first[0] == b'R' => Ok(()),
        Ok(1) => Err(format!("answered with message {:?}", first[0] as char)),
        Ok(_) => Err("closed without answering".into()),
        Err(e) => Err(format!("read: {:?}", e.kind())),
    }
}
