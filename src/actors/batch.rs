//! Many commands of one kind in one append: a placement round's
//! assignments.
//!
//! Sent one by one, each command costs its entity actor a start, a read of
//! its stream, a mailbox round trip and an append of its own: on the
//! dispatch benchmark that was two fifths of the control plane's thread.
//! A batch decides the commands of entities that have no live actor right
//! here, from their streams as the log has them, and appends every
//! outcome at once; the log's expected versions are the same guard an
//! actor's append has, so a writer that got in between makes the batch's
//! append fail whole, and its commands go through their actors instead.
//! An entity with a live actor always goes through it: that actor may
//! hold an append in flight.

use std::collections::{HashMap, HashSet};

use super::entity::from_events;
use super::{check_kind, decide, load, Core, CoreError, Outcome, Registered};
use crate::domain::{Aggregate, Ctx, Versioned};
use crate::store::{ExpectedVersion, StoreError, StreamAppend, StreamId};

/// One command decided here, waiting for the batch's append.
struct Decided<A: Aggregate> {
    index: usize,
    stream: StreamId,
    events: Vec<A::Event>,
    after: A,
}

/// Commands appended together at most. An append holds at most
/// `APPEND_EVENTS_MAX` (10,000) events, and a task's command writes two or
/// three with its job's count; a round over a thousand nodes plans tens of
/// thousands of assignments (their prefetch too), and one append of them
/// all was refused whole, round after round.
const BATCH_COMMANDS_MAX: usize = 1024;

impl Core {
    /// Runs each `(stream, command)` as [`Core::execute`] would, and
    /// answers each in order. One causation (`ctx`) covers the batch,
    /// appended in chunks of [`BATCH_COMMANDS_MAX`] commands.
    pub async fn execute_batch<A: Registered>(
        &self,
        mut commands: Vec<(StreamId, A::Command)>,
        ctx: Ctx,
    ) -> Vec<Result<Outcome<A>, CoreError>> {
        let mut outcomes = Vec::with_capacity(commands.len());
        while !commands.is_empty() {
            let rest = commands.split_off(commands.len().min(BATCH_COMMANDS_MAX));
            outcomes.extend(self.execute_chunk::<A>(commands, ctx.clone()).await);
            commands = rest;
        }
        outcomes
    }

