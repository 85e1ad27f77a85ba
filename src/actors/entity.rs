//! The entity actor: a thin shell around one aggregate instance.
//!
//! A command is handled as catch up → decide → append → apply → reply. The
//! mailbox serialises commands to one entity, and `AtomicResponse` keeps the
//! next command waiting while an append is in flight. The actor stops itself
//! after [`CoreConfig::idle_passivate`] without messages, and at once when
//! its entity is finished (a completed task holds no memory).

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{decide, CoreConfig, CoreError, Decision, Outcome};
use crate::domain::{self, Aggregate, Ctx, Versioned};
use crate::store::{EventStore, Snapshot, StreamAppend, StreamId, WriteMark};

/// A stream with fewer events than this is rebuilt from its events alone.
const SHORT_STREAM_EVENTS: usize = 32;

/// Events read per batch while rebuilding.
const REBUILD_READ_BATCH: usize = 1024;

/// Runs a command against the entity.
pub struct Execute<A: Aggregate> {
    pub command: A::Command,
    pub ctx: Ctx,
    /// Appends to other streams that must commit with the command's events
    /// or not at all (an idempotency record); dropped if the command
    /// produces no events.
    pub extra: Vec<StreamAppend>,
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<Outcome<A>, CoreError>;
}

/// Reads the entity's current state.
pub struct GetState<A>(std::marker::PhantomData<A>);

impl<A> Default for GetState<A> {
    fn default() -> Self {
        GetState(std::marker::PhantomData)
    }
}

impl<A: Aggregate> Message for GetState<A> {
    type Result = Result<Versioned<A>, CoreError>;
}

/// Rebuilds an aggregate from its snapshot (if usable) and later events.
pub fn load<A: Aggregate>(
    store: &EventStore,
    stream: &StreamId,
    use_snapshot: bool,
) -> Result<Versioned<A>, CoreError> {
    let mut current = Versioned {
        version: 0,
        state: A::default(),
    };
    if use_snapshot {
        // Most streams (tasks) are far shorter than any snapshot interval
        // and have no snapshot: one read takes the whole stream, and the
        // snapshot lookup, a RocksDB get that would find nothing, is
        // skipped. Folding every event gives the state a snapshot would.
        let first = store.read_stream(stream, 1, SHORT_STREAM_EVENTS)?;
        if first.len() < SHORT_STREAM_EVENTS {
            fold_into(&mut current, &first)?;
            return Ok(current);
        }
        if let Some(snapshot) = store.load_snapshot(stream)? {
            if snapshot.state_schema == A::STATE_SCHEMA {
                match crate::codec::decode::<A>(&snapshot.state) {
                    Ok(state) => {
                        current = Versioned {
                            version: snapshot.stream_version,
                            state,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%stream, error = %e, "ignoring an undecodable snapshot")
                    }
                }
            }
        }
        if current.version == 0 {
            // No usable snapshot: the events read above are the start.
            fold_into(&mut current, &first)?;
        }
    }
    catch_up(store, stream, &mut current)?;
    Ok(current)
}

/// An aggregate from the whole of a short stream (no snapshot), as
/// [`load`] rebuilds one.
pub(super) fn from_events<A: Aggregate>(
    events: &[crate::store::Envelope],
) -> Result<Versioned<A>, CoreError> {
    let mut current = Versioned {
        version: 0,
        state: A::default(),
    };
    fold_into(&mut current, events)?;
    Ok(current)
}

/// Folds `events`, the next ones of the stream, into `current`.
fn fold_into<A: Aggregate>(
    current: &mut Versioned<A>,
    events: &[crate::store::Envelope],
) -> Result<(), CoreError> {
    if let Some(last) = events.last() {
        current.version = last.stream_version;
        current.state = domain::fold(std::mem::take(&mut current.state), events)?;
    }
    Ok(())
}

