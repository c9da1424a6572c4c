//! The load that runs through tidepool during every fault: writers that remember each INSERT
//! PostgreSQL acknowledged, and readers counting a replicated table. Every error is recorded
//! with the fault that was current when it happened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bound on any one statement or login, so a stuck proxy fails the test instead of hanging it.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two reads of one reader (writers are paced by synchronous commit).
const READ_PAUSE: Duration = Duration::from_millis(20);

/// An error a worker saw.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The fault current when the error happened (0: none yet).
    pub fault: usize,
    /// "writer 2", "reader 0".
    pub who: String,
    pub message: String,
}

/// What the orchestrator and the workers share.
pub struct Board {
    /// Number of the fault being injected (or last injected); 0 before the first.
    pub fault: AtomicUsize,
    stop: AtomicBool,
    failures: Mutex<Vec<Failure>>,
    /// Successful statements per writer, then per reader.
    pub writer_ok: Vec<AtomicU64>,
    pub reader_ok: Vec<AtomicU64>,
    /// Per fault, the longest any writer went between two acknowledged INSERTs (counted for the
    /// fault current when the gap ended): the write outage clients saw.
    write_gaps: Mutex<std::collections::BTreeMap<usize, Duration>>,
}

impl Board {
    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }

    fn fail(&self, who: &str, message: String) {
        let fault = self.fault.load(Ordering::SeqCst);
        eprintln!("[fault {fault}] {who}: {message}");
        self.failures.lock().unwrap().push(Failure {
            fault,
            who: who.to_string(),
            message,
        });
    }

    pub fn write_gaps(&self) -> std::collections::BTreeMap<usize, Duration> {
        self.write_gaps.lock().unwrap().clone()
    }

    fn record_gap(&self, gap: Duration) {
        let fault = self.fault.load(Ordering::SeqCst);
        let mut gaps = self.write_gaps.lock().unwrap();
        let longest = gaps.entry(fault).or_default();
        *longest = (*longest).max(gap);
    }

    fn ok_counts(&self) -> Vec<u64> {
        self.writer_ok
            .iter()
            .chain(&self.reader_ok)
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }
}

/// The running workers.
pub struct Workload {
    pub board: Arc<Board>,
    writers: Vec<JoinHandle<Vec<i64>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Where the workers connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: &'static str,
    pub password: &'static str,
    pub db: &'static str,
}

impl Target {
    async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let login = tokio::time::timeout(
            OP_TIMEOUT,
            crate::common::try_connect(self.addr, self.user, self.password, self.db),
        );
        match login.await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("login: {}", describe(&e))),
            Err(_) => Err("login timed out".into()),
        }
    }
}

impl Workload {
    /// Starts `writers` writers and `readers` readers; writers insert into `chaos_log`, readers
    /// expect `SELECT count(*) FROM pgbench_branches` to be `expected_branches`.
    pub fn start(target: Target, writers: usize, readers: usize, expected_branches: i64) -> Workload {
        let board = Arc::new(Board {
            fault: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            writer_ok: (0..writers).map(|_| AtomicU64::new(0)).collect(),
            reader_ok: (0..readers).map(|_| AtomicU64::new(0)).collect(),
            write_gaps: Mutex::default(),
        });
        let writers = (0..writers)
            .map(|id| tokio::spawn(writer(target.clone(), board.clone(), id)))
            .collect();
        let readers = (0..readers)
            .map(|id| tokio::spawn(reader(target.clone(), board.clone(), id, expected_branches)))
            .collect();
        Workload {
            board,
            writers,
            readers,
        }
    }

    /// Waits until every worker has succeeded at least once more than when called; returns how
    /// long that took, or panics after `timeout` naming the workers that did not.
    pub async fn wait_for_progress(&self, what: &str, timeout: Duration) -> Duration {
        self.wait_for(what, timeout, self.board.ok_counts().len()).await
    }

    /// [`wait_for_progress`](Self::wait_for_progress) of the writers only.
    pub async fn wait_for_writers(&self, what: &str, timeout: Duration) -> Duration {
        self.wait_for(what, timeout, self.board.writer_ok.len()).await
    }

