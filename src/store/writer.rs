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
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rocksdb::{WriteBatch, DB};
use tokio::sync::{oneshot, watch};

use super::envelope::EnvelopeRef;
use super::{
    cf, event_key, seal, stream_version, AppendResult, Durability, Envelope, ExpectedVersion,
    StoreError, StoreStats, StreamAppend, StreamId, CF_EVENTS, CF_LOG, CF_META,
    GROUP_COMMIT_APPENDS_MAX, META_HEAD,
};
use crate::clock::Clock;
use crate::types::{Causation, Timestamp};

/// Stream versions remembered between rounds, to skip a RocksDB seek per
/// append on hot streams. Cleared wholesale when full: a miss only costs a
/// seek, and this keeps memory flat however many streams exist.
const VERSION_CACHE_MAX: usize = 262_144;
/// Rounds staged ahead of the committer.
const ROUNDS_IN_FLIGHT_MAX: usize = 2;

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

/// FNV-1a: stream ids are short, trusted keys; SipHash's DoS resistance is
/// not needed on the hottest map of the write path.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
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
}

/// Everything needed to start the pipeline.
pub(super) struct Writer {
    pub db: Arc<DB>,
    pub head: u64,
    pub durability: Durability,
    pub clock: Arc<dyn Clock>,
    pub head_tx: watch::Sender<u64>,
    pub stats: Arc<StoreStats>,
}

struct Stager {
    db: Arc<DB>,
    shared: Arc<Shared>,
    stats: Arc<StoreStats>,
    clock: Arc<dyn Clock>,
    head: u64,
    last_recorded_at: Timestamp,
    versions: VersionMap,
    epoch: u64,
    rounds_sent: u64,
}

