//! The write path behind group commit: a two-stage pipeline.
//!
//! ```text
//!  jobs ──► stager thread ──────────────► committer thread ──► RocksDB write (+ fsync)
//!           takes every queued request,   writes the round's batch,        │
//!           checks expected versions in   then replies and moves the head ◄┘
//!           arrival order, assigns
//!           positions, encodes the round
//!           into one WriteBatch
//! ```
//!
//! In sync mode a third thread, the syncer, fsyncs the WAL once for every
//! round written since its last fsync and only then publishes the head and
//! replies, so encoding, writing and fsyncing all overlap. While the
//! committer writes round N, the stager builds round N+1 from what queued
//! meanwhile: the busier the log, the more appends
//! share an fsync, and encoding overlaps with disk waits. The stager checks
//! versions against what it staged, assuming earlier rounds commit. If a
//! write fails (disk full, I/O error), the committer refuses every round
//! staged after it, and the stager waits for the pipeline to drain and
//! starts again from what is really on disk: nothing half-written, nothing
//! acknowledged that is not in the log.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, DB};
use tokio::sync::{oneshot, watch};

use super::envelope::{seal_append, EnvelopeRef};
use super::marks::{Fnv, WriteMark};
use super::recent::{Recent, RecentRound};
use super::{
    cf, event_key, event_key_append, seal, stream_version, AppendResult, Durability, Envelope,
    ExpectedVersion, StoreError, StoreStats, StreamAppend, StreamId, CF_EVENTS, CF_LOG, CF_META,
    GROUP_COMMIT_APPENDS_MAX, META_HEAD,
};
use crate::clock::Clock;
use crate::types::{Causation, Timestamp};

/// Stream versions remembered between rounds, to skip a RocksDB seek per
/// append on hot streams: at most this many, in two generations. When the
/// newer one holds half, the older one is dropped and the newer one takes
/// its place, so the streams written lately stay known (a task assigned
/// and completed soon after its add) however many streams exist. Clearing
/// all at once made every append after a million adds seek again; a miss
/// only costs a seek, and memory stays flat.
pub(super) const VERSION_CACHE_MAX: usize = 262_144;
/// Capacity of the round arena kept between rounds.
const ARENA_BYTES_KEPT: usize = 4 << 20;
/// Rounds staged ahead of the committer.
const ROUNDS_IN_FLIGHT_MAX: usize = 2;
/// In sync mode, how long the stager lets appends gather before it takes
/// a round, when an earlier round is still on its way to durability (its
/// fsync, or the syncer holding one back) and the last round began within
/// [`GATHER_WHILE_BUSY`]. Appends
/// come in bursts (a placement round's assignments, an agent's batch of
/// completions, each through its own actor), and the stager, woken by the
/// first, took the burst one or two at a time: on the compute benchmark,
/// a round per two appends, each waking the committer, the syncer and the
/// appenders. Gathering cut the committer's wake-ups from 0.6-0.8 to about
/// 0.3 per task, and the server thread's preemptions from 0.5-0.8 to about
/// 0.2. An idle log takes its first append at once; a busy one waits for
/// its fsync (about a millisecond here) anyway. A pipeline with nothing in
/// flight takes the next append at once, however recent the last round:
/// one append that follows another (a task's assignment right after its
/// add) would otherwise wait out the pause for nothing. On the latency
/// benchmark that pause was 0.3 of the 0.47 ms from a task's add being
/// acknowledged to its assignment being staged.
const GATHER: Duration = Duration::from_micros(300);
const GATHER_WHILE_BUSY: Duration = Duration::from_millis(2);

