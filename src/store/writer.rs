//! The single writer behind group commit.
//!
//! One thread owns every write. It takes the first waiting request, then
//! everything else already queued (up to [`GROUP_COMMIT_APPENDS_MAX`]), checks
//! each request's expected versions in arrival order, and writes all accepted
//! requests as one RocksDB write batch with one fsync. While that fsync runs,
//! new requests queue up and form the next round: the busier the log, the
//! more appends share an fsync.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::{oneshot, watch};

use super::{
    cf, event_key, seal, stream_version, AppendResult, Durability, Envelope, StoreError, StoreStats, StreamAppend,
    StreamId, CF_EVENTS, CF_LOG, CF_META, GROUP_COMMIT_APPENDS_MAX, META_HEAD,
};
use crate::clock::Clock;
use crate::types::{Causation, Timestamp};

/// Stream versions remembered between rounds, to skip a RocksDB seek per
/// append on hot streams. Cleared wholesale when full: a miss only costs a
/// seek, and this keeps memory flat however many streams exist.
const VERSION_CACHE_MAX: usize = 262_144;

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

pub(super) struct Writer {
    db: Arc<DB>,
    head: u64,
    last_recorded_at: Timestamp,
    durability: Durability,
    clock: Arc<dyn Clock>,
    head_tx: watch::Sender<u64>,
    stats: Arc<StoreStats>,
    versions: HashMap<StreamId, u64>,
}

pub(super) fn spawn(mut writer: Writer, jobs: mpsc::Receiver<Job>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("lote-log-writer".into()).spawn(move || {
        while let Ok(first) = jobs.recv() {
            let mut round = vec![first];
            while round.len() < GROUP_COMMIT_APPENDS_MAX {
                match jobs.try_recv() {
                    Ok(job) => round.push(job),
                    Err(_) => break,
                }
            }
            writer.run_round(round);
        }
    })
}

/// A request accepted into the current round, waiting for the write.
struct Accepted {
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    result: AppendResult,
}

impl Writer {
    pub(super) fn new(
        db: Arc<DB>,
        head: u64,
        durability: Durability,
        clock: Arc<dyn Clock>,
        head_tx: watch::Sender<u64>,
        stats: Arc<StoreStats>,
    ) -> Self {
        Writer {
            db,
            head,
            last_recorded_at: Timestamp::EPOCH,
            durability,
            clock,
            head_tx,
            stats,
            versions: HashMap::new(),
        }
    }

    fn current_version(&mut self, pending: &HashMap<StreamId, u64>, stream: &StreamId) -> Result<u64, StoreError> {
        if let Some(v) = pending.get(stream).or_else(|| self.versions.get(stream)) {
            return Ok(*v);
        }
        let v = stream_version(&self.db, stream)?;
        Ok(v)
    }