struct Committer {
    db: Arc<DB>,
    shared: Arc<Shared>,
    /// Sync mode: where written rounds go to be fsynced.
    syncer: Option<mpsc::Sender<Done>>,
    head_tx: watch::Sender<u64>,
    stats: Arc<StoreStats>,
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
    });
    let (staged_tx, staged_rx) = mpsc::sync_channel::<Staged>(ROUNDS_IN_FLIGHT_MAX - 1);
    let (syncer, syncer_handle) = match writer.durability {
        Durability::Buffered => (None, None),
        Durability::Sync => {
            let (tx, rx) = mpsc::channel::<Done>();
            let (db, shared, head_tx, stats) = (
                writer.db.clone(),
                shared.clone(),
                writer.head_tx.clone(),
                writer.stats.clone(),
            );
            let handle = std::thread::Builder::new()
                .name("lote-log-sync".into())
                .spawn(move || run_syncer(db, rx, shared, head_tx, stats))?;
            (Some(tx), Some(handle))
        }
    };
    let mut committer = Committer {
        db: writer.db.clone(),
        shared: shared.clone(),
        syncer,
        head_tx: writer.head_tx,
        stats: writer.stats.clone(),
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
        shared,
        stats: writer.stats,
        clock: writer.clock,
        head: writer.head,
        last_recorded_at: Timestamp::EPOCH,
        versions: VersionMap::default(),
        epoch: 0,
        rounds_sent: 0,
    };
    std::thread::Builder::new()
        .name("lote-log-stage".into())
        .spawn(move || {
            while let Ok(first) = jobs.recv() {
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

    fn current_version(
        &mut self,
        pending: &VersionMap,
        stream: &StreamId,
    ) -> Result<u64, StoreError> {
        if let Some(v) = pending.get(stream).or_else(|| self.versions.get(stream)) {
            return Ok(*v);
        }
        // Not staged by an in-flight round (those are all cached), so what is
        // on disk is current.
        stream_version(&self.db, stream)
    }

    fn stage_round(&mut self, round: Vec<Job>) -> Staged {
        let failures = self.shared.failures.load(Ordering::Acquire);
        if failures != self.epoch {
            // A write failed: forget what was staged on top of it.
            self.drain_pipeline();
            self.epoch = failures;
            self.head = self.shared.committed_head.load(Ordering::Acquire);
            self.versions.clear();
        } else if self.versions.len() > VERSION_CACHE_MAX {
            // Clearing is safe only when no staged version is still in flight.
            self.drain_pipeline();
            self.versions.clear();
        }
        let mut staged = Staged {
            batch: WriteBatch::default(),
            epoch: self.epoch,
            head: self.head,
            events: 0,
            accepted: Vec::new(),
            imports: Vec::new(),
            barriers: Vec::new(),
        };
        let mut pending = VersionMap::default();
        let mut position = self.head;
        // Time never goes backwards along the log, even if the clock does.
        let now = self.clock.now().max(self.last_recorded_at);
        for job in round {
            match job {
                Job::Append {
                    appends,
                    causation,
                    reply,
                } => {
                    match self.stage_append(
                        &mut staged.batch,
                        &mut pending,
                        &mut position,
                        now,
                        &appends,
                        &causation,
                    ) {
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
                    }
                }
                Job::Import { envelopes, reply } => match self.stage_import(
                    &mut staged.batch,
                    &mut pending,
                    &mut position,
                    &envelopes,
                ) {
                    Ok(count) => {
                        staged.events += count;
                        staged.imports.push((reply, position));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Barrier { reply } => staged.barriers.push(reply),
            }
        }
        if position != self.head {
            staged
                .batch
                .put_cf(cf(&self.db, CF_META), META_HEAD, position.to_be_bytes());
            self.head = position;
            self.last_recorded_at = now;
            self.versions.extend(pending);
        }
        staged.head = position;
        staged
    }

    fn stage_append(
        &mut self,
        batch: &mut WriteBatch,
        pending: &mut VersionMap,
        position: &mut u64,
        now: Timestamp,
        appends: &[StreamAppend],
        causation: &Causation,
    ) -> Result<(AppendResult, u64), StoreError> {
        // Check every stream before staging anything: all or nothing.
        let mut starts = Vec::with_capacity(appends.len());
        for a in appends {
            let actual = self.current_version(pending, &a.stream)?;
            if !a.expected.admits(actual) {
                return Err(StoreError::Conflict {
                    stream: a.stream.clone(),
                    expected: a.expected,
                    actual,
                });
            }
            starts.push(actual);
        }
        // Encode into a scratch batch first so an encoding error leaves the
        // round's batch untouched.
        let mut scratch = Vec::new();
        let mut next = *position;
        let mut versions = Vec::with_capacity(appends.len());
        for (a, start) in appends.iter().zip(starts) {
            let mut version = start;
            for event in &a.events {
                version += 1;
                next += 1;
                let envelope = EnvelopeRef {
                    position: next,
                    stream: &a.stream,
                    stream_version: version,
                    recorded_at: now,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    causation,
                    payload: &event.payload,
                };
                scratch.push((event_key(&a.stream, version), next, seal(&envelope)?));
            }
            versions.push((a.stream.clone(), version));
        }
        for (key, pos, value) in &scratch {
            put_event(&self.db, batch, key, *pos, value);
        }
        for (stream, version) in &versions {
            pending.insert(stream.clone(), *version);
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
        pending: &mut VersionMap,
        position: &mut u64,
        envelopes: &[Envelope],
    ) -> Result<u64, StoreError> {
        let mut local = pending.clone();
        let mut next = *position;
        let mut scratch = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let current = self.current_version(&local, &e.stream)?;
            if e.position != next + 1 || e.stream_version != current + 1 {
                return Err(StoreError::Conflict {
                    stream: e.stream.clone(),
                    expected: ExpectedVersion::Exact(e.stream_version.saturating_sub(1)),
                    actual: current,
                });
            }
            next += 1;
            local.insert(e.stream.clone(), e.stream_version);
            scratch.push((
                event_key(&e.stream, e.stream_version),
                e.position,
                seal(&e.as_ref())?,
            ));
        }
        for (key, pos, value) in &scratch {
            put_event(&self.db, batch, key, *pos, value);
        }
        if let Some(last) = envelopes.iter().map(|e| e.recorded_at).max() {
            self.last_recorded_at = self.last_recorded_at.max(last);
        }
        *pending = local;
        *position = next;
        Ok(envelopes.len() as u64)
    }
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
fn publish(rounds: Vec<Done>, head_tx: &watch::Sender<u64>, stats: &StoreStats) {
    let mut head = None;
    for d in &rounds {
        if let (Some(h), None) = (d.head, &d.error) {
            head = Some(h);
            stats.write_batches.fetch_add(1, Ordering::Relaxed);
            stats.events_appended.fetch_add(d.events, Ordering::Relaxed);
            stats
                .appends
                .fetch_add(d.accepted.len() as u64, Ordering::Relaxed);
        }
    }
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
        } = staged;
        let previous = self.shared.committed_head.load(Ordering::Acquire);
        let mut done = Done {
            head: None,
            events,
            accepted,
            imports,
            barriers,
            error: None,
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
            Some(syncer) => {
                if let Err(mpsc::SendError(done)) = syncer.send(done) {
                    done.reply(Some(&StoreError::Closed));
                }
            }
            None => publish(vec![done], &self.head_tx, &self.stats),
        }
    }
}

/// Sync mode's third stage: one fsync for every round written since the
/// last one, then the replies.
fn run_syncer(
    db: Arc<DB>,
    rounds: mpsc::Receiver<Done>,
    shared: Arc<Shared>,
    head_tx: watch::Sender<u64>,
    stats: Arc<StoreStats>,
) {
    while let Ok(first) = rounds.recv() {
        let mut group = vec![first];
        while let Ok(more) = rounds.try_recv() {
            group.push(more);
        }
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
        }
        publish(group, &head_tx, &stats);
    }
}

fn put_event(db: &DB, batch: &mut WriteBatch, key: &[u8], position: u64, value: &[u8]) {
    batch.put_cf(cf(db, CF_EVENTS), key, value);
    batch.put_cf(cf(db, CF_LOG), position.to_be_bytes(), key);
}