pub(super) enum Job {
    Append {
        appends: Vec<StreamAppend>,
        causation: Causation,
        reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    },
    Import {
        envelopes: Vec<Envelope>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Barrier {
        reply: oneshot::Sender<()>,
    },
}

type VersionMap = HashMap<StreamId, u64, BuildHasherDefault<Fnv>>;

/// State the two threads share.
struct Shared {
    /// Write failures so far; a round staged before the latest is refused.
    failures: AtomicU64,
    /// Head position on disk.
    committed_head: AtomicU64,
    /// Rounds the committer has finished (written or refused).
    rounds_done: AtomicU64,
    /// Appends the committer has handed to the syncer so far.
    appends_to_sync: AtomicU64,
    /// While the syncer holds an fsync back: the count of `appends_to_sync`
    /// at which the committer wakes it (`u64::MAX` otherwise).
    wake_syncer_at: AtomicU64,
}

/// Everything needed to start the pipeline.
pub(super) struct Writer {
    pub db: Arc<DB>,
    pub head: u64,
    pub durability: Durability,
    pub clock: Arc<dyn Clock>,
    pub head_tx: watch::Sender<u64>,
    pub stats: Arc<StoreStats>,
    pub marks: Arc<super::marks::WriteMarks>,
    /// Where published rounds' records go for readers of the head.
    pub recent: Arc<std::sync::Mutex<Recent>>,
}

struct Stager {
    db: Arc<DB>,
    marks: Arc<super::marks::WriteMarks>,
    shared: Arc<Shared>,
    stats: Arc<StoreStats>,
    clock: Arc<dyn Clock>,
    head: u64,
    last_recorded_at: Timestamp,
    /// Every stream version staged since the last rotation, including
    /// rounds in flight.
    versions: VersionMap,
    /// The generation before: looked up when `versions` misses.
    older: VersionMap,
    epoch: u64,
    rounds_sent: u64,
    /// The round's appended events, encoded, until they go into its batch.
    round: RoundArena,
}

struct Committer {
    db: Arc<DB>,
    shared: Arc<Shared>,
    /// Sync mode: where written rounds go to be fsynced, and the syncer's
    /// thread, to wake when it holds an fsync back.
    syncer: Option<(mpsc::Sender<Done>, std::thread::Thread)>,
    head_tx: watch::Sender<u64>,
    stats: Arc<StoreStats>,
    recent: Arc<std::sync::Mutex<Recent>>,
}

/// A request accepted into a round, waiting for the write.
struct Accepted {
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    result: AppendResult,
}

/// One round, encoded and ready to write.
struct Staged {
    batch: WriteBatch,
    epoch: u64,
    /// Head after this round (equal to the previous head if nothing to write).
    head: u64,
    events: u64,
    accepted: Vec<Accepted>,
    imports: Vec<(oneshot::Sender<Result<u64, StoreError>>, u64)>,
    barriers: Vec<oneshot::Sender<()>>,
    /// The round's records, when it has only appends.
    recent: Option<RecentRound>,
}

/// Starts the stager and the committer; returns the stager's handle, which
/// ends (after the committer) once every job sender is gone.
pub(super) fn spawn(
    writer: Writer,
    jobs: mpsc::Receiver<Job>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        failures: AtomicU64::new(0),
        committed_head: AtomicU64::new(writer.head),
        rounds_done: AtomicU64::new(0),
        appends_to_sync: AtomicU64::new(0),
        wake_syncer_at: AtomicU64::new(u64::MAX),
    });
    let (staged_tx, staged_rx) = mpsc::sync_channel::<Staged>(ROUNDS_IN_FLIGHT_MAX - 1);
    let published = writer.head_tx.subscribe();
    let (syncer, syncer_handle) = match writer.durability {
        Durability::Buffered => (None, None),
        Durability::Sync => {
            let (tx, rx) = mpsc::channel::<Done>();
            let (db, shared, head_tx, stats, recent) = (
                writer.db.clone(),
                shared.clone(),
                writer.head_tx.clone(),
                writer.stats.clone(),
                writer.recent.clone(),
            );
            let handle = std::thread::Builder::new()
                .name("lote-log-sync".into())
                .spawn(move || run_syncer(db, rx, shared, head_tx, stats, recent))?;
            (Some((tx, handle.thread().clone())), Some(handle))
        }
    };
    let mut committer = Committer {
        db: writer.db.clone(),
        shared: shared.clone(),
        syncer,
        head_tx: writer.head_tx,
        stats: writer.stats.clone(),
        recent: writer.recent,
    };
    let committer_handle = std::thread::Builder::new()
        .name("lote-log-commit".into())
        .spawn(move || {
            while let Ok(staged) = staged_rx.recv() {
                committer.commit(staged);
            }
            // Dropping the committer closes the syncer's channel.
            drop(committer);
            if let Some(handle) = syncer_handle {
                let _ = handle.join();
            }
        })?;
    let mut stager = Stager {
        db: writer.db,
        marks: writer.marks,
        shared,
        stats: writer.stats,
        clock: writer.clock,
        head: writer.head,
        last_recorded_at: Timestamp::EPOCH,
        versions: VersionMap::default(),
        older: VersionMap::default(),
        epoch: 0,
        rounds_sent: 0,
        round: RoundArena::default(),
    };
    let gathers = writer.durability == Durability::Sync;
    std::thread::Builder::new()
        .name("lote-log-stage".into())
        .spawn(move || {
            let mut last_round = None::<Instant>;
            while let Ok(first) = jobs.recv() {
                let in_flight = *published.borrow() < stager.head;
                if gathers && gather(in_flight, last_round.map(|t| t.elapsed())) {
                    std::thread::sleep(GATHER);
                }
                last_round = Some(Instant::now());
                let mut round = vec![first];
                while round.len() < GROUP_COMMIT_APPENDS_MAX {
                    match jobs.try_recv() {
                        Ok(job) => round.push(job),
                        Err(_) => break,
                    }
                }
                let staged = stager.stage_round(round);
                stager.rounds_sent += 1;
                if staged_tx.send(staged).is_err() {
                    break;
                }
            }
            drop(staged_tx);
            let _ = committer_handle.join();
        })
}

