//! The event store: an append-only log on RocksDB.
//!
//! `ARCHITECTURE.md` ("The event store") has the decisions. In short:
//!
//! ```text
//!  appenders ──► channel ──► writer thread ──► one WriteBatch per round ──► RocksDB
//!   (async or blocking)        checks versions     (events, log, meta head)     │
//!                              assigns positions                           fsync (sync)
//!                                                   replies ◄──────────────────┘
//!                                                   head watch ──► subscriptions
//! ```
//!
//! Column families:
//! - `events`: `stream \0 version(be64)` → sealed [`Envelope`]. Stream-major, so
//!   rebuilding one entity and replaying entity by entity are sequential scans.
//! - `log`: `position(be64)` → `stream \0 version(be64)`: the global order.
//! - `snapshots`: `stream` → sealed [`Snapshot`]. Only an optimisation.
//! - `meta`: the format header and the head position.

mod envelope;
mod marks;
mod open;
mod read;
mod recent;
mod snapshot;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

pub use envelope::{seal, unseal, Envelope, NewEvent, StreamId, StreamIdError, StreamKind};
pub use marks::WriteMark;
pub use open::write_format_header_for_test;
use open::{cf_descriptors, check_or_write_header, db_options, open_error, verify_tail};
pub use read::Subscription;

use crate::clock::Clock;
use crate::codec::CodecError;
use crate::types::{Causation, Timestamp};

/// Major version of the on-disk format. A store written by a newer major
/// version is refused; older majors would be migrated at open.
pub const FORMAT_MAJOR: u32 = 1;
/// Minor version: additions an older reader of the same major can ignore.
pub const FORMAT_MINOR: u32 = 0;
const FORMAT_MAGIC: &str = "lote-event-log";

/// Most append requests gathered into one write batch (one fsync).
pub const GROUP_COMMIT_APPENDS_MAX: usize = 4096;
/// Most events in one append request.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Largest payload of one event. Bigger things (files) go to the blob store.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Records checked at open for a damaged tail.
pub const TAIL_VERIFY_RECORDS: u64 = 1024;
/// Records fetched per read when a subscription catches up.
const SUBSCRIPTION_READ_BATCH: usize = 512;

const CF_EVENTS: &str = "events";
const CF_LOG: &str = "log";
const CF_SNAPSHOTS: &str = "snapshots";
const CF_META: &str = "meta";
const META_FORMAT: &[u8] = b"format";
const META_HEAD: &[u8] = b"head";

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the write-ahead log is fsynced: survives power loss. Default.
    #[default]
    Sync,
    /// After the write reaches the OS: survives a crash of lote, not of the
    /// machine. Many times faster.
    Buffered,
}

/// What the appender believes the stream's version is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check (commutative events such as job task-count changes).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

/// Events for one stream within an append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// What an accepted append wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct AppendResult {
    /// The new version of each stream, in request order (the streams are
    /// the caller's own; echoing them would cost a copy per append).
    pub stream_versions: Vec<u64>,
    /// Position of the last event written.
    pub last_position: u64,
    pub recorded_at: Timestamp,
}

/// A store failure. Conflicts are normal traffic; the others are not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream} is at version {actual}, but the append expected {expected:?}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("the event store was opened read-only")]
    ReadOnly,
    #[error("the data directory {path} is in use by another lote process (RocksDB lock held); stop it or use another --data-dir")]
    Locked { path: PathBuf },
    #[error("the data directory {path} holds a log of format {found_major}.{found_minor}, written by a newer lote; this build reads format {FORMAT_MAJOR}.x. Upgrade lote to open it")]
    NewerFormat {
        path: PathBuf,
        found_major: u32,
        found_minor: u32,
    },
    #[error("{path} is not a lote data directory: {why}")]
    NotALog { path: PathBuf, why: String },
    #[error("the event log in {path} is damaged: {what}. lote will not start on a log it cannot trust; restore the directory from a backup or a replica")]
    Corrupted { path: PathBuf, what: String },
    #[error("append refused: {0}")]
    TooLarge(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("codec error: {0}")]
    Codec(String),
    #[error("the event store is shut down")]
    Closed,
}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        StoreError::Codec(e.to_string())
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Storage(e.into_string())
    }
}

