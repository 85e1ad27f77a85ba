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
mod recent;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

pub use envelope::{seal, unseal, Envelope, NewEvent, StreamId, StreamIdError, StreamKind};
pub use marks::WriteMark;

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
}

/// A snapshot of [`StoreStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsView {
    pub events_appended: u64,
    pub appends: u64,
    pub write_batches: u64,
    pub fsyncs: u64,
    pub conflicts: u64,
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

fn db_options(recovery: WalRecovery) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Strict: a torn tail (a crash mid-write) is cut back to the last whole
    // write batch, which is the last durable append since batches are
    // atomic; a checksum failure anywhere else refuses to open.
    opts.set_wal_recovery_mode(match recovery {
        WalRecovery::Strict => rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords,
        WalRecovery::PointInTime => rocksdb::DBRecoveryMode::PointInTime,
    });
    opts.set_paranoid_checks(true);
    opts.set_max_background_jobs(2);
    opts.set_write_buffer_size(64 * 1024 * 1024);
    opts.set_max_write_buffer_number(4);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_keep_log_file_num(4);
    opts
}

fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    [CF_EVENTS, CF_LOG, CF_SNAPSHOTS, CF_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, db_options(WalRecovery::Strict)))
        .collect()
}

/// Events [`EventStore::read_stream`] fetches by key before it opens an
/// iterator.
const STREAM_EVENTS_BY_KEY: u64 = 4;

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

    /// Events of one stream with version >= `from_version`, at most `limit`.
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let db = &self.inner.db;
        let cf = cf(db, CF_EVENTS);
        let from = from_version.max(1);
        // Rounds written but not yet fsynced are invisible until the head
        // moves past them (positions grow along a stream).
        let head = self.head();
        let mut out = Vec::new();
        // Versions are dense (1, 2, 3... with no deletes), so the first
        // events are fetched by key: most reads are an actor activated on a
        // short stream or a catch-up of an event or two, and creating an
        // iterator cost more than the rest of such a read.
        let by_key = STREAM_EVENTS_BY_KEY.min(limit as u64);
        let keys: Vec<Vec<u8>> = (from..from + by_key)
            .map(|v| event_key(stream, v))
            .collect();
        for (key, value) in keys
            .iter()
            .zip(db.multi_get_cf(keys.iter().map(|k| (cf, k))))
        {
            let Some(value) = value? else {
                return Ok(out);
            };
            let envelope = self.decode_envelope(key, &value)?;
            if envelope.position > head {
                return Ok(out);
            }
            out.push(envelope);
        }
        if out.len() >= limit {
            return Ok(out);
        }
        let start = event_key(stream, from + by_key);
        let mut read = ReadOptions::default();
        // Keys of this stream are `stream \0 version`; `stream \1` is past
        // them all, so the iterator never wanders into the next stream.
        let mut upper = stream.as_str().as_bytes().to_vec();
        upper.push(1);
        read.set_iterate_upper_bound(upper);
        for item in db.iterator_cf_opt(cf, read, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if out.len() >= limit {
                break;
            }
            let envelope = self.decode_envelope(&key, &value)?;
            if envelope.position > head {
                break;
            }
            out.push(envelope);
        }
        Ok(out)
    }

    fn decode_envelope(&self, key: &[u8], value: &[u8]) -> Result<Envelope, StoreError> {
        unseal::<Envelope>(value).map_err(|what| StoreError::Corrupted {
            path: self.inner.path.clone(),
            what: format!(
                "event record {}: {what}",
                String::from_utf8_lossy(key).replace('\0', "@")
            ),
        })
    }

    /// Events of the whole log from `from_position` on, at most `limit`.
    pub fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let db = &self.inner.db;
        let from = from_position.max(1);
        let head = self.head();
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        let to = head.min(from.saturating_add(limit as u64 - 1));
        if let Some(events) = self.read_recent(from, to)? {
            return Ok(events);
        }
        let keys = match self.log_keys_at(from, to) {
            Some(keys) => keys,
            None => self.log_keys_scanned(from, head, limit)?,
        };
        let events = cf(db, CF_EVENTS);
        let values = db.multi_get_cf(keys.iter().map(|k| (events, k.as_slice())));
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            let value = value?.ok_or_else(|| StoreError::Corrupted {
                path: self.inner.path.clone(),
                what: format!(
                    "log entry points at missing event {}",
                    String::from_utf8_lossy(key).replace('\0', "@")
                ),
            })?;
            out.push(self.decode_envelope(key, &value)?);
        }
        Ok(out)
    }

    /// Events `from..=to` from the rounds kept in memory (see `recent`), if
    /// `from` is among them; possibly fewer.
    fn read_recent(&self, from: u64, to: u64) -> Result<Option<Vec<Envelope>>, StoreError> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(records) = recent.read(from, to) else {
            return Ok(None);
        };
        records
            .into_iter()
            .map(|(position, record)| {
                unseal::<Envelope>(record).map_err(|what| StoreError::Corrupted {
                    path: self.inner.path.clone(),
                    what: format!("event at position {position}, as written: {what}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The event keys at log positions `from..=to`, fetched by position:
    /// positions are dense (every round takes the next ones, a failed round
    /// gives its positions back), so no iterator is needed, and creating
    /// one is most of the cost of a subscription's small, frequent reads.
    /// None if any is missing, for the caller to scan instead.
    fn log_keys_at(&self, from: u64, to: u64) -> Option<Vec<Vec<u8>>> {
        let db = &self.inner.db;
        let log = cf(db, CF_LOG);
        let positions: Vec<[u8; 8]> = (from..=to).map(u64::to_be_bytes).collect();
        db.multi_get_cf(positions.iter().map(|p| (log, p.as_slice())))
            .into_iter()
            .map(|value| value.ok().flatten())
            .collect()
    }

    /// The event keys from log position `from` on, at most `limit`, up to
    /// `head`, by scanning the log.
    fn log_keys_scanned(
        &self,
        from: u64,
        head: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let db = &self.inner.db;
        let start = from.to_be_bytes();
        let mut keys = Vec::new();
        for item in db.iterator_cf(
            cf(db, CF_LOG),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (position, value) = item?;
            if be_u64(&position).is_none_or(|p| p > head) {
                break;
            }
            keys.push(value.to_vec());
            if keys.len() >= limit {
                break;
            }
        }
        Ok(keys)
    }

    /// Visits every event grouped by stream (streams in key order, events in
    /// version order), optionally only streams starting with `prefix`. The
    /// sequential scan that replay and per-kind listings use.
    pub fn scan_streams(
        &self,
        prefix: Option<&str>,
        mut visit: impl FnMut(Envelope) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_streams_after(prefix.unwrap_or(""), None, |e| visit(e).map(|_| true))
    }

    /// Like [`scan_streams`](Self::scan_streams), starting at the first
    /// stream after `after` (a stream id under `prefix`), and stopping as
    /// soon as `visit` returns `false`: one page of a listing costs the page,
    /// not the whole prefix.
    pub fn scan_streams_after(
        &self,
        prefix: &str,
        after: Option<&StreamId>,
        mut visit: impl FnMut(Envelope) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let db = &self.inner.db;
        let prefix = prefix.as_bytes();
        // Stream keys are `stream \0 version`; `stream \x01` sorts after
        // every key of that stream.
        let start = match after {
            Some(stream) => {
                let mut key = stream.as_str().as_bytes().to_vec();
                key.push(1);
                key
            }
            None => prefix.to_vec(),
        };
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        for item in db.iterator_cf_opt(
            cf(db, CF_EVENTS),
            read,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(self.decode_envelope(&key, &value)?)? {
                break;
            }
        }
        Ok(())
    }

    /// Checks that the global log is whole: positions 1..=head each name an
    /// event record. Returns the number of log entries.
    pub fn verify_log_index(&self) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut expected = 1u64;
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        for item in db.iterator_cf_opt(cf(db, CF_LOG), read, IteratorMode::Start) {
            let (key, _) = item?;
            let position =
                be_u64(&key).ok_or_else(|| self.corrupted("log key of wrong length".into()))?;
            if position != expected {
                return Err(self.corrupted(format!(
                    "log position {expected} is missing (next is {position})"
                )));
            }
            expected += 1;
        }
        let count = expected - 1;
        if count != self.head() {
            return Err(self.corrupted(format!(
                "log holds {count} entries but its head says {}",
                self.head()
            )));
        }
        Ok(count)
    }

    fn corrupted(&self, what: String) -> StoreError {
        StoreError::Corrupted {
            path: self.inner.path.clone(),
            what,
        }
    }

    /// A live tail of the log from `from_position` (inclusive): every event,
    /// in order, first the recorded ones, then new ones as they commit.
    pub fn subscribe(&self, from_position: u64) -> Subscription {
        Subscription {
            store: self.clone(),
            next: from_position.max(1),
            buffer: std::collections::VecDeque::new(),
            head: self.inner.head.clone(),
        }
    }

    /// Saves a snapshot of a stream's state. Written outside the log's write
    /// batches: losing one costs only rebuild time.
    pub fn save_snapshot(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        db.put_cf(
            cf(db, CF_SNAPSHOTS),
            stream.as_str().as_bytes(),
            seal(snapshot)?,
        )?;
        Ok(())
    }

    /// The stream's snapshot, if any. A damaged snapshot is reported as
    /// absent (and logged): it is only an optimisation.
    pub fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let db = &self.inner.db;
        match db.get_cf(cf(db, CF_SNAPSHOTS), stream.as_str().as_bytes())? {
            None => Ok(None),
            Some(bytes) => match unseal::<Snapshot>(&bytes) {
                Ok(s) => Ok(Some(s)),
                Err(why) => {
                    tracing::warn!(%stream, %why, "ignoring a damaged snapshot");
                    Ok(None)
                }
            },
        }
    }

    /// Removes every snapshot (state must not change: they are a cache).
    pub fn delete_all_snapshots(&self) -> Result<u64, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        let cf = cf(db, CF_SNAPSHOTS);
        let mut count = 0;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item?;
            db.delete_cf(cf, key)?;
            count += 1;
        }
        Ok(count)
    }

    /// Number of snapshots stored.
    pub fn snapshot_count(&self) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut count = 0;
        for item in db.iterator_cf(cf(db, CF_SNAPSHOTS), IteratorMode::Start) {
            item?;
            count += 1;
        }
        Ok(count)
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

/// Turns RocksDB's open failures into errors that say what to do.
fn open_error(path: &Path, e: rocksdb::Error) -> StoreError {
    let text = e.into_string();
    if text.contains("LOCK")
        || text.contains("lock")
        || text.contains("Resource temporarily unavailable")
    {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else if text.contains("Corruption") {
        StoreError::Corrupted {
            path: path.to_path_buf(),
            what: format!("{text} (the write-ahead log holds a damaged record; to keep only what precedes it, losing later appends, open with WAL recovery point-in-time)"),
        }
    } else if text.contains("Column families not opened")
        || text.contains("does not exist")
        || text.contains("Invalid argument")
    {
        StoreError::NotALog {
            path: path.to_path_buf(),
            why: text,
        }
    } else {
        StoreError::Storage(text)
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

fn check_or_write_header(db: &DB, path: &Path, now: Option<Timestamp>) -> Result<(), StoreError> {
    let meta = cf(db, CF_META);
    match db.get_cf(meta, META_FORMAT)? {
        Some(bytes) => {
            let header: FormatHeader = unseal(&bytes).map_err(|why| StoreError::NotALog {
                path: path.to_path_buf(),
                why: format!("unreadable format header: {why}"),
            })?;
            if header.magic != FORMAT_MAGIC {
                return Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: format!("format magic is {:?}", header.magic),
                });
            }
            if header.major > FORMAT_MAJOR {
                return Err(StoreError::NewerFormat {
                    path: path.to_path_buf(),
                    found_major: header.major,
                    found_minor: header.minor,
                });
            }
            Ok(())
        }
        None => {
            let has_events = db
                .iterator_cf(cf(db, CF_LOG), IteratorMode::Start)
                .next()
                .is_some();
            match now {
                Some(now) if !has_events => {
                    let header = FormatHeader {
                        magic: FORMAT_MAGIC.into(),
                        major: FORMAT_MAJOR,
                        minor: FORMAT_MINOR,
                        created_at: now,
                    };
                    let mut opts = rocksdb::WriteOptions::default();
                    opts.set_sync(true);
                    db.put_cf_opt(meta, META_FORMAT, seal(&header)?, &opts)?;
                    Ok(())
                }
                Some(_) => Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: "events without a format header".into(),
                }),
                None => Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: "no format header (empty or foreign database)".into(),
                }),
            }
        }
    }
}