impl Stager {
    /// Waits until the committer has finished every round sent so far.
    fn drain_pipeline(&self) {
        while self.shared.rounds_done.load(Ordering::Acquire) < self.rounds_sent {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }

    /// The stream's version with everything staged so far (this round's
    /// appends and those of rounds in flight are all in the cache, so a
    /// miss means what is on disk is current).
    fn current_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        match self.cached(stream) {
            Some(v) => Ok(v),
            None => stream_version(&self.db, stream),
        }
    }

    fn cached(&self, stream: &StreamId) -> Option<u64> {
        self.versions
            .get(stream)
            .or_else(|| self.older.get(stream))
            .copied()
    }

    /// The version an append expecting `expected` is checked against. A
    /// stream expected not to exist (a new task, most appends of a big
    /// submission) is looked up by its first event's key alone: a point
    /// read that the events family's bloom filters answer without reading
    /// tables, where finding the last version takes an iterator over every
    /// table (which a deep log made slower).
    ///
    /// A stream expected at version `v` that the cache has forgotten (a
    /// task assigned long after a large job's add) is checked the same way:
    /// version `v` there and `v + 1` not is exactly version `v`, since
    /// versions are dense. Anything else (a conflict) is found by the
    /// iterator.
    fn version_for(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<u64, StoreError> {
        if self.cached(stream).is_some() {
            return self.current_version(stream);
        }
        let has = |version: u64| -> Result<bool, StoreError> {
            let key = event_key(stream, version);
            Ok(self
                .db
                .get_pinned_cf(cf(&self.db, CF_EVENTS), &key)?
                .is_some())
        };
        match expected {
            ExpectedVersion::NoStream if !has(1)? => return Ok(0),
            ExpectedVersion::Exact(v) if v > 0 && v < u64::MAX && has(v)? && !has(v + 1)? => {
                return Ok(v)
            }
            _ => {}
        }
        self.current_version(stream)
    }

    fn remember(&mut self, stream: &StreamId, version: u64) {
        // Hot streams are found in place: no key copy per append.
        match self.versions.get_mut(stream) {
            Some(v) => *v = version,
            None => {
                self.versions.insert(stream.clone(), version);
            }
        }
    }

    fn stage_round(&mut self, round: Vec<Job>) -> Staged {
        let failures = self.shared.failures.load(Ordering::Acquire);
        if failures != self.epoch {
            // A write failed: forget what was staged on top of it.
            self.drain_pipeline();
            self.epoch = failures;
            self.head = self.shared.committed_head.load(Ordering::Acquire);
            self.versions.clear();
            self.older.clear();
        } else if self.versions.len() > VERSION_CACHE_MAX / 2 {
            // Dropping versions is safe only when none staged is still in
            // flight (the disk would not have it yet).
            self.drain_pipeline();
            self.older = std::mem::take(&mut self.versions);
        }
        let mut staged = Staged {
            batch: WriteBatch::default(),
            epoch: self.epoch,
            head: self.head,
            events: 0,
            accepted: Vec::with_capacity(round.len()),
            imports: Vec::new(),
            barriers: Vec::new(),
            recent: None,
        };
        let start = self.head;
        let db = self.db.clone();
        let families = Families {
            events: cf(&db, CF_EVENTS),
            log: cf(&db, CF_LOG),
        };
        let mut position = self.head;
        // Time never goes backwards along the log, even if the clock does.
        let now = self.clock.now().max(self.last_recorded_at);
        for job in round {
            match job {
                Job::Append {
                    appends,
                    causation,
                    reply,
                } => match self.stage_append(&mut position, now, &appends, &causation) {
                    Ok((result, count)) => {
                        staged.events += count;
                        staged.accepted.push(Accepted { reply, result });
                    }
                    Err(e) => {
                        if matches!(e, StoreError::Conflict { .. }) {
                            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Import { envelopes, reply } => {
                    match self.stage_import(&mut staged.batch, &families, &mut position, &envelopes)
                    {
                        Ok(count) => {
                            staged.events += count;
                            staged.imports.push((reply, position));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Job::Barrier { reply } => staged.barriers.push(reply),
            }
        }
        let recent = self.round.write(&mut staged.batch, &families);
        // Imported events go to the batch, not the arena: such a round's
        // records are not all here.
        if staged.imports.is_empty() {
            staged.recent = recent.filter(|r| r.first == start + 1);
        }
        if position != self.head {
            staged
                .batch
                .put_cf(cf(&self.db, CF_META), META_HEAD, position.to_be_bytes());
            self.head = position;
            self.last_recorded_at = now;
        }
        staged.head = position;
        staged
    }

    /// Stages one append, all or nothing: every expected version is checked
    /// and every event encoded into the round's arenas before anything of
    /// it counts; a failure cuts the arenas back.
    fn stage_append(
        &mut self,
        position: &mut u64,
        now: Timestamp,
        appends: &[StreamAppend],
        causation: &Causation,
    ) -> Result<(AppendResult, u64), StoreError> {
        let mut versions = Vec::with_capacity(appends.len());
        for a in appends {
            let actual = self.version_for(&a.stream, a.expected)?;
            if !a.expected.admits(actual) {
                return Err(StoreError::Conflict {
                    stream: a.stream.clone(),
                    expected: a.expected,
                    actual,
                });
            }
            versions.push(actual);
        }
        let checkpoint = self.round.checkpoint();
        let mut next = *position;
        for (a, version) in appends.iter().zip(versions.iter_mut()) {
            for event in &a.events {
                *version += 1;
                next += 1;
                let envelope = EnvelopeRef {
                    position: next,
                    stream: &a.stream,
                    stream_version: *version,
                    recorded_at: now,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    causation,
                    payload: &event.payload,
                };
                if let Err(e) = self.round.stage(&a.stream, *version, next, &envelope) {
                    self.round.cut(checkpoint);
                    return Err(e.into());
                }
            }
        }
        for (a, version) in appends.iter().zip(&versions) {
            self.remember(&a.stream, *version);
            // The append's last position: no earlier than any of its events.
            self.marks.note(WriteMark::of(&a.stream), next);
        }
        let count = next - *position;
        *position = next;
        Ok((
            AppendResult {
                stream_versions: versions,
                last_position: next,
                recorded_at: now,
            },
            count,
        ))
    }

    fn stage_import(
        &mut self,
        batch: &mut WriteBatch,
        families: &Families<'_>,
        position: &mut u64,
        envelopes: &[Envelope],
    ) -> Result<u64, StoreError> {
        // Versions this import stages, over the cache, until all is checked.
        let mut local = VersionMap::default();
        let mut next = *position;
        let mut scratch = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let current = match local.get(&e.stream) {
                Some(v) => *v,
                None => self.current_version(&e.stream)?,
            };
            if e.position != next + 1 || e.stream_version != current + 1 {
                return Err(StoreError::Conflict {
                    stream: e.stream.clone(),
                    expected: ExpectedVersion::Exact(e.stream_version.saturating_sub(1)),
                    actual: current,
                });
            }
            next += 1;
            self.marks.note(WriteMark::of(&e.stream), e.position);
            local.insert(e.stream.clone(), e.stream_version);
            scratch.push((
                event_key(&e.stream, e.stream_version),
                e.position,
                seal(&e.as_ref())?,
            ));
        }
        for (key, pos, value) in &scratch {
            batch.put_cf(families.events, key, value);
            batch.put_cf(families.log, pos.to_be_bytes(), key);
        }
        if let Some(last) = envelopes.iter().map(|e| e.recorded_at).max() {
            self.last_recorded_at = self.last_recorded_at.max(last);
        }
        self.versions.extend(local);
        *position = next;
        Ok(envelopes.len() as u64)
    }
}

/// A round's appended events, encoded back to back in two reused buffers,
/// written to the batch at the end of the round with the `events` family's
/// keys in order. RocksDB's memtable skip list inserts a key cheaply when it
/// follows the one inserted before it; in arrival order, a round's keys hop
/// from stream to stream and each insert searches from the top. (The `log`
/// family's keys are positions, in order already.)
#[derive(Default)]
struct RoundArena {
    keys: Vec<u8>,
    values: Vec<u8>,
    puts: Vec<Put>,
    /// Indices into `puts`, sorted by key at write time.
    order: Vec<u32>,
}

/// One event in the arena: its key and sealed envelope, by range.
struct Put {
    position: u64,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// Arena lengths to cut back to when an append fails half-way.
#[derive(Clone, Copy)]
struct Checkpoint {
    keys: usize,
    values: usize,
    puts: usize,
}

impl RoundArena {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            keys: self.keys.len(),
            values: self.values.len(),
            puts: self.puts.len(),
        }
    }

    fn cut(&mut self, marks: Checkpoint) {
        self.keys.truncate(marks.keys);
        self.values.truncate(marks.values);
        self.puts.truncate(marks.puts);
    }

    fn stage(
        &mut self,
        stream: &StreamId,
        version: u64,
        position: u64,
        envelope: &EnvelopeRef<'_>,
    ) -> Result<(), crate::codec::CodecError> {
        let value_from = self.values.len();
        seal_append(envelope, &mut self.values)?;
        let key_from = self.keys.len();
        event_key_append(&mut self.keys, stream, version);
        self.puts.push(Put {
            position,
            key: key_from..self.keys.len(),
            value: value_from..self.values.len(),
        });
        Ok(())
    }

    /// Moves the round's events into its batch and empties the arena;
    /// returns a copy of its records, for readers of the head, if they are
    /// consecutive positions back to back (as appends stage them).
    fn write(&mut self, batch: &mut WriteBatch, families: &Families<'_>) -> Option<RecentRound> {
        let recent = self.records();
        for put in &self.puts {
            batch.put_cf(
                families.log,
                put.position.to_be_bytes(),
                &self.keys[put.key.clone()],
            );
        }
        self.order.clear();
        self.order.extend(0..self.puts.len() as u32);
        let (keys, puts) = (&self.keys, &self.puts);
        self.order.sort_unstable_by(|a, b| {
            keys[puts[*a as usize].key.clone()].cmp(&keys[puts[*b as usize].key.clone()])
        });
        for i in &self.order {
            let put = &self.puts[*i as usize];
            batch.put_cf(
                families.events,
                &self.keys[put.key.clone()],
                &self.values[put.value.clone()],
            );
        }
        // One huge round must not pin its size for the process's life.
        clear_keeping_at_most(&mut self.values, ARENA_BYTES_KEPT);
        clear_keeping_at_most(&mut self.keys, ARENA_BYTES_KEPT);
        clear_keeping_at_most(
            &mut self.puts,
            ARENA_BYTES_KEPT / std::mem::size_of::<Put>(),
        );
        clear_keeping_at_most(
            &mut self.order,
            ARENA_BYTES_KEPT / std::mem::size_of::<u32>(),
        );
        recent
    }

    fn records(&self) -> Option<RecentRound> {
        let first = self.puts.first()?.position;
        let mut end = 0;
        let mut ends = Vec::with_capacity(self.puts.len());
        for (i, put) in self.puts.iter().enumerate() {
            if put.position != first + i as u64 || put.value.start != end {
                return None;
            }
            end = put.value.end;
            ends.push(u32::try_from(end).ok()?);
        }
        Some(RecentRound {
            first,
            bytes: self.values[..end].to_vec(),
            ends,
        })
    }
}

/// Empties `v`, and frees it if it grew past `items` (a later round grows
/// it again if it needs to).
fn clear_keeping_at_most<T>(v: &mut Vec<T>, items: usize) {
    if v.capacity() > items {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

/// The column families a round writes to, looked up once per round.
struct Families<'a> {
    events: &'a rocksdb::ColumnFamily,
    log: &'a rocksdb::ColumnFamily,
}

/// A written (or refused) round on its way to its appenders.
struct Done {
    /// New head, if the round wrote anything.
    head: Option<u64>,
    events: u64,
    accepted: Vec<Accepted>,
    imports: Vec<(oneshot::Sender<Result<u64, StoreError>>, u64)>,
    barriers: Vec<oneshot::Sender<()>>,
    error: Option<StoreError>,
    recent: Option<RecentRound>,
    /// Bytes of the round's write batch (records and index entries).
    bytes: u64,
}

impl Done {
    /// Replies to everyone in the round.
    fn reply(self, error: Option<&StoreError>) {
        let error = error.or(self.error.as_ref());
        for a in self.accepted {
            let _ = a.reply.send(match error {
                None => Ok(a.result),
                Some(e) => Err(e.clone()),
            });
        }
        for (reply, last) in self.imports {
            let _ = reply.send(match error {
                None => Ok(last),
                Some(e) => Err(e.clone()),
            });
        }
        for reply in self.barriers {
            let _ = reply.send(());
        }
    }
}

/// Publishes written rounds: counts them, moves the visible head, replies.
fn publish(
    mut rounds: Vec<Done>,
    head_tx: &watch::Sender<u64>,
    stats: &StoreStats,
    recent: &std::sync::Mutex<Recent>,
) {
    let mut head = None;
    let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
    for d in &mut rounds {
        if let (Some(h), None) = (d.head, &d.error) {
            recent.publish(d.events, d.recent.take());
            head = Some(h);
            stats.write_batches.fetch_add(1, Ordering::Relaxed);
            stats.bytes_written.fetch_add(d.bytes, Ordering::Relaxed);
            stats.events_appended.fetch_add(d.events, Ordering::Relaxed);
            stats
                .appends
                .fetch_add(d.accepted.len() as u64, Ordering::Relaxed);
        }
    }
    drop(recent);
    // Readers and subscriptions see a round only once it is as durable as
    // promised, and before its appenders hear back.
    if let Some(head) = head {
        head_tx.send_replace(head);
    }
    for d in rounds {
        d.reply(None);
    }
}

impl Committer {
    fn commit(&mut self, staged: Staged) {
        let Staged {
            batch,
            epoch,
            head,
            events,
            accepted,
            imports,
            barriers,
            recent,
        } = staged;
        let previous = self.shared.committed_head.load(Ordering::Acquire);
        let mut done = Done {
            bytes: batch.size_in_bytes() as u64,
            head: None,
            events,
            accepted,
            imports,
            barriers,
            error: None,
            recent,
        };
        if epoch != self.shared.failures.load(Ordering::Acquire) {
            done.error = Some(StoreError::Storage(
                "an earlier write to the log failed; this request was not written, send it again"
                    .into(),
            ));
        } else if head != previous {
            // The WAL write reaches the OS here; in sync mode the syncer
            // fsyncs it while this thread writes the next round.
            match self.db.write(batch) {
                Ok(()) => {
                    self.shared.committed_head.store(head, Ordering::Release);
                    done.head = Some(head);
                }
                Err(e) => {
                    let err = StoreError::Storage(e.into_string());
                    tracing::error!(error = %err, "log write failed; the round's appends are refused");
                    self.shared.failures.fetch_add(1, Ordering::AcqRel);
                    done.error = Some(err);
                }
            }
        }
        self.shared.rounds_done.fetch_add(1, Ordering::AcqRel);
        match &self.syncer {
            Some((syncer, thread)) => {
                let appends = appends_in(std::slice::from_ref(&done)) as u64;
                if let Err(mpsc::SendError(done)) = syncer.send(done) {
                    done.reply(Some(&StoreError::Closed));
                    return;
                }
                // Counted after the send, so a woken syncer finds the round.
                let sent = self
                    .shared
                    .appends_to_sync
                    .fetch_add(appends, Ordering::SeqCst)
                    + appends;
                if sent >= self.shared.wake_syncer_at.load(Ordering::SeqCst) {
                    thread.unpark();
                }
            }
            None => publish(vec![done], &self.head_tx, &self.stats, &self.recent),
        }
    }
}

/// Whether the stager pauses for [`GATHER`] before it takes a round: only
/// while a round it sent is not yet durable (`in_flight`), so the next
/// round would wait for that fsync anyway, and the last round began
/// within [`GATHER_WHILE_BUSY`].
fn gather(in_flight: bool, since_last_round: Option<Duration>) -> bool {
    in_flight && since_last_round.is_some_and(|t| t < GATHER_WHILE_BUSY)
}

/// The longest the syncer holds an fsync back for writers to catch up.
/// Each fsync costs about the same CPU however little it covers (the WAL's
/// last page rewritten, its inode, a device flush), and in a closed loop
/// (agents that report once their last report is durable, actors that
/// append after their last append) fewer, larger fsyncs make every stage
/// upstream batch more. On the compute benchmark back-to-back fsyncs ran
/// about 1,000 a second; holding them back cut them to about 300 and the
/// CPU per task by about a tenth (1 and 2 ms gained less, 5 ms no more).
const SYNC_HOLD_MAX: Duration = Duration::from_millis(3);

/// Appends an fsync covers: what the syncer counts to decide whether
/// writers have caught up.
fn appends_in(group: &[Done]) -> usize {
    group
        .iter()
        .map(|d| d.accepted.len() + d.imports.len())
        .sum()
}

/// Whether the syncer should go on holding its fsync back: until as many
/// appends wait as the last fsync covered (its writers are back, so
/// waiting longer gains little), and never past [`SYNC_HOLD_MAX`] after the
/// last fsync. A lone writer (one append per fsync) is never held, nor are
/// many writers that are all back already.
fn hold_sync(waiting: usize, last_covered: usize, since_last_sync: Duration) -> bool {
    waiting < last_covered && since_last_sync < SYNC_HOLD_MAX
}

/// Sync mode's third stage: one fsync for every round written since the
/// last one, then the replies.
fn run_syncer(
    db: Arc<DB>,
    rounds: mpsc::Receiver<Done>,
    shared: Arc<Shared>,
    head_tx: watch::Sender<u64>,
    stats: Arc<StoreStats>,
    recent: Arc<std::sync::Mutex<Recent>>,
) {
    let mut last_sync = Instant::now();
    let mut last_covered = 1;
    // Appends received before the group being gathered.
    let mut received_before = 0u64;
    while let Ok(first) = rounds.recv() {
        let mut group = vec![first];
        loop {
            while let Ok(more) = rounds.try_recv() {
                group.push(more);
            }
            let since = last_sync.elapsed();
            if !hold_sync(appends_in(&group), last_covered, since) {
                break;
            }
            // Asleep until the committer has handed over the appends that
            // end the hold, or the hold runs out: one wake-up per fsync, not
            // one per round written meanwhile.
            let wanted = received_before + last_covered as u64;
            shared.wake_syncer_at.store(wanted, Ordering::SeqCst);
            if shared.appends_to_sync.load(Ordering::SeqCst) < wanted {
                std::thread::park_timeout(SYNC_HOLD_MAX.saturating_sub(since));
            }
            shared.wake_syncer_at.store(u64::MAX, Ordering::SeqCst);
        }
        received_before += appends_in(&group) as u64;
        if group.iter().any(|d| d.head.is_some() && d.error.is_none()) {
            if let Err(e) = db.flush_wal(true) {
                let err =
                    StoreError::Storage(format!("fsync of the log failed: {}", e.into_string()));
                tracing::error!(error = %err, "log fsync failed; the rounds it covered are refused");
                shared.failures.fetch_add(1, Ordering::AcqRel);
                for d in group {
                    d.reply(Some(&err));
                }
                continue;
            }
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            last_sync = Instant::now();
            last_covered = appends_in(&group).max(1);
        }
        publish(group, &head_tx, &stats, &recent);
    }
}

#[cfg(test)]
mod tests {
    use super::clear_keeping_at_most;
    use super::{gather, hold_sync, GATHER_WHILE_BUSY, SYNC_HOLD_MAX};
    use std::time::Duration;

    #[test]
    fn appends_gather_only_behind_a_round_not_yet_durable() {
        let soon = Some(GATHER_WHILE_BUSY / 4);
        // Everything sent is durable: an append that follows another (a
        // task's assignment right after its add) is taken at once.
        assert!(!gather(false, soon));
        // A round on its way to its fsync, begun just now: they gather.
        assert!(gather(true, soon));
        // Not after a quiet spell, nor for the first round ever.
        assert!(!gather(true, Some(GATHER_WHILE_BUSY)));
        assert!(!gather(true, None));
    }

    #[test]
    fn an_fsync_is_held_back_only_until_its_last_writers_are_back() {
        let soon = SYNC_HOLD_MAX / 3;
        // A lone writer, one append per fsync, is never held.
        assert!(!hold_sync(1, 1, Duration::ZERO));
        // Fewer appends waiting than the last fsync covered: held...
        assert!(hold_sync(3, 10, soon));
        // ...until they are all back...
        assert!(!hold_sync(10, 10, soon));
        assert!(!hold_sync(12, 10, soon));
        // ...or the hold has run its course since the last fsync.
        assert!(!hold_sync(3, 10, SYNC_HOLD_MAX));
    }

    #[test]
    fn a_huge_round_frees_its_arena_and_a_usual_one_keeps_it() {
        let mut usual: Vec<u8> = Vec::with_capacity(1024);
        usual.extend_from_slice(&[7; 1000]);
        clear_keeping_at_most(&mut usual, 4096);
        assert!(usual.is_empty());
        assert!(usual.capacity() >= 1024, "a usual round's buffer is reused");
        let mut huge: Vec<u8> = vec![7; 1 << 20];
        clear_keeping_at_most(&mut huge, 4096);
        assert!(huge.is_empty());
        assert_eq!(huge.capacity(), 0, "a huge round's buffer is freed");
    }
}