/// What to do with a damaged write-ahead log at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WalRecovery {
    /// Drop an incomplete last write (a crash mid-write); refuse to open on
    /// any other damage. The default: nothing acknowledged is dropped
    /// silently.
    #[default]
    Strict,
    /// Salvage: keep everything up to the first damaged record and drop the
    /// rest, even acknowledged appends. For an operator who chose that.
    PointInTime,
}

/// How the store is opened.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub durability: Durability,
    pub read_only: bool,
    pub wal_recovery: WalRecovery,
}

/// The format header stored in `meta`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FormatHeader {
    magic: String,
    major: u32,
    minor: u32,
    created_at: Timestamp,
}

/// A stream's state at a version, saved to shorten rebuilds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub stream_version: u64,
    /// Layout version of the state; a snapshot of another layout is ignored.
    pub state_schema: u32,
    pub state: Vec<u8>,
}

/// Counters for benchmarks and the console.
#[derive(Default, Debug)]
pub struct StoreStats {
    pub events_appended: AtomicU64,
    pub appends: AtomicU64,
    pub write_batches: AtomicU64,
    /// WAL fsyncs (sync mode); one covers every round written before it.
    pub fsyncs: AtomicU64,
    pub conflicts: AtomicU64,
    /// Bytes of the write batches written.
    pub bytes_written: AtomicU64,
    /// Reads of one stream's events from RocksDB: an entity rebuilt (an
    /// actor started, a batched command with no state kept) or caught up.
    pub stream_reads: AtomicU64,
}

/// A snapshot of [`StoreStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsView {
    pub events_appended: u64,
    pub appends: u64,
    pub write_batches: u64,
    pub fsyncs: u64,
    pub conflicts: u64,
    pub bytes_written: u64,
    pub stream_reads: u64,
}

struct Inner {
    db: Arc<DB>,
    path: PathBuf,
    read_only: bool,
    durability: Durability,
    jobs: Option<mpsc::SyncSender<writer::Job>>,
    head: watch::Receiver<u64>,
    stats: Arc<StoreStats>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    marks: Arc<marks::WriteMarks>,
    recent: Arc<std::sync::Mutex<recent::Recent>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it finishes what it has.
        self.jobs.take();
        if let Some(handle) = self.writer.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

/// A handle to the event store; cheap to clone, shared by every actor.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Bound on queued append requests; appenders wait (back-pressure) beyond it.
const APPEND_QUEUE_MAX: usize = 65_536;

/// Events [`EventStore::read_stream`] fetches by key before it opens an
/// iterator.
const STREAM_EVENTS_BY_KEY: u64 = 4;

/// Versions [`EventStore::read_stream_starts`] asks of each stream: a task
/// about to be assigned has one event (its add) unless it ran before, and
/// each key asked costs a lookup in every table that may hold it.
const STREAM_STARTS_BY_KEY: u64 = 2;

/// Key of one event in the `events` family.
pub(crate) fn event_key(stream: &StreamId, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.as_str().len() + 9);
    event_key_append(&mut key, stream, version);
    key
}

/// [`event_key`] at the end of a buffer.
pub(crate) fn event_key_append(key: &mut Vec<u8>, stream: &StreamId, version: u64) {
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
}

fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let mut key = stream.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl EventStore {
    /// Opens (creating if needed) a store for writing. Starts the writer.
    pub fn open(
        path: &Path,
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        if options.read_only {
            return Self::open_read_only_with(path, options.wal_recovery);
        }
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", path.display())))?;
        let db = DB::open_cf_descriptors(&db_options(options.wal_recovery), path, cf_descriptors())
            .map_err(|e| open_error(path, e))?;
        let db = Arc::new(db);
        check_or_write_header(&db, path, Some(clock.now()))?;
        let head = verify_tail(&db, path)?;
        let (head_tx, head_rx) = watch::channel(head);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(APPEND_QUEUE_MAX);
        let stats = Arc::new(StoreStats::default());
        let marks = Arc::new(marks::WriteMarks::new());
        let recent = Arc::new(std::sync::Mutex::new(recent::Recent::default()));
        let handle = writer::spawn(
            writer::Writer {
                db: db.clone(),
                head,
                durability: options.durability,
                clock,
                head_tx,
                stats: stats.clone(),
                marks: marks.clone(),
                recent: recent.clone(),
            },
            jobs_rx,
        )
        .map_err(|e| StoreError::Storage(format!("cannot start the log writer thread: {e}")))?;
        Ok(EventStore {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                read_only: false,
                durability: options.durability,
                jobs: Some(jobs_tx),
                head: head_rx,
                stats,
                writer: std::sync::Mutex::new(Some(handle)),
                marks,
                recent,
            }),
        })
    }

    /// Opens an existing store without writing to it, e.g. a stopped
    /// server's directory or a copy of it, for replay and audit.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Self::open_read_only_with(path, WalRecovery::Strict)
    }

    /// [`open_read_only`](Self::open_read_only) with a chosen WAL recovery.
    pub fn open_read_only_with(path: &Path, recovery: WalRecovery) -> Result<Self, StoreError> {
        if !path.join("CURRENT").exists() {
            return Err(StoreError::NotALog {
                path: path.to_path_buf(),
                why: "no RocksDB database there (missing CURRENT)".into(),
            });
        }
        let db =
            DB::open_cf_descriptors_read_only(&db_options(recovery), path, cf_descriptors(), false)
                .map_err(|e| open_error(path, e))?;
        let db = Arc::new(db);
        check_or_write_header(&db, path, None)?;
        let head = verify_tail(&db, path)?;
        let (_tx, head_rx) = watch::channel(head);
        Ok(EventStore {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                read_only: true,
                durability: Durability::Sync,
                jobs: None,
                head: head_rx,
                stats: Arc::new(StoreStats::default()),
                writer: std::sync::Mutex::new(None),
                marks: Arc::new(marks::WriteMarks::new()),
                recent: Arc::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Position of the last recorded event (0 when the log is empty).
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Changes whenever the log grows (once per written round).
    pub fn head_watch(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// Whether an event of `stream` may have been written after log
    /// position `position`. "No" is certain; "yes" may be a neighbour's
    /// write (see [`WriteMark`]). Costs an atomic load, not a read.
    pub fn written_since(&self, stream: &WriteMark, position: u64) -> bool {
        self.inner.marks.since(stream) > position
    }

    pub fn stats(&self) -> StatsView {
        let s = &self.inner.stats;
        StatsView {
            events_appended: s.events_appended.load(Ordering::Relaxed),
            appends: s.appends.load(Ordering::Relaxed),
            write_batches: s.write_batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            stream_reads: s.stream_reads.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, job: writer::Job) -> Result<(), StoreError> {
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::ReadOnly)?;
        jobs.send(job).map_err(|_| StoreError::Closed)
    }

    fn request(
        &self,
        appends: Vec<StreamAppend>,
        causation: Causation,
    ) -> Result<oneshot::Receiver<Result<AppendResult, StoreError>>, StoreError> {
        validate_append(&appends)?;
        let (reply, rx) = oneshot::channel();
        self.submit(writer::Job::Append {
            appends,
            causation,
            reply,
        })?;
        Ok(rx)
    }

    /// Appends events to one or more streams atomically: all are written or
    /// none. Resolves once the write is as durable as the store's setting.
    pub async fn append(
        &self,
        appends: Vec<StreamAppend>,
        causation: Causation,
    ) -> Result<AppendResult, StoreError> {
        let rx = self.request(appends, causation)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`append`](Self::append) for code outside an async runtime.
    pub fn append_blocking(
        &self,
        appends: Vec<StreamAppend>,
        causation: Causation,
    ) -> Result<AppendResult, StoreError> {
        let rx = self.request(appends, causation)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Writes already-recorded envelopes verbatim (positions, times and all),
    /// continuing the log. Used to load golden logs and exports.
    pub fn import_blocking(&self, envelopes: Vec<Envelope>) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(writer::Job::Import { envelopes, reply })?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// The stream's current version (0 if it has no events).
    pub fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        stream_version(&self.inner.db, stream)
    }

    /// For code outside an async runtime; see [`flush`](Self::flush).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.submit(writer::Job::Barrier { reply })?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?;
        self.inner.db.flush_wal(true)?;
        Ok(())
    }

    /// Writes the memtables out as tables: what a clean stop does after its
    /// last [`flush`](Self::flush), so the next open has no write-ahead log
    /// to replay into them (about half a second for a million events on
    /// this VM, the most of a restart's time to its first placement). An
    /// append answered before this is in the tables; one still in flight
    /// stays in the write-ahead log. A crash skips it, and the open
    /// replays, as it must.
    pub fn flush_memtables_blocking(&self) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Ok(());
        }
        let db = &self.inner.db;
        for name in [CF_EVENTS, CF_LOG, CF_SNAPSHOTS, CF_META] {
            db.flush_cf(cf(db, name))?;
        }
        Ok(())
    }

    /// Waits until every append submitted so far is written, then syncs the
    /// write-ahead log.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.submit(writer::Job::Barrier { reply })?;
        rx.await.map_err(|_| StoreError::Closed)?;
        self.inner.db.flush_wal(true)?;
        Ok(())
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every family is created or opened in `open`; a missing one is a bug.
    db.cf_handle(name).expect("column family opened at start")
}

