//! The actor layer: one actix actor per live entity, activated on demand.
//!
//! [`Core`] is the front door: it finds (or starts) the actor of an entity
//! and sends it the command, retrying a bounded number of times when an
//! optimistic-concurrency conflict says the entity moved underneath.

mod batch;
mod entity;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

pub use entity::{catch_up, load, Entity, Execute, GetState};

use crate::clock::Clock;
use crate::codec::CodecError;
use crate::domain::account::Account;
use crate::domain::app::App;
use crate::domain::job::Job;
use crate::domain::node::Node;
use crate::domain::pool::Pool;
use crate::domain::schedule::Schedule;
use crate::domain::task::{self, Task, TaskSpec};
use crate::domain::{self, Aggregate, Ctx, Rejection, RejectionCode, Versioned};
use crate::store::{EventStore, ExpectedVersion, StoreError, StreamAppend, StreamId};
use crate::types::{AccountName, JobId};

/// Attempts of one command when appends conflict with concurrent writers.
pub const APPEND_CONFLICT_RETRIES_MAX: usize = 16;

/// Tunables of the actor layer.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Write a snapshot every this many events of a stream (0: never).
    pub snapshot_every: u64,
    /// Stop an actor after this long without messages.
    pub idle_passivate: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            snapshot_every: 100,
            idle_passivate: Duration::from_secs(60),
        }
    }
}

/// A command's failure: refused by the rules, or the machinery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("codec error: {0}")]
    Codec(String),
    #[error("actor unavailable: {0}")]
    Unavailable(String),
}

impl From<CodecError> for CoreError {
    fn from(e: CodecError) -> Self {
        CoreError::Codec(e.to_string())
    }
}

impl CoreError {
    pub fn rejection_code(&self) -> Option<RejectionCode> {
        match self {
            CoreError::Rejected(r) => Some(r.code),
            _ => None,
        }
    }
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<A: Aggregate> {
    pub events: Vec<A::Event>,
    /// The stream's version after the command.
    pub version: u64,
    pub state: A,
}

struct Slot<A: Aggregate> {
    generation: u64,
    addr: Addr<Entity<A>>,
}

/// States kept for entities without a live actor at most: past this many
/// all are dropped (each is only a saved read).
const RESTING_MAX: usize = 65_536;

/// New entities' states [`Registry::rest_new`] keeps at most: a job's
/// first 8,192 tasks are assigned without a read. Each is a task's whole
/// state with its spec: with 32,768 kept, the dispatch bench's million
/// queued tasks took 520 bytes each, against 493 with 8,192 (the queue's
/// bound is 512).
const RESTING_NEW_MAX: usize = 8_192;

/// An entity's state as a batch left it, with the log position through
/// which it is known (see [`Registry::take_resting`]).
struct Resting<A> {
    known: Versioned<A>,
    known_at: u64,
}

/// Live actors of one aggregate kind, and the states batches left for
/// entities without one.
pub struct Registry<A: Aggregate> {
    slots: Arc<Mutex<HashMap<StreamId, Slot<A>>>>,
    next_generation: Arc<std::sync::atomic::AtomicU64>,
    resting: Mutex<HashMap<StreamId, Resting<A>>>,
}

impl<A: Aggregate> Default for Registry<A> {
    fn default() -> Self {
        Registry {
            slots: Arc::default(),
            next_generation: Arc::default(),
            resting: Mutex::default(),
        }
    }
}

impl<A: Aggregate> Registry<A> {
    /// Number of live actors.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an actor for `stream` is running (its entity exists).
    fn is_live(&self, stream: &StreamId) -> bool {
        self.slots
            .lock()
            .map(|s| s.get(stream).is_some_and(|slot| slot.addr.connected()))
            .unwrap_or(false)
    }