    async fn execute_chunk<A: Registered>(
        &self,
        commands: Vec<(StreamId, A::Command)>,
        ctx: Ctx,
    ) -> Vec<Result<Outcome<A>, CoreError>> {
        let mut results: Vec<Option<Result<Outcome<A>, CoreError>>> =
            commands.iter().map(|_| None).collect();
        let mut decided = Vec::new();
        let mut appends = Vec::new();
        let mut linked = Vec::new();
        let mut seen = HashSet::with_capacity(commands.len());
        // Each entity's state: as a batch left it, or read from the log
        // with the other entities' in one batched read.
        let mut known: Vec<Option<Versioned<A>>> = commands.iter().map(|_| None).collect();
        let mut here = Vec::with_capacity(commands.len());
        let mut unread = Vec::new();
        for (index, (stream, _)) in commands.iter().enumerate() {
            // A stream named twice goes through its actor the second time.
            if A::registry(self).is_live(stream) || !seen.insert(stream) {
                continue;
            }
            if let Err(e) = check_kind::<A>(stream) {
                results[index] = Some(Err(e));
                continue;
            }
            here.push(index);
            match A::registry(self).take_resting(stream, self.store()) {
                Some(resting) => known[index] = Some(resting.known),
                None => unread.push(index),
            }
        }
        self.read_starts(&commands, &unread, &mut known);
        for index in here {
            let (stream, command) = &commands[index];
            let current = match known[index].take() {
                Some(current) => current,
                None => match load::<A>(self.store(), stream, true) {
                    Ok(current) => current,
                    Err(e) => {
                        results[index] = Some(Err(e));
                        continue;
                    }
                },
            };
            match decide(stream, &current, command, &ctx) {
                Ok(d) if d.appends.is_empty() => {
                    results[index] = Some(Ok(Outcome {
                        events: d.events,
                        version: current.version,
                        state: d.after,
                    }));
                }
                Ok(d) => {
                    // The entity's own append first, then its linked ones.
                    let mut own = d.appends.into_iter();
                    appends.extend(own.next());
                    linked.extend(own);
                    decided.push(Decided {
                        index,
                        stream: stream.clone(),
                        events: d.events,
                        after: d.after,
                    });
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        appends.extend(merge_unconditional(linked));
        if !decided.is_empty() && names_each_stream_once(&appends) {
            match self.store().append(appends, ctx.causation()).await {
                Ok(written) => {
                    for (d, version) in decided.into_iter().zip(written.stream_versions) {
                        if !d.after.is_finished() {
                            let known = Versioned {
                                version,
                                state: d.after.clone(),
                            };
                            A::registry(self).rest(&d.stream, known, written.last_position);
                        }
                        results[d.index] = Some(Ok(Outcome {
                            events: d.events,
                            version,
                            state: d.after,
                        }));
                    }
                }
                // Someone wrote one of the streams meanwhile (each command
                // is decided again by its actor, which retries), or the
                // commands' events are more than one append holds (each
                // actor appends its own).
                Err(StoreError::Conflict { .. } | StoreError::TooLarge(_)) => {}
                Err(e) => {
                    for d in decided {
                        results[d.index] = Some(Err(e.clone().into()));
                    }
                }
            }
        }
        let rest = commands
            .into_iter()
            .zip(results.iter())
            .filter(|(_, done)| done.is_none())
            .map(|((stream, command), _)| {
                let ctx = ctx.clone();
                async move { self.execute::<A>(&stream, command, ctx).await }
            });
        let mut rest = futures_util::future::join_all(rest).await.into_iter();
        results
            .into_iter()
            .map(|done| match done {
                Some(result) => result,
                None => rest.next().unwrap_or_else(|| {
                    Err(CoreError::Unavailable(
                        "a batched command got no answer".into(),
                    ))
                }),
            })
            .collect()
    }

    /// The states of the entities at `unread` (indexes into `commands`)
    /// whose streams are short, from one batched read of their first
    /// events (a placement round's tasks past those a batch kept: one
    /// read for the round, not one per task). A longer stream, or a read
    /// that failed, is left to `load` one by one.
    fn read_starts<A: Registered>(
        &self,
        commands: &[(StreamId, A::Command)],
        unread: &[usize],
        known: &mut [Option<Versioned<A>>],
    ) {
        if unread.len() < 2 {
            return;
        }
        let streams = unread.iter().map(|&i| &commands[i].0);
        let Ok(starts) = self.store().read_stream_starts(streams) else {
            return;
        };
        for (&index, events) in unread.iter().zip(starts) {
            if let Some(events) = events {
                known[index] = from_events(&events).ok();
            }
        }
    }
}

/// Whether no stream has two appends (their versions would collide): else
/// every command goes through its actor.
fn names_each_stream_once(appends: &[StreamAppend]) -> bool {
    let mut streams = HashSet::with_capacity(appends.len());
    appends.iter().all(|a| streams.insert(&a.stream))
}

/// Appends that expect nothing of their stream (a job's task counts, which
/// commute), one per stream: an append names each stream once.
fn merge_unconditional(appends: Vec<StreamAppend>) -> Vec<StreamAppend> {
    let mut merged: Vec<StreamAppend> = Vec::with_capacity(appends.len().min(4));
    let mut at: HashMap<StreamId, usize> = HashMap::new();
    for append in appends {
        if append.expected != ExpectedVersion::Any {
            merged.push(append);
            continue;
        }
        match at.get(&append.stream) {
            Some(&i) => merged[i].events.extend(append.events),
            None => {
                at.insert(append.stream.clone(), merged.len());
                merged.push(append);
            }
        }
    }
    merged
}