    fn run_round(&mut self, round: Vec<Job>) {
        let mut batch = WriteBatch::default();
        let mut pending: HashMap<StreamId, u64> = HashMap::new();
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut imports: Vec<(oneshot::Sender<Result<u64, StoreError>>, u64)> = Vec::new();
        let mut barriers = Vec::new();
        let mut position = self.head;
        // Time never goes backwards along the log, even if the clock does.
        let now = self.clock.now().max(self.last_recorded_at);
        let mut events_in_round = 0u64;

        for job in round {
            match job {
                Job::Append { appends, causation, reply } => {
                    match self.stage_append(&mut batch, &mut pending, &mut position, now, appends, causation) {
                        Ok((result, count)) => {
                            events_in_round += count;
                            accepted.push(Accepted { reply, result });
                        }
                        Err(e) => {
                            if matches!(e, StoreError::Conflict { .. }) {
                                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Job::Import { envelopes, reply } => {
                    match self.stage_import(&mut batch, &mut pending, &mut position, envelopes) {
                        Ok(count) => {
                            events_in_round += count;
                            imports.push((reply, position));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Job::Barrier { reply } => barriers.push(reply),
            }
        }

        if position != self.head {
            batch.put_cf(cf(&self.db, CF_META), META_HEAD, position.to_be_bytes());
            let mut opts = WriteOptions::default();
            opts.set_sync(self.durability == Durability::Sync);
            if let Err(e) = self.db.write_opt(batch, &opts) {
                // Nothing of this round is visible: RocksDB batches are atomic.
                // The cache may hold versions from staging; drop it to be safe.
                let err = StoreError::Storage(e.into_string());
                tracing::error!(error = %err, "log write failed; the round's appends are refused");
                self.versions.clear();
                for a in accepted {
                    let _ = a.reply.send(Err(err.clone()));
                }
                for (reply, _) in imports {
                    let _ = reply.send(Err(err.clone()));
                }
                for reply in barriers {
                    let _ = reply.send(());
                }
                return;
            }
            self.head = position;
            self.last_recorded_at = now;
            if self.versions.len() + pending.len() > VERSION_CACHE_MAX {
                self.versions.clear();
            }
            self.versions.extend(pending);
            self.stats.write_batches.fetch_add(1, Ordering::Relaxed);
            self.stats.events_appended.fetch_add(events_in_round, Ordering::Relaxed);
            self.stats.appends.fetch_add(accepted.len() as u64, Ordering::Relaxed);
            self.head_tx.send_replace(position);
        }
        for a in accepted {
            let _ = a.reply.send(Ok(a.result));
        }
        for (reply, last) in imports {
            let _ = reply.send(Ok(last));
        }
        for reply in barriers {
            let _ = reply.send(());
        }
    }

    fn stage_append(
        &mut self,
        batch: &mut WriteBatch,
        pending: &mut HashMap<StreamId, u64>,
        position: &mut u64,
        now: Timestamp,
        appends: Vec<StreamAppend>,
        causation: Causation,
    ) -> Result<(AppendResult, u64), StoreError> {
        // Check every stream before staging anything: all or nothing.
        let mut starts = Vec::with_capacity(appends.len());
        for a in &appends {
            let actual = self.current_version(pending, &a.stream)?;
            if !a.expected.admits(actual) {
                return Err(StoreError::Conflict { stream: a.stream.clone(), expected: a.expected, actual });
            }
            starts.push(actual);
        }
        let mut versions = Vec::with_capacity(appends.len());
        let mut count = 0;
        for (a, start) in appends.into_iter().zip(starts) {
            let mut version = start;
            for event in a.events {
                version += 1;
                *position += 1;
                count += 1;
                let envelope = Envelope {
                    position: *position,
                    stream: a.stream.clone(),
                    stream_version: version,
                    recorded_at: now,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    causation: causation.clone(),
                    payload: event.payload,
                };
                stage_envelope(&self.db, batch, &envelope)?;
            }
            pending.insert(a.stream.clone(), version);
            versions.push((a.stream, version));
        }
        Ok((AppendResult { stream_versions: versions, last_position: *position, recorded_at: now }, count))
    }

    fn stage_import(
        &mut self,
        batch: &mut WriteBatch,
        pending: &mut HashMap<StreamId, u64>,
        position: &mut u64,
        envelopes: Vec<Envelope>,
    ) -> Result<u64, StoreError> {
        let mut local = pending.clone();
        let mut next = *position;
        for e in &envelopes {
            let current = self.current_version(&local, &e.stream)?;
            if e.position != next + 1 || e.stream_version != current + 1 {
                return Err(StoreError::Conflict {
                    stream: e.stream.clone(),
                    expected: super::ExpectedVersion::Exact(e.stream_version - 1),
                    actual: current,
                });
            }
            next += 1;
            local.insert(e.stream.clone(), e.stream_version);
        }
        for e in &envelopes {
            stage_envelope(&self.db, batch, e)?;
            if e.recorded_at > self.last_recorded_at {
                self.last_recorded_at = e.recorded_at;
            }
        }
        *pending = local;
        *position = next;
        Ok(envelopes.len() as u64)
    }
}

fn stage_envelope(db: &DB, batch: &mut WriteBatch, envelope: &Envelope) -> Result<(), StoreError> {
    let key = event_key(&envelope.stream, envelope.stream_version);
    batch.put_cf(cf(db, CF_EVENTS), &key, seal(envelope)?);
    batch.put_cf(cf(db, CF_LOG), envelope.position.to_be_bytes(), &key);
    Ok(())
}
