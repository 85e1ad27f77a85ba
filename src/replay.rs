//! Replay and audit: the log as the source of truth.
//!
//! `replay` rebuilds every entity from the log alone, entity by entity (the
//! `events` family is stream-major, so this is one sequential scan holding
//! one entity at a time), and checks it against:
//! - the snapshot-based rebuild the actors would do (snapshot + later events);
//! - each aggregate's own `sanity_check`;
//! - every job's task counts against its tasks' final states;
//! - the global log index (positions 1..=head, each naming an event).
//!
//! `audit` prints one entity's history, or its state at a past time.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::codec;
use crate::domain::account::Account;
use crate::domain::app::App;
use crate::domain::job::Job;
use crate::domain::node::Node;
use crate::domain::pool::Pool;
use crate::domain::request::RequestRecord;
use crate::domain::schedule::Schedule;
use crate::domain::task::{Task, TaskBucket};
use crate::domain::{decode_event, Aggregate};
use crate::store::{Envelope, EventStore, Snapshot, StoreError, StreamId, StreamKind};
use crate::types::Timestamp;

/// Any aggregate's state, for code that walks streams of every kind.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyState {
    Account(Account),
    Pool(Pool),
    Node(Node),
    Job(Job),
    Task(Task),
    Request(RequestRecord),
    Schedule(Schedule),
    App(App),
}

/// Why an envelope could not be folded.
#[derive(Debug, thiserror::Error)]
#[error("{stream} v{version} ({event_type}): {why}")]
pub struct FoldError {
    pub stream: StreamId,
    pub version: u64,
    pub event_type: String,
    pub why: String,
}

impl AnyState {
    pub fn new(kind: StreamKind) -> Self {
        match kind {
            StreamKind::Account => AnyState::Account(Account::default()),
            StreamKind::Pool => AnyState::Pool(Pool::default()),
            StreamKind::Node => AnyState::Node(Node::default()),
            StreamKind::Job => AnyState::Job(Job::default()),
            StreamKind::Task => AnyState::Task(Task::default()),
            StreamKind::Request => AnyState::Request(RequestRecord::default()),
            StreamKind::Schedule => AnyState::Schedule(Schedule::default()),
            StreamKind::App => AnyState::App(App::default()),
        }
    }

    /// Folds one envelope. An event that `apply` cannot take (a bug, or a
    /// damaged log) is caught and reported instead of ending the process.
    pub fn apply(&mut self, envelope: &Envelope) -> Result<(), FoldError> {
        fn step<A: Aggregate>(state: &mut A, envelope: &Envelope) -> Result<(), String> {
            let event: A::Event = decode_event(A::KIND, envelope).map_err(|e| e.to_string())?;
            // Callers stop folding a stream after an error, so the
            // half-changed state is never used.
            crate::domain::apply_checked(state, &event)
        }
        let result = match self {
            AnyState::Account(s) => step(s, envelope),
            AnyState::Pool(s) => step(s, envelope),
            AnyState::Node(s) => step(s, envelope),
            AnyState::Job(s) => step(s, envelope),
            AnyState::Task(s) => step(s, envelope),
            AnyState::Request(s) => step(s, envelope),
            AnyState::Schedule(s) => step(s, envelope),
            AnyState::App(s) => step(s, envelope),
        };
        result.map_err(|why| FoldError {
            stream: envelope.stream.clone(),
            version: envelope.stream_version,
            event_type: envelope.event_type.clone(),
            why,
        })
    }