/// Test hook: rewrites the header as if a newer lote had written the log.
#[doc(hidden)]
pub fn write_format_header_for_test(path: &Path, major: u32, minor: u32) -> Result<(), StoreError> {
    let db = DB::open_cf_descriptors(&db_options(WalRecovery::Strict), path, cf_descriptors())?;
    let header = FormatHeader {
        magic: FORMAT_MAGIC.into(),
        major,
        minor,
        created_at: Timestamp::EPOCH,
    };
    db.put_cf(cf(&db, CF_META), META_FORMAT, seal(&header)?)?;
    Ok(())
}

/// Finds the head and checks the newest records: the head record must be
/// the log's last entry, and the last [`TAIL_VERIFY_RECORDS`] entries must
/// be contiguous, point at events that exist, carry their own position and
/// pass their checksums. Anything else means the directory was damaged
/// outside RocksDB's atomic batches, and starting would mean wrong state.
fn verify_tail(db: &DB, path: &Path) -> Result<u64, StoreError> {
    let corrupted = |what: String| StoreError::Corrupted {
        path: path.to_path_buf(),
        what,
    };
    let meta_head = match db.get_cf(cf(db, CF_META), META_HEAD)? {
        Some(bytes) => {
            be_u64(&bytes).ok_or_else(|| corrupted("head record of wrong length".into()))?
        }
        None => 0,
    };
    let mut iter = db.iterator_cf(cf(db, CF_LOG), IteratorMode::End);
    let last = match iter.next() {
        Some(item) => {
            let (key, _) = item?;
            be_u64(&key).ok_or_else(|| corrupted("log key of wrong length".into()))?
        }
        None => 0,
    };
    if last != meta_head {
        return Err(corrupted(format!(
            "the head record says {meta_head} but the log ends at {last}"
        )));
    }
    let from = meta_head.saturating_sub(TAIL_VERIFY_RECORDS) + 1;
    let mut expected = from;
    let events = cf(db, CF_EVENTS);
    for item in db.iterator_cf(
        cf(db, CF_LOG),
        IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
    ) {
        let (key, event_key) = item?;
        let position = be_u64(&key).ok_or_else(|| corrupted("log key of wrong length".into()))?;
        if position != expected {
            return Err(corrupted(format!("log position {expected} is missing")));
        }
        let bytes = db.get_cf(events, &event_key)?.ok_or_else(|| {
            corrupted(format!("log position {position} points at a missing event"))
        })?;
        let envelope: Envelope = unseal(&bytes)
            .map_err(|why| corrupted(format!("event at position {position}: {why}")))?;
        if envelope.position != position {
            return Err(corrupted(format!(
                "event at log position {position} says it is at {}",
                envelope.position
            )));
        }
        expected += 1;
    }
    if meta_head > 0 && expected != meta_head + 1 {
        return Err(corrupted(format!(
            "log ends at {} but the head is {meta_head}",
            expected - 1
        )));
    }
    Ok(meta_head)
}