fn validate_append(appends: &[StreamAppend]) -> Result<(), StoreError> {
    let count: usize = appends.iter().map(|a| a.events.len()).sum();
    if count == 0 {
        return Err(StoreError::TooLarge(
            "an append must carry at least one event".into(),
        ));
    }
    if count > APPEND_EVENTS_MAX {
        return Err(StoreError::TooLarge(format!(
            "{count} events in one append; at most {APPEND_EVENTS_MAX}"
        )));
    }
    for a in appends {
        for e in &a.events {
            if e.payload.len() > EVENT_PAYLOAD_BYTES_MAX {
                return Err(StoreError::TooLarge(format!(
                    "event {} for {} is {} bytes; at most {EVENT_PAYLOAD_BYTES_MAX}",
                    e.event_type,
                    a.stream,
                    e.payload.len()
                )));
            }
        }
    }
    // Almost every append names one to three streams: a pairwise check
    // costs less than a set's allocation, which a large append still gets.
    let twice = if appends.len() <= 8 {
        appends
            .iter()
            .enumerate()
            .find(|(i, a)| appends[..*i].iter().any(|b| b.stream == a.stream))
            .map(|(_, a)| a)
    } else {
        let mut seen = std::collections::HashSet::new();
        appends.iter().find(|a| !seen.insert(&a.stream))
    };
    match twice {
        Some(a) => Err(StoreError::TooLarge(format!(
            "stream {} appears twice in one append",
            a.stream
        ))),
        None => Ok(()),
    }
}

pub(crate) fn stream_version(db: &DB, stream: &StreamId) -> Result<u64, StoreError> {
    let prefix = stream_prefix(stream);
    let last = event_key(stream, u64::MAX);
    let mut iter = db.iterator_cf(
        cf(db, CF_EVENTS),
        IteratorMode::From(&last, Direction::Reverse),
    );
    match iter.next() {
        Some(item) => {
            let (key, _) = item?;
            if key.starts_with(&prefix) && key.len() == prefix.len() + 8 {
                Ok(be_u64(&key[prefix.len()..]).unwrap_or(0))
            } else {
                Ok(0)
            }
        }
        None => Ok(0),
    }
}