    /// The state as JSON (secrets redacted).
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            AnyState::Account(s) => serde_json::to_value(s),
            AnyState::Pool(s) => serde_json::to_value(s),
            AnyState::Node(s) => serde_json::to_value(s),
            AnyState::Job(s) => serde_json::to_value(s),
            AnyState::Task(s) => serde_json::to_value(s),
            AnyState::Request(s) => serde_json::to_value(s),
            AnyState::Schedule(s) => serde_json::to_value(s),
            AnyState::App(s) => serde_json::to_value(s),
        };
        // Plain data structs always serialize.
        value.expect("state serializes to JSON")
    }

    pub fn sanity_check(&self) -> Result<(), String> {
        match self {
            AnyState::Account(s) => s.sanity_check(),
            AnyState::Pool(s) => s.sanity_check(),
            AnyState::Node(s) => s.sanity_check(),
            AnyState::Job(s) => s.sanity_check(),
            AnyState::Task(s) => s.sanity_check(),
            AnyState::Request(s) => s.sanity_check(),
            AnyState::Schedule(s) => s.sanity_check(),
            AnyState::App(s) => s.sanity_check(),
        }
    }

    fn state_schema(&self) -> u32 {
        match self {
            AnyState::Account(_) => Account::STATE_SCHEMA,
            AnyState::Pool(_) => Pool::STATE_SCHEMA,
            AnyState::Node(_) => Node::STATE_SCHEMA,
            AnyState::Job(_) => Job::STATE_SCHEMA,
            AnyState::Task(_) => Task::STATE_SCHEMA,
            AnyState::Request(_) => RequestRecord::STATE_SCHEMA,
            AnyState::Schedule(_) => Schedule::STATE_SCHEMA,
            AnyState::App(_) => App::STATE_SCHEMA,
        }
    }

    fn from_snapshot(kind: StreamKind, snapshot: &Snapshot) -> Result<Self, codec::CodecError> {
        Ok(match kind {
            StreamKind::Account => AnyState::Account(codec::decode(&snapshot.state)?),
            StreamKind::Pool => AnyState::Pool(codec::decode(&snapshot.state)?),
            StreamKind::Node => AnyState::Node(codec::decode(&snapshot.state)?),
            StreamKind::Job => AnyState::Job(codec::decode(&snapshot.state)?),
            StreamKind::Task => AnyState::Task(codec::decode(&snapshot.state)?),
            StreamKind::Request => AnyState::Request(codec::decode(&snapshot.state)?),
            StreamKind::Schedule => AnyState::Schedule(codec::decode(&snapshot.state)?),
            StreamKind::App => AnyState::App(codec::decode(&snapshot.state)?),
        })
    }

    /// A short word for the entity's status, for counts (as in its JSON).
    pub fn status_name(&self) -> String {
        let status = match self {
            AnyState::Account(s) => serde_json::to_value(s.status),
            AnyState::Pool(s) => serde_json::to_value(s.status),
            AnyState::Node(s) => serde_json::to_value(s.state),
            AnyState::Job(s) => serde_json::to_value(s.status),
            AnyState::Task(s) => serde_json::to_value(s.status),
            AnyState::Request(s) => serde_json::to_value(s.status),
            AnyState::Schedule(s) => serde_json::to_value(s.status),
            AnyState::App(_) => Ok(serde_json::Value::String("published".into())),
        };
        status
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    }
}

/// One difference found by replay.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mismatch {
    pub entity: String,
    pub problem: String,
}

/// What replay found.
#[derive(Clone, Debug, Serialize, Default)]
pub struct ReplayReport {
    pub events: u64,
    pub streams: u64,
    pub log_head: u64,
    /// Entities per kind and status, e.g. `task` → `completed` → 1000.
    pub entities: BTreeMap<String, BTreeMap<String, u64>>,
    pub snapshots_checked: u64,
    pub elapsed_secs: f64,
    pub events_per_sec: f64,
    pub mismatches: Vec<Mismatch>,
}

/// Most mismatches kept in a report (the count goes on).
pub const MISMATCHES_REPORTED_MAX: usize = 1000;

struct StreamReplay {
    stream: StreamId,
    from_log: AnyState,
    from_snapshot: Option<(u64, AnyState)>,
    /// Last version folded.
    version: u64,
    failed: bool,
}

/// Replay's working state: the report so far and the job-count oracle.
struct Replayer {
    report: ReplayReport,
    mismatches_total: usize,
    /// Job counts as recorded on job streams.
    job_counts: BTreeMap<StreamId, BTreeMap<TaskBucket, u64>>,
    /// Job counts rebuilt from the tasks' own final states.
    task_counts: BTreeMap<StreamId, BTreeMap<TaskBucket, u64>>,
}