/// Folds the stream's events after `current.version` into it.
pub fn catch_up<A: Aggregate>(
    store: &EventStore,
    stream: &StreamId,
    current: &mut Versioned<A>,
) -> Result<(), CoreError> {
    loop {
        let batch = store.read_stream(stream, current.version + 1, REBUILD_READ_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        fold_into(current, &batch)?;
        if batch.len() < REBUILD_READ_BATCH {
            return Ok(());
        }
    }
}

pub struct Entity<A: Aggregate> {
    stream: StreamId,
    store: EventStore,
    current: Versioned<A>,
    snapshot_version: u64,
    /// A log position through which this actor knows its stream: the head
    /// when it last caught up, or its own last append. While the head has
    /// not moved, or the store's write mark for the stream is no later, no
    /// event can have been added to the stream, and the catch-up's RocksDB
    /// read is skipped.
    caught_up_at: u64,
    mark: WriteMark,
    config: CoreConfig,
    last_used: Instant,
    /// Called when the actor stops, to leave the registry.
    on_stop: Option<Box<dyn FnOnce() + Send>>,
}

impl<A: Aggregate> Entity<A> {
    /// `loaded_at`: the log head read before `current` was loaded.
    pub fn new(
        stream: StreamId,
        store: EventStore,
        current: Versioned<A>,
        loaded_at: u64,
        snapshot_version: u64,
        config: CoreConfig,
        on_stop: Box<dyn FnOnce() + Send>,
    ) -> Self {
        Entity {
            mark: WriteMark::of(&stream),
            stream,
            store,
            current,
            snapshot_version,
            caught_up_at: loaded_at,
            config,
            last_used: Instant::now(),
            on_stop: Some(on_stop),
        }
    }

    /// Folds in events others appended since the last look.
    fn catch_up(&mut self) -> Result<(), CoreError> {
        // Read the head first: an event published after this read moves
        // the head again, so the next call looks again.
        let head = self.store.head();
        if head > self.caught_up_at {
            if self.store.written_since(&self.mark, self.caught_up_at) {
                catch_up(&self.store, &self.stream, &mut self.current)?;
            }
            self.caught_up_at = head;
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) {
        let every = self.config.snapshot_every;
        if every == 0 || self.current.version < self.snapshot_version + every {
            return;
        }
        let state = match crate::codec::encode(&self.current.state) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "cannot encode a snapshot");
                return;
            }
        };
        let snapshot = Snapshot {
            stream_version: self.current.version,
            state_schema: A::STATE_SCHEMA,
            state,
        };
        match self.store.save_snapshot(&self.stream, &snapshot) {
            Ok(()) => self.snapshot_version = self.current.version,
            Err(e) => tracing::warn!(stream = %self.stream, error = %e, "cannot save a snapshot"),
        }
    }

    fn after_change(&mut self, ctx: &mut Context<Self>) {
        self.maybe_snapshot();
        if self.current.state.is_finished() {
            ctx.stop();
        }
    }
}

impl<A: Aggregate> Actor for Entity<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.config.idle_passivate;
        let check = (idle / 2).max(Duration::from_millis(50));
        ctx.run_interval(check, move |act, ctx| {
            if act.last_used.elapsed() >= idle {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(on_stop) = self.on_stop.take() {
            on_stop();
        }
    }
}

impl<A: Aggregate> Handler<GetState<A>> for Entity<A> {
    type Result = Result<Versioned<A>, CoreError>;

    fn handle(&mut self, _: GetState<A>, ctx: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        self.catch_up()?;
        // Other actors append to this stream too (job counts): snapshot
        // here as well, or a busy job would never get one.
        self.after_change(ctx);
        Ok(self.current.clone())
    }
}

impl<A: Aggregate> Handler<Execute<A>> for Entity<A> {
    type Result = AtomicResponse<Self, Result<Outcome<A>, CoreError>>;

    fn handle(&mut self, msg: Execute<A>, _: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        let prepared = self
            .catch_up()
            .and_then(|()| decide(&self.stream, &self.current, &msg.command, &msg.ctx));
        let Decision {
            events,
            after,
            mut appends,
        } = match prepared {
            Ok(d) => d,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        if !appends.is_empty() {
            appends.extend(msg.extra);
        }
        if appends.is_empty() {
            let outcome = Outcome {
                events,
                version: self.current.version,
                state: after,
            };
            return AtomicResponse::new(Box::pin(fut::ready(Ok(outcome))));
        }
        let store = self.store.clone();
        let causation = msg.ctx.causation();
        AtomicResponse::new(Box::pin(
            async move { store.append(appends, causation).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let written = result?;
                    // The entity's own stream is always the first append.
                    let version = *written
                        .stream_versions
                        .first()
                        .expect("own stream in the append result");
                    act.current = Versioned {
                        version,
                        state: after.clone(),
                    };
                    // The append expected the stream's exact version, so no
                    // other event of it lies before this one: the stream is
                    // known through the append's last position.
                    act.caught_up_at = act.caught_up_at.max(written.last_position);
                    act.after_change(ctx);
                    Ok(Outcome {
                        events,
                        version,
                        state: after,
                    })
                }),
        ))
    }
}