    fn get_or_start(
        &self,
        stream: &StreamId,
        store: &EventStore,
        config: &CoreConfig,
    ) -> Result<Addr<Entity<A>>, CoreError> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| CoreError::Unavailable("registry lock poisoned".into()))?;
        if let Some(slot) = slots.get(stream) {
            if slot.addr.connected() {
                return Ok(slot.addr.clone());
            }
        }
        // A state a batch left is as good as a load: the actor catches up
        // past its position like any other (see `Entity::catch_up`).
        let (current, loaded_at) = match self.take_resting(stream, store) {
            Some(r) => (r.known, r.known_at),
            None => {
                // Read before the load: every event up to it is in what
                // is loaded.
                let loaded_at = store.head();
                (load(store, stream, true)?, loaded_at)
            }
        };
        Ok(self.start(&mut slots, stream, store, config, current, loaded_at))
    }

    /// Keeps the state a batch just appended for an entity with no live
    /// actor, `known` through log position `known_at`: its next batched
    /// command (an attempt's end after its assignment) needs no read and
    /// no actor.
    fn rest(&self, stream: &StreamId, known: Versioned<A>, known_at: u64) {
        let Ok(mut resting) = self.resting.lock() else {
            return;
        };
        if resting.len() >= RESTING_MAX {
            resting.clear();
        }
        resting.insert(stream.clone(), Resting { known, known_at });
    }

    /// Keeps the states of entities an append just created (a job's new
    /// tasks, through `known_at`) for their first batched command, the
    /// assignment, which then reads nothing. Only while fewer than
    /// [`RESTING_NEW_MAX`] states are kept, and never by dropping others: a
    /// large job added at once keeps its first tasks, not its last, and
    /// never pushes out the states of attempts in flight.
    fn rest_new(&self, created: impl IntoIterator<Item = (StreamId, Versioned<A>)>, known_at: u64) {
        let Ok(mut resting) = self.resting.lock() else {
            return;
        };
        for (stream, known) in created {
            if resting.len() >= RESTING_NEW_MAX {
                return;
            }
            resting.insert(stream, Resting { known, known_at });
        }
    }

    /// The state kept for `stream`, if any; dropped when another writer
    /// may have appended to the stream since (the store's write mark says
    /// so), for the caller to read the stream instead. Taken, not copied:
    /// whoever takes it decides the entity's next command.
    fn take_resting(&self, stream: &StreamId, store: &EventStore) -> Option<Resting<A>> {
        let resting = self.resting.lock().ok()?.remove(stream)?;
        let moved = store.written_since(&crate::store::WriteMark::of(stream), resting.known_at);
        (!moved).then_some(resting)
    }

    fn start(
        &self,
        slots: &mut HashMap<StreamId, Slot<A>>,
        stream: &StreamId,
        store: &EventStore,
        config: &CoreConfig,
        current: Versioned<A>,
        loaded_at: u64,
    ) -> Addr<Entity<A>> {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let registry = self.slots.clone();
        let key = stream.clone();
        let on_stop = Box::new(move || {
            if let Ok(mut slots) = registry.lock() {
                if slots.get(&key).map(|s| s.generation) == Some(generation) {
                    slots.remove(&key);
                }
            }
        });
        let snapshot_version = current.version; // a fresh load counts as snapshotted
        let addr = Entity::new(
            stream.clone(),
            store.clone(),
            current,
            loaded_at,
            snapshot_version,
            config.clone(),
            on_stop,
        )
        .start();
        slots.insert(
            stream.clone(),
            Slot {
                generation,
                addr: addr.clone(),
            },
        );
        addr
    }
}

/// Gives generic code the registry of each aggregate kind.
pub trait Registered: Aggregate {
    fn registry(core: &Core) -> &Registry<Self>;
}

macro_rules! registered {
    ($($ty:ty => $field:ident),*) => {$(
        impl Registered for $ty {
            fn registry(core: &Core) -> &Registry<Self> {
                &core.inner.$field
            }
        }
    )*};
}