    async fn wait_for(&self, what: &str, timeout: Duration, workers: usize) -> Duration {
        let started = Instant::now();
        let before = self.board.ok_counts();
        loop {
            let mut now = self.board.ok_counts();
            now.truncate(workers);
            let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] <= before[i]).collect();
            if stuck.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: workers {stuck:?} (writers first, then readers) made no progress in {timeout:?}; \
                 failures: {:#?}",
                self.board.failures()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers; returns each writer's acknowledged sequence numbers.
    pub async fn stop(self) -> (Arc<Board>, Vec<Vec<i64>>) {
        self.board.stop.store(true, Ordering::SeqCst);
        let mut acked = Vec::new();
        for writer in self.writers {
            let done = tokio::time::timeout(OP_TIMEOUT * 2, writer).await;
            acked.push(done.expect("a writer stops").expect("a writer does not panic"));
        }
        for reader in self.readers {
            let done = tokio::time::timeout(OP_TIMEOUT * 2, reader).await;
            done.expect("a reader stops").expect("a reader does not panic");
        }
        (self.board, acked)
    }
}

/// A connection with the INSERT prepared on it (tidepool maps the statement name onto whichever
/// backend serves each transaction).
struct Writer {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
}

/// Autocommit INSERTs of (id, 1), (id, 2), …; returns the sequence numbers that were acknowledged.
async fn writer(target: Target, board: Arc<Board>, id: usize) -> Vec<i64> {
    let who = format!("writer {id}");
    let mut acked = Vec::new();
    let mut conn: Option<Writer> = None;
    let mut seq: i64 = 0;
    let mut last_ok = Instant::now();
    while !board.stop.load(Ordering::SeqCst) {
        let w = match conn.take() {
            Some(w) if !w.client.is_closed() => w,
            _ => match open_writer(&target).await {
                Ok(w) => w,
                Err(message) => {
                    board.fail(&who, message);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        seq += 1;
        let writer_id = id as i32;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&writer_id, &seq];
        let insert = w.client.execute(&w.insert, &params);
        match tokio::time::timeout(OP_TIMEOUT, insert).await {
            Ok(Ok(1)) => {
                board.record_gap(last_ok.elapsed());
                last_ok = Instant::now();
                acked.push(seq);
                board.writer_ok[id].fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(n)) => board.fail(&who, format!("INSERT {seq} reported {n} rows")),
            Ok(Err(e)) => board.fail(&who, format!("INSERT {seq}: {}", describe(&e))),
            Err(_) => {
                board.fail(&who, format!("INSERT {seq} timed out"));
                continue; // drop the connection: its state is unknown
            }
        }
        conn = Some(w);
    }
    acked
}

async fn open_writer(target: &Target) -> Result<Writer, String> {
    let client = target.connect().await?;
    let prepare = client.prepare("INSERT INTO chaos_log (writer, seq) VALUES ($1, $2)");
    match tokio::time::timeout(OP_TIMEOUT, prepare).await {
        Ok(Ok(insert)) => Ok(Writer { client, insert }),
        Ok(Err(e)) => Err(format!("prepare: {}", describe(&e))),
        Err(_) => Err("prepare timed out".into()),
    }
}

/// Reads that tidepool sends to the standbys; even readers use the simple protocol, odd ones a
/// prepared statement.
async fn reader(target: Target, board: Arc<Board>, id: usize, expected: i64) {
    let who = format!("reader {id}");
    let sql = "SELECT count(*) FROM pgbench_branches";
    let mut client: Option<tokio_postgres::Client> = None;
    while !board.stop.load(Ordering::SeqCst) {
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => match target.connect().await {
                Ok(c) => c,
                Err(message) => {
                    board.fail(&who, message);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let count = async {
            if id % 2 == 0 {
                let rows = c.simple_query(sql).await?;
                Ok::<i64, tokio_postgres::Error>(crate::common::first_value(&rows).parse().unwrap_or(-1))
            } else {
                Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0))
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, count).await {
            Ok(Ok(n)) if n == expected => {
                board.reader_ok[id].fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(n)) => board.fail(&who, format!("read {n} branches, expected {expected}")),
            Ok(Err(e)) => board.fail(&who, format!("read: {}", describe(&e))),
            Err(_) => {
                board.fail(&who, "read timed out".into());
                continue;
            }
        }
        client = Some(c);
        tokio::time::sleep(READ_PAUSE).await;
    }
}

/// SQLSTATE and message of a server error, else the client library's description.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