/// A live, ordered tail of the log. See [`EventStore::subscribe`].
pub struct Subscription {
    store: EventStore,
    next: u64,
    buffer: std::collections::VecDeque<Envelope>,
    head: watch::Receiver<u64>,
}

impl Subscription {
    /// The next event, waiting for one to be recorded if need be. Ends with
    /// [`StoreError::Closed`] when the store shuts down.
    pub async fn next(&mut self) -> Result<Envelope, StoreError> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.next = envelope.position + 1;
                return Ok(envelope);
            }
            let head = *self.head.borrow_and_update();
            if head >= self.next {
                self.buffer
                    .extend(self.store.read_all(self.next, SUBSCRIPTION_READ_BATCH)?);
                if self.buffer.is_empty() {
                    return Err(self.store.corrupted(format!(
                        "position {} is below the head but not readable",
                        self.next
                    )));
                }
                continue;
            }
            if self.head.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Position of the next event this subscription will deliver.
    pub fn next_position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::types::{Principal, RequestId};

    fn buffered_store(dir: &Path) -> EventStore {
        let options = StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        };
        EventStore::open(dir, options, Arc::new(SystemClock)).unwrap()
    }

    /// Appends `count` test events to `job/acme/NAME`.
    fn append_events(store: &EventStore, name: &str, count: u64) -> StreamId {
        let stream = StreamId::parse(&format!("job/acme/{name}")).unwrap();
        let events = (0..count)
            .map(|n| NewEvent {
                event_type: "Test".into(),
                schema_version: 1,
                payload: n.to_le_bytes().to_vec(),
            })
            .collect();
        let append = StreamAppend {
            stream: stream.clone(),
            expected: ExpectedVersion::Any,
            events,
        };
        let causation = Causation {
            request_id: RequestId(uuid::Uuid::from_u128(7)),
            principal: Principal::Admin,
        };
        store.append_blocking(vec![append], causation).unwrap();
        stream
    }

    #[test]
    fn a_gap_in_log_positions_falls_back_to_scanning() {
        let dir = tempfile::tempdir().unwrap();
        let store = buffered_store(dir.path());
        append_events(&store, "gap", 5);
        // What is read here must come from RocksDB, not the recent rounds.
        store.inner.recent.lock().unwrap().clear();
        let positions = |all: Vec<Envelope>| all.iter().map(|e| e.position).collect::<Vec<_>>();
        // Dense: read by position.
        assert!(store.log_keys_at(1, 5).is_some());
        assert_eq!(positions(store.read_all(2, 3).unwrap()), [2, 3, 4]);
        // A position gone from the log index (never the case in a log this
        // store wrote, but a reader must not stall on it): scanned instead.
        let db = &store.inner.db;
        db.delete_cf(cf(db, CF_LOG), 3u64.to_be_bytes()).unwrap();
        assert!(store.log_keys_at(1, 5).is_none());
        assert_eq!(positions(store.read_all(2, 3).unwrap()), [2, 4, 5]);
        assert_eq!(positions(store.read_all(1, 100).unwrap()), [1, 2, 4, 5]);
        assert!(store.read_all(6, 10).unwrap().is_empty());
    }

    #[test]
    fn a_stream_read_by_key_then_by_iterator_is_whole_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = buffered_store(dir.path());
        let append = |name: &str, count: u64| append_events(&store, name, count);
        // Neighbours on both sides of the stream's keys.
        append("s", 2);
        let stream = append("s1", 3 * STREAM_EVENTS_BY_KEY);
        append("s10", 2);
        append("s2", 2);
        let versions = |from: u64, limit: usize| -> Vec<u64> {
            let read = store.read_stream(&stream, from, limit).unwrap();
            assert!(read.iter().all(|e| e.stream == stream));
            read.iter().map(|e| e.stream_version).collect()
        };
        let all = 3 * STREAM_EVENTS_BY_KEY;
        assert_eq!(versions(1, 100), (1..=all).collect::<Vec<_>>());
        assert_eq!(versions(0, 100), (1..=all).collect::<Vec<_>>());
        assert_eq!(versions(2, 2), [2, 3]);
        assert_eq!(versions(3, 3), [3, 4, 5]);
        assert_eq!(
            versions(2, STREAM_EVENTS_BY_KEY as usize + 1),
            (2..=STREAM_EVENTS_BY_KEY + 2).collect::<Vec<_>>()
        );
        assert_eq!(versions(all - 1, 100), [all - 1, all]);
        assert!(versions(all + 1, 100).is_empty());
        assert!(versions(1, 0).is_empty());
    }

    #[test]
    fn the_log_read_from_memory_is_the_log_read_from_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let store = buffered_store(dir.path());
        for (n, name) in ["a", "b", "a", "c"].into_iter().enumerate() {
            append_events(&store, name, n as u64 + 1);
        }
        let recent = |from: u64, to: u64| store.read_recent(from, to).unwrap();
        let from_memory = recent(1, 10).expect("every round is kept");
        assert_eq!(from_memory.len(), 10);
        assert_eq!(recent(4, 6).unwrap().len(), 3, "a read may start mid-round");
        assert_eq!(store.read_all(4, 3).unwrap(), from_memory[3..6]);
        assert_eq!(store.read_all(9, 100).unwrap(), from_memory[8..]);
        store.inner.recent.lock().unwrap().clear();
        assert!(recent(1, 10).is_none());
        assert_eq!(store.read_all(1, 100).unwrap(), from_memory);
        // Kept again from the next round on; earlier reads go to RocksDB.
        append_events(&store, "d", 2);
        assert!(recent(10, 12).is_none());
        assert_eq!(recent(11, 12).unwrap().len(), 2);
        assert_eq!(store.read_all(1, 100).unwrap().len(), 12);
        // An import's round is not kept, nor what came before it.
        let imported = Envelope {
            position: 13,
            stream_version: 1,
            ..store.read_all(12, 1).unwrap().remove(0)
        };
        let imported = Envelope {
            stream: StreamId::parse("job/acme/imported").unwrap(),
            ..imported
        };
        store.import_blocking(vec![imported.clone()]).unwrap();
        assert!(recent(11, 13).is_none());
        assert_eq!(store.read_all(13, 1).unwrap(), [imported]);
    }
}