registered!(Account => accounts, Pool => pools, Node => nodes, Job => jobs, Task => tasks, Schedule => schedules, App => apps);

struct CoreInner {
    store: EventStore,
    clock: Arc<dyn Clock>,
    config: CoreConfig,
    accounts: Registry<Account>,
    pools: Registry<Pool>,
    nodes: Registry<Node>,
    jobs: Registry<Job>,
    tasks: Registry<Task>,
    schedules: Registry<Schedule>,
    apps: Registry<App>,
}

/// The front door to every entity. Cheap to clone. Must be used inside a
/// running actix system (the actors live on the current arbiter).
#[derive(Clone)]
pub struct Core {
    inner: Arc<CoreInner>,
}

/// Live actor counts per kind, for the console and passivation tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActorCounts {
    pub accounts: usize,
    pub pools: usize,
    pub nodes: usize,
    pub jobs: usize,
    pub tasks: usize,
}

impl Core {
    pub fn new(store: EventStore, clock: Arc<dyn Clock>, config: CoreConfig) -> Self {
        Core {
            inner: Arc::new(CoreInner {
                store,
                clock,
                config,
                accounts: Registry::default(),
                pools: Registry::default(),
                nodes: Registry::default(),
                jobs: Registry::default(),
                tasks: Registry::default(),
                schedules: Registry::default(),
                apps: Registry::default(),
            }),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn actor_counts(&self) -> ActorCounts {
        ActorCounts {
            accounts: self.inner.accounts.len(),
            pools: self.inner.pools.len(),
            nodes: self.inner.nodes.len(),
            jobs: self.inner.jobs.len(),
            tasks: self.inner.tasks.len(),
        }
    }

    /// Runs a command on the entity of `stream`. Conflicts with concurrent
    /// writers are retried up to [`APPEND_CONFLICT_RETRIES_MAX`] times, then
    /// reported as [`RejectionCode::TooBusy`].
    pub async fn execute<A: Registered>(
        &self,
        stream: &StreamId,
        command: A::Command,
        ctx: Ctx,
    ) -> Result<Outcome<A>, CoreError> {
        self.execute_with(stream, command, ctx, Vec::new()).await
    }

    /// [`execute`](Self::execute), committing `extra` appends atomically
    /// with the command's events.
    pub async fn execute_with<A: Registered>(
        &self,
        stream: &StreamId,
        command: A::Command,
        ctx: Ctx,
        extra: Vec<StreamAppend>,
    ) -> Result<Outcome<A>, CoreError> {
        check_kind::<A>(stream)?;
        for attempt in 0..APPEND_CONFLICT_RETRIES_MAX {
            let addr =
                A::registry(self).get_or_start(stream, &self.inner.store, &self.inner.config)?;
            match addr
                .send(Execute::<A> {
                    command: command.clone(),
                    ctx: ctx.clone(),
                    extra: extra.clone(),
                })
                .await
            {
                Ok(Err(CoreError::Store(e @ StoreError::Conflict { .. })))
                    if !e_is_extra(&e, &extra) =>
                {
                    conflict_backoff(attempt).await
                }
                Ok(result) => return result,
                // The actor stopped between lookup and send: start a new one.
                Err(MailboxError::Closed) => continue,
                Err(e) => return Err(CoreError::Unavailable(e.to_string())),
            }
        }
        Err(Rejection::new(
            RejectionCode::TooBusy,
            format!("{stream} kept changing; send the request again"),
        )
        .into())
    }

    /// Whether the stream has any event, answered from a running actor
    /// when there is one (no read), else from the store.
    pub fn exists<A: Registered>(&self, stream: &StreamId) -> Result<bool, CoreError> {
        Ok(A::registry(self).is_live(stream) || self.inner.store.stream_version(stream)? > 0)
    }

    /// The entity's current state and version.
    pub async fn state<A: Registered>(&self, stream: &StreamId) -> Result<Versioned<A>, CoreError> {
        check_kind::<A>(stream)?;
        for _ in 0..APPEND_CONFLICT_RETRIES_MAX {
            let addr =
                A::registry(self).get_or_start(stream, &self.inner.store, &self.inner.config)?;
            match addr.send(GetState::<A>::default()).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => continue,
                Err(e) => return Err(CoreError::Unavailable(e.to_string())),
            }
        }
        Err(CoreError::Unavailable(format!(
            "the actor of {stream} kept stopping"
        )))
    }

    /// Adds a task to a job: the task's creation and the job's count change
    /// are one atomic append. Decided on the job actor's current state.
    pub async fn add_task(
        &self,
        account: &AccountName,
        job_id: &JobId,
        spec: TaskSpec,
        ctx: Ctx,
    ) -> Result<Outcome<Task>, CoreError> {
        let mut added = self
            .add_tasks(account, job_id, vec![spec], ctx, Vec::new())
            .await?;
        Ok(added.remove(0))
    }

    /// Adds tasks to a job in one atomic, durable append: every task's
    /// creation, the job's count changes and `extra`, or nothing. A task id
    /// that exists (or appears twice) refuses the whole batch.
    /// Creates a job and adds `tasks` to it (its manager) in one atomic
    /// append: a crash can leave the job with all of them or not at all,
    /// never a job without its manager.
    pub async fn create_job_with_tasks(
        &self,
        spec: crate::domain::job::JobSpec,
        tasks: Vec<TaskSpec>,
        ctx: Ctx,
        extra: Vec<StreamAppend>,
    ) -> Result<(), CoreError> {
        let job_stream = StreamId::job(&spec.account, &spec.id);
        let create = crate::domain::job::JobCommand::CreateJob { spec: spec.clone() };
        if tasks.is_empty() && spec.auto_pool.is_none() {
            return self
                .execute_with::<Job>(&job_stream, create, ctx, extra)
                .await
                .map(|_| ());
        }
        for attempt in 0..APPEND_CONFLICT_RETRIES_MAX {
            let current: Versioned<Job> = self.state(&job_stream).await?;
            let mut job = current.state.clone();
            let mut job_events = job.decide(&create, &ctx)?;
            for e in &job_events {
                job.apply(e);
            }
            let (more, mut appends, _) = new_tasks(&spec.account, &spec.id, &job, &tasks, &ctx)?;
            job_events.extend(more);
            appends.insert(
                0,
                append_of(&job_stream, expected_after(current.version), &job_events)?,
            );
            // A job's own pool is made in the same append: never a job
            // without its pool, nor a pool left by a job that was refused.
            if let Some(auto) = &spec.auto_pool {
                let pool_stream = StreamId::pool(&spec.account, &spec.pool);
                let pool: Versioned<crate::domain::pool::Pool> = self.state(&pool_stream).await?;
                let command = crate::domain::pool::PoolCommand::CreatePool {
                    spec: auto.pool.clone(),
                };
                let events = pool.state.decide(&command, &ctx).map_err(|mut r| {
                    if r.code == RejectionCode::PoolExists {
                        r.detail = format!(
                            "{}; an auto pool takes its job's id, so choose another job id",
                            r.detail
                        );
                    }
                    r
                })?;
                appends.push(append_of(
                    &pool_stream,
                    expected_after(pool.version),
                    &events,
                )?);
            }
            appends.extend(extra.iter().cloned());
            // Someone else made the job (or its task) meanwhile: the next
            // decision says so.
            match self.inner.store.append(appends, ctx.causation()).await {
                Ok(_) => return Ok(()),
                Err(e) => after_conflict(e, &extra, attempt).await?,
            }
        }
        Err(Rejection::new(
            RejectionCode::TooBusy,
            format!("job {} changed too often while it was made", spec.id),
        )
        .into())
    }

    /// A batch's dependencies checked against its job: the job uses
    /// them, and no cycle. (That each parent exists is asked of placement's
    /// picture by the service, which holds the job's tasks by id.) Returns
    /// the batch parents first, the order it is appended in (the
    /// scheduler's picture meets parents first).
    async fn check_dependencies(
        &self,
        account: &AccountName,
        job_id: &JobId,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<TaskSpec>, CoreError> {
        if specs.iter().all(|s| s.depends_on.is_empty()) {
            return Ok(specs);
        }
        let job: Versioned<Job> = self.state(&StreamId::job(account, job_id)).await?;
        if job
            .state
            .spec
            .as_ref()
            .is_some_and(|s| s.dependencies.is_none())
        {
            let t = specs
                .iter()
                .find(|s| !s.depends_on.is_empty())
                .map(|s| s.id.as_str());
            return Err(Rejection::new(
                RejectionCode::DependenciesNotEnabled,
                format!(
                    "task {} has parents, but job {job_id} was created without task dependencies; \
                     create the job with --dependencies (it cannot be turned on later)",
                    t.unwrap_or("?")
                ),
            )
            .into());
        }
        let order = crate::domain::task_deps::order_batch(&specs)?;
        let mut slots: Vec<Option<TaskSpec>> = specs.into_iter().map(Some).collect();
        Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
    }

    pub async fn add_tasks(
        &self,
        account: &AccountName,
        job_id: &JobId,
        specs: Vec<TaskSpec>,
        ctx: Ctx,
        extra: Vec<StreamAppend>,
    ) -> Result<Vec<Outcome<Task>>, CoreError> {
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        if let Some(dup) = specs.iter().find(|s| !seen.insert(&s.id)) {
            return Err(
                Rejection::invalid(format!("task {} appears twice in the batch", dup.id)).into(),
            );
        }
        let job_stream = StreamId::job(account, job_id);
        let specs = self.check_dependencies(account, job_id, specs).await?;
        for attempt in 0..APPEND_CONFLICT_RETRIES_MAX {
            let job_state: Versioned<Job> = self.state(&job_stream).await?;
            let (job_events, mut appends, outcomes) =
                new_tasks(account, job_id, &job_state.state, &specs, &ctx)?;
            // Only the job actor changes a job's lifecycle, and only
            // lifecycle decides whether tasks may be added, so the count
            // change needs no expected version (it commutes).
            appends.push(append_of(&job_stream, ExpectedVersion::Any, &job_events)?);
            appends.extend(extra.iter().cloned());
            match self.inner.store.append(appends, ctx.causation()).await {
                Ok(written) => {
                    let created = specs.iter().zip(&outcomes).map(|(spec, o)| {
                        let known = Versioned {
                            version: o.version,
                            state: o.state.clone(),
                        };
                        (StreamId::task(account, job_id, &spec.id), known)
                    });
                    self.inner.tasks.rest_new(created, written.last_position);
                    return Ok(outcomes);
                }
                Err(StoreError::Conflict { stream, .. })
                    if stream.kind() == crate::store::StreamKind::Task =>
                {
                    let task = stream
                        .segments()
                        .last()
                        .copied()
                        .unwrap_or_default()
                        .to_string();
                    return Err(Rejection::new(
                        RejectionCode::TaskExists,
                        format!("task {task} exists in job {job_id}; task ids are never reused"),
                    )
                    .into());
                }
                Err(e) => after_conflict(e, &extra, attempt).await?,
            }
        }
        Err(Rejection::new(
            RejectionCode::TooBusy,
            format!("{job_stream} kept changing; send the request again"),
        )
        .into())
    }
}

/// Whether a conflict is on one of the `extra` streams (an idempotency
/// record written meanwhile): retrying cannot help, the caller decides.
fn e_is_extra(e: &StoreError, extra: &[StreamAppend]) -> bool {
    matches!(e, StoreError::Conflict { stream, .. } if extra.iter().any(|a| &a.stream == stream))
}

/// Waits a little longer after each conflict: the competing append is
/// usually waiting for its fsync, and becomes readable once it is durable.
/// A task's append for each spec (its stream must not exist: the store's
/// check catches an existing one without a read per task), the job's
/// `JobTaskAdded` events, and each task's outcome.
#[allow(clippy::type_complexity)]
fn new_tasks(
    account: &AccountName,
    job_id: &JobId,
    job: &Job,
    specs: &[TaskSpec],
    ctx: &Ctx,
) -> Result<
    (
        Vec<crate::domain::job::JobEvent>,
        Vec<StreamAppend>,
        Vec<Outcome<Task>>,
    ),
    CoreError,
> {
    let mut appends = Vec::with_capacity(specs.len() + 2);
    let mut job_events = Vec::with_capacity(specs.len());
    let mut outcomes = Vec::with_capacity(specs.len());
    for spec in specs {
        let (job_part, task_events) = task::add_task(job, &Task::default(), spec, ctx)?;
        job_events.extend(job_part);
        let mut state = Task::default();
        for e in &task_events {
            state.apply(e);
        }
        appends.push(append_of(
            &StreamId::task(account, job_id, &spec.id),
            ExpectedVersion::NoStream,
            &task_events,
        )?);
        outcomes.push(Outcome {
            version: task_events.len() as u64,
            events: task_events,
            state,
        });
    }
    Ok((job_events, appends, outcomes))
}

/// A command decided on an entity's state: its events, the state after
/// them, and the appends that record them (the entity's own stream first,
/// then what the aggregate links to it; none when nothing happened).
pub(crate) struct Decision<A: Aggregate> {
    pub events: Vec<A::Event>,
    pub after: A,
    pub appends: Vec<StreamAppend>,
}

/// Decides `command` on `current`, the state of `stream`: what an entity
/// actor does with a command, and a batch with each of its commands.
pub(crate) fn decide<A: Aggregate>(
    stream: &StreamId,
    current: &Versioned<A>,
    command: &A::Command,
    ctx: &Ctx,
) -> Result<Decision<A>, CoreError> {
    let events = current.state.decide(command, ctx)?;
    let mut after = current.state.clone();
    for event in &events {
        after.apply(event);
    }
    let mut appends = Vec::new();
    if !events.is_empty() {
        appends.push(append_of(stream, expected_after(current.version), &events)?);
        appends.extend(A::linked_appends(&current.state, &after)?);
    }
    Ok(Decision {
        events,
        after,
        appends,
    })
}

/// What a stream's version must be for an append after reading it.
fn expected_after(version: u64) -> ExpectedVersion {
    match version {
        0 => ExpectedVersion::NoStream,
        v => ExpectedVersion::Exact(v),
    }
}

/// One stream's events, encoded for an append.
fn append_of<E: domain::DomainEvent>(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[E],
) -> Result<StreamAppend, CoreError> {
    Ok(StreamAppend {
        stream: stream.clone(),
        expected,
        events: events
            .iter()
            .map(domain::to_new_event)
            .collect::<Result<_, _>>()?,
    })
}

/// After a refused append: Ok to decide again (after a pause), or the
/// error to return (an extra append's conflict is the caller's to name).
async fn after_conflict(
    e: StoreError,
    extra: &[StreamAppend],
    attempt: usize,
) -> Result<(), CoreError> {
    match e {
        e @ StoreError::Conflict { .. } if e_is_extra(&e, extra) => Err(e.into()),
        StoreError::Conflict { .. } => {
            conflict_backoff(attempt).await;
            Ok(())
        }
        e => Err(e.into()),
    }
}

async fn conflict_backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_micros(100 << attempt.min(6))).await;
}

fn check_kind<A: Aggregate>(stream: &StreamId) -> Result<(), CoreError> {
    if stream.kind() != A::KIND {
        return Err(Rejection::invalid(format!("{stream} is not a {:?} stream", A::KIND)).into());
    }
    Ok(())
}