impl Replayer {
    fn push(&mut self, entity: &StreamId, problem: String) {
        self.mismatches_total += 1;
        if self.report.mismatches.len() < MISMATCHES_REPORTED_MAX {
            self.report.mismatches.push(Mismatch {
                entity: entity.to_string(),
                problem,
            });
        }
    }

    fn start(&mut self, store: &EventStore, stream: &StreamId) -> Result<StreamReplay, StoreError> {
        let kind = stream.kind();
        let from_snapshot = match store.load_snapshot(stream)? {
            Some(s) if s.state_schema == AnyState::new(kind).state_schema() => {
                match AnyState::from_snapshot(kind, &s) {
                    Ok(state) => Some((s.stream_version, state)),
                    Err(e) => {
                        self.push(stream, format!("snapshot does not decode: {e}"));
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(StreamReplay {
            stream: stream.clone(),
            from_log: AnyState::new(kind),
            from_snapshot,
            version: 0,
            failed: false,
        })
    }

    fn step(&mut self, c: &mut StreamReplay, envelope: &Envelope) {
        if c.failed {
            return;
        }
        if envelope.stream_version != c.version + 1 {
            c.failed = true;
            self.push(
                &c.stream,
                format!("version {} follows {}", envelope.stream_version, c.version),
            );
            return;
        }
        if let Err(e) = c.from_log.apply(envelope) {
            c.failed = true;
            self.push(&c.stream, format!("event does not apply: {e}"));
            return;
        }
        if let Some((version, state)) = &mut c.from_snapshot {
            if envelope.stream_version > *version {
                if let Err(e) = state.apply(envelope) {
                    self.push(
                        &c.stream,
                        format!("event does not apply on the snapshot: {e}"),
                    );
                }
            }
        }
        c.version = envelope.stream_version;
    }

    fn finish(&mut self, done: StreamReplay) {
        self.report.streams += 1;
        let kind = done.stream.kind();
        if !done.failed {
            if let Err(problem) = done.from_log.sanity_check() {
                self.push(&done.stream, format!("invariant broken: {problem}"));
            }
            if let Some((_, from_snapshot)) = &done.from_snapshot {
                self.report.snapshots_checked += 1;
                if *from_snapshot != done.from_log {
                    self.push(&done.stream, "state rebuilt from its snapshot differs from the state rebuilt from the log".into());
                }
            }
        }
        *self
            .report
            .entities
            .entry(kind.prefix().to_string())
            .or_default()
            .entry(done.from_log.status_name())
            .or_default() += 1;
        match &done.from_log {
            AnyState::Job(job) => {
                self.job_counts
                    .insert(done.stream.clone(), job.task_counts.clone());
            }
            AnyState::Task(task) => {
                if let (Some(account), Some(job), Some(bucket)) =
                    (&task.account, &task.job, task.bucket())
                {
                    *self
                        .task_counts
                        .entry(StreamId::job(account, job))
                        .or_default()
                        .entry(bucket)
                        .or_default() += 1;
                }
            }
            _ => {}
        }
    }
}

/// Rebuilds everything from the log and checks it. Errors only when the
/// log cannot be read at all; disagreements are listed as mismatches.
pub fn replay(store: &EventStore) -> Result<ReplayReport, StoreError> {
    let started = Instant::now();
    let mut r = Replayer {
        report: ReplayReport {
            log_head: store.head(),
            ..ReplayReport::default()
        },
        mismatches_total: 0,
        job_counts: BTreeMap::new(),
        task_counts: BTreeMap::new(),
    };
    if let Err(e) = store.verify_log_index() {
        r.mismatches_total += 1;
        r.report.mismatches.push(Mismatch {
            entity: "log".into(),
            problem: e.to_string(),
        });
    }
    let mut current: Option<StreamReplay> = None;
    store.scan_streams(None, |envelope| {
        r.report.events += 1;
        if current.as_ref().map(|c| &c.stream) != Some(&envelope.stream) {
            if let Some(done) = current.take() {
                r.finish(done);
            }
            current = Some(r.start(store, &envelope.stream)?);
        }
        let c = current.as_mut().expect("set above");
        r.step(c, &envelope);
        Ok(())
    })?;
    if let Some(done) = current.take() {
        r.finish(done);
    }
    for (job, counts) in std::mem::take(&mut r.job_counts) {
        let rebuilt = r.task_counts.remove(&job).unwrap_or_default();
        if counts != rebuilt {
            r.push(
                &job,
                format!("job counts {counts:?} but its tasks add up to {rebuilt:?}"),
            );
        }
    }
    for (job, rebuilt) in std::mem::take(&mut r.task_counts) {
        r.push(
            &job,
            format!("tasks {rebuilt:?} belong to a job with no stream"),
        );
    }
    let mut report = r.report;
    if r.mismatches_total > report.mismatches.len() {
        let more = r.mismatches_total - report.mismatches.len();
        report.mismatches.push(Mismatch {
            entity: "report".into(),
            problem: format!("{more} more mismatches not listed"),
        });
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.events_per_sec = if report.elapsed_secs > 0.0 {
        report.events as f64 / report.elapsed_secs
    } else {
        0.0
    };
    Ok(report)
}

/// One line of an entity's history.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub position: u64,
    pub version: u64,
    pub recorded_at: Timestamp,
    pub principal: String,
    pub request_id: String,
    pub event_type: String,
    pub event: serde_json::Value,
    /// Top-level state fields the event changed: field → [before, after].
    pub changed: BTreeMap<String, (serde_json::Value, serde_json::Value)>,
}

/// An entity's audit: its history, or its state at a time.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    pub entity: String,
    pub at: Option<Timestamp>,
    pub history: Vec<AuditEntry>,
    pub state: serde_json::Value,
    pub version: u64,
}

/// Why an audit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0} has no events: no such entity in this log")]
    Unknown(StreamId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fold(#[from] FoldError),
}

/// An event's fields as JSON (secrets redacted), whatever its kind.
pub fn event_json(kind: StreamKind, envelope: &Envelope) -> serde_json::Value {
    fn go<A: Aggregate>(envelope: &Envelope) -> serde_json::Value {
        match decode_event::<A::Event>(A::KIND, envelope) {
            Ok(event) => serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
        }
    }
    match kind {
        StreamKind::Account => go::<Account>(envelope),
        StreamKind::Pool => go::<Pool>(envelope),
        StreamKind::Node => go::<Node>(envelope),
        StreamKind::Job => go::<Job>(envelope),
        StreamKind::Task => go::<Task>(envelope),
        StreamKind::Request => go::<RequestRecord>(envelope),
        StreamKind::Schedule => go::<Schedule>(envelope),
        StreamKind::App => go::<App>(envelope),
    }
}

/// The entity's history up to `at` (everything if none), and its state then.
pub fn audit(
    store: &EventStore,
    stream: &StreamId,
    at: Option<Timestamp>,
) -> Result<Audit, AuditError> {
    let kind = stream.kind();
    let mut state = AnyState::new(kind);
    let mut history = Vec::new();
    let mut version = 0;
    let mut from = 1;
    loop {
        let batch = store.read_stream(stream, from, 1024)?;
        let Some(last) = batch.last() else { break };
        from = last.stream_version + 1;
        let full = batch.len() == 1024;
        for envelope in batch {
            if at.is_some_and(|at| envelope.recorded_at > at) {
                break;
            }
            let before = state.to_json();
            state.apply(&envelope)?;
            let after = state.to_json();
            let mut changed = BTreeMap::new();
            if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
                for (field, new) in a {
                    let old = b.get(field).cloned().unwrap_or(serde_json::Value::Null);
                    if old != *new {
                        changed.insert(field.clone(), (old, new.clone()));
                    }
                }
            }
            version = envelope.stream_version;
            history.push(AuditEntry {
                position: envelope.position,
                version,
                recorded_at: envelope.recorded_at,
                principal: envelope.causation.principal.to_string(),
                request_id: envelope.causation.request_id.to_string(),
                event_type: envelope.event_type.clone(),
                event: event_json(kind, &envelope),
                changed,
            });
        }
        if !full {
            break;
        }
    }
    if history.is_empty() && version == 0 && store.stream_version(stream)? == 0 {
        return Err(AuditError::Unknown(stream.clone()));
    }
    Ok(Audit {
        entity: stream.to_string(),
        at,
        history,
        state: state.to_json(),
        version,
    })
}
