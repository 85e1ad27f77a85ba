//! The domain: one aggregate per entity kind, each a state machine.
//!
//! Every aggregate has an imperative command enum, a past-tense event enum,
//! a state, `decide` (all the rules; may refuse with a [`Rejection`]) and
//! `apply` (the only way state changes; pure and total). Live handling and
//! replay run the same `apply`. `decide` gets time, ids and the principal
//! through [`Ctx`] and never reads a clock.

pub mod account;
pub mod app;
pub mod autoscale;
pub mod job;
pub mod job_prep;
pub mod layouts;
pub mod node;
pub mod pool;
pub mod pool_tasks;
pub mod rejection;
pub mod request;
pub mod schedule;
pub mod spec;
pub mod task;
pub mod task_deps;
pub mod task_spec;
pub mod upcast;

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use rejection::{Rejection, RejectionCode};

use crate::codec::{self, CodecError};
use crate::store::{Envelope, NewEvent, StreamKind};
use crate::types::{Causation, Principal, RequestId, Secret, Timestamp};

/// Everything `decide` may need from outside: the time, fresh ids, who asks.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub now: Timestamp,
    pub principal: Principal,
    pub request_id: RequestId,
    /// Random material for new keys and ids, drawn by the caller.
    pub fresh: [uuid::Uuid; 4],
}

impl Ctx {
    /// A fresh 256-bit key made of two of the fresh uuids (`slot` 0 or 1).
    pub fn fresh_key(&self, slot: usize) -> Secret {
        let a = self.fresh[(2 * slot) % 4].as_u128();
        let b = self.fresh[(2 * slot + 1) % 4].as_u128();
        Secret::new(format!("{a:032x}{b:032x}"))
    }

    pub fn causation(&self) -> Causation {
        Causation {
            request_id: self.request_id,
            principal: self.principal.clone(),
        }
    }

    /// A live context for work the server does itself (supervisors),
    /// with a fresh request id.
    pub fn system(clock: &dyn crate::clock::Clock, component: &str) -> Self {
        Ctx::live(
            clock,
            Principal::System {
                component: component.into(),
            },
            crate::clock::new_request_id(),
        )
    }

    /// A context with real time and randomness, for live commands.
    pub fn live(
        clock: &dyn crate::clock::Clock,
        principal: Principal,
        request_id: RequestId,
    ) -> Self {
        use crate::clock::new_uuid;
        Ctx {
            now: clock.now(),
            principal,
            request_id,
            fresh: [new_uuid(), new_uuid(), new_uuid(), new_uuid()],
        }
    }
}

/// A past-tense fact about one aggregate.
pub trait DomainEvent:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The kind of stream its events belong to.
    const KIND: crate::store::StreamKind;
    /// The variant's name, stored in the envelope.
    fn event_type(&self) -> &'static str;
    /// Layout version of this variant's payload, read from the list of
    /// layout changes (see [`layouts`]): no event type can forget it.
    fn schema_version(&self) -> u16 {
        layouts::current_schema(Self::KIND, self.event_type())
    }
}

/// An entity kind's state machine.
pub trait Aggregate:
    Default
    + Clone
    + Unpin
    + Debug
    + PartialEq
    + Serialize
    + DeserializeOwned
    + JsonSchema
    + Send
    + Sync
    + 'static
{
    type Command: Debug + Clone + Send + Sync + 'static;
    type Event: DomainEvent;
    /// Which streams hold this aggregate.
    const KIND: StreamKind;
    /// Layout version of the state in snapshots. Bump it when the state's
    /// fields change: older snapshots are then ignored and rebuilt from the
    /// log (they are only a cache).
    const STATE_SCHEMA: u32;

    /// All the rules: the events a command produces, or why it is refused.
    fn decide(&self, command: &Self::Command, ctx: &Ctx) -> Result<Vec<Self::Event>, Rejection>;

    /// Folds one event into the state. Pure and total: an event that cannot
    /// follow the current state is a bug in `decide` or a damaged log, and
    /// panics with the entity and its state.
    fn apply(&mut self, event: &Self::Event);

    /// Whether this entity will never change again except by deletion, so
    /// its actor may be passivated at once.
    fn is_finished(&self) -> bool;

    /// Events for other streams that must be written in the same atomic
    /// append as a change from `before` to `after` (a task's move between
    /// buckets changes its job's counts).
    fn linked_appends(
        _before: &Self,
        _after: &Self,
    ) -> Result<Vec<crate::store::StreamAppend>, CodecError> {
        Ok(Vec::new())
    }

    /// Cross-checks the state's own invariants; used densely by tests.
    fn sanity_check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Encodes a domain event for the log.
pub fn to_new_event<E: DomainEvent>(event: &E) -> Result<NewEvent, CodecError> {
    Ok(NewEvent {
        event_type: event.event_type().to_string(),
        schema_version: event.schema_version(),
        payload: codec::encode(event)?,
    })
}

/// Runs `command` from `principal`, now, on an aggregate held in memory
/// and returns the envelopes its events would have in the log, at
/// `position` + 1 on (which it advances): for benchmarks and tests that
/// feed a log's readers without a store. `version` is the stream's,
/// advanced too. Errs with the rejection, or the codec's error.
pub fn decide_to_envelopes<A: Aggregate>(
    state: &mut A,
    (version, position): (&mut u64, &mut u64),
    stream: &crate::store::StreamId,
    command: A::Command,
    principal: Principal,
) -> Result<Vec<Envelope>, String> {
    let ctx = &Ctx::live(
        &crate::clock::SystemClock,
        principal,
        crate::clock::new_request_id(),
    );
    let events = state.decide(&command, ctx).map_err(|r| r.to_string())?;
    let mut out = Vec::with_capacity(events.len());
    for event in &events {
        state.apply(event);
        *position += 1;
        *version += 1;
        out.push(
            to_envelope(event, stream, (*version, *position), ctx).map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

/// The envelope `event` would have in the log as `stream`'s `version` at
/// `position`, recorded with `ctx`'s time and causation: for benchmarks and
/// tests that feed a log's readers without a store.
pub fn to_envelope<E: DomainEvent>(
    event: &E,
    stream: &crate::store::StreamId,
    (version, position): (u64, u64),
    ctx: &Ctx,
) -> Result<Envelope, CodecError> {
    let new = to_new_event(event)?;
    Ok(Envelope {
        position,
        stream: stream.clone(),
        stream_version: version,
        recorded_at: ctx.now,
        event_type: new.event_type,
        schema_version: new.schema_version,
        causation: Causation {
            request_id: ctx.request_id,
            principal: ctx.principal.clone(),
        },
        payload: new.payload,
    })
}

/// Decodes an envelope's payload into the current event layout, through
/// the upcasters if it was written by an older layout.
pub fn decode_event<E: DomainEvent>(
    kind: StreamKind,
    envelope: &Envelope,
) -> Result<E, CodecError> {
    let payload = upcast::upcast(
        kind,
        &envelope.event_type,
        envelope.schema_version,
        &envelope.payload,
    )?;
    codec::decode(&payload)
}

/// Applies an event, turning the panic of an impossible transition (a bug
/// or a damaged log) into an error, so that a server or a replay reports
/// it instead of dying. After an error the state may be half-changed and
/// must be discarded.
pub fn apply_checked<A: Aggregate>(state: &mut A, event: &A::Event) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.apply(event))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "apply panicked".into())
    })
}

/// Rebuilds a state by folding events.
pub fn fold<A: Aggregate>(mut state: A, envelopes: &[Envelope]) -> Result<A, CodecError> {
    for envelope in envelopes {
        let event: A::Event = decode_event(A::KIND, envelope)?;
        apply_checked(&mut state, &event).map_err(|why| {
            CodecError::Decode(format!(
                "{} v{} ({}) does not apply: {why}",
                envelope.stream, envelope.stream_version, envelope.event_type
            ))
        })?;
    }
    Ok(state)
}

/// A state plus the stream version it reflects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versioned<A> {
    pub version: u64,
    pub state: A,
}

/// Helper for `decide`: a rejection unless `cond` holds.
pub(crate) fn ensure(
    cond: bool,
    code: RejectionCode,
    detail: impl FnOnce() -> String,
) -> Result<(), Rejection> {
    if cond {
        Ok(())
    } else {
        Err(Rejection::new(code, detail()))
    }
}

/// Environment variables given to a task or start task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// Longest command line accepted.
pub const COMMAND_LINE_BYTES_MAX: usize = 32 * 1024;
/// Most environment variables on one task.
pub const ENV_VARS_MAX: usize = 256;
/// Longest value of one environment variable.
pub const ENV_VALUE_BYTES_MAX: usize = 32 * 1024;
/// Most bytes of all of a task's (or start task's) environment together.
pub const ENV_BYTES_MAX: usize = 256 * 1024;
/// Longest display name.
pub const DISPLAY_NAME_CHARS_MAX: usize = 1024;

pub(crate) fn validate_command_line(what: &str, line: &str) -> Result<(), Rejection> {
    ensure(!line.trim().is_empty(), RejectionCode::InvalidValue, || {
        format!("{what} command line is empty")
    })?;
    ensure(
        line.len() <= COMMAND_LINE_BYTES_MAX,
        RejectionCode::InvalidValue,
        || {
            format!(
                "{what} command line is {} bytes; at most {COMMAND_LINE_BYTES_MAX}",
                line.len()
            )
        },
    )
}

pub(crate) fn validate_env(what: &str, env: &[EnvVar]) -> Result<(), Rejection> {
    ensure(
        env.len() <= ENV_VARS_MAX,
        RejectionCode::InvalidValue,
        || {
            format!(
                "{what} has {} environment variables; at most {ENV_VARS_MAX}",
                env.len()
            )
        },
    )?;
    for var in env {
        let ok = !var.name.is_empty()
            && !var.name.starts_with(|c: char| c.is_ascii_digit())
            && var
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        ensure(ok, RejectionCode::InvalidValue, || {
            format!("{what} environment variable name {:?} must be letters, digits and '_', not starting with a digit", var.name)
        })?;
        // The one lote sets in a task's own variables: the schedule of a
        // job a schedule made (nothing depends on it being true).
        ensure(
            !var.name.starts_with("LOTE_") || var.name == SCHEDULE_ID_VAR,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "{what} environment variable {} uses the reserved LOTE_ prefix",
                    var.name
                )
            },
        )?;
        ensure(
            var.value.len() <= ENV_VALUE_BYTES_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "{what} environment variable {} is {} bytes; at most {ENV_VALUE_BYTES_MAX}",
                    var.name,
                    var.value.len()
                )
            },
        )?;
    }
    let total: usize = env.iter().map(|v| v.name.len() + v.value.len()).sum();
    ensure(total <= ENV_BYTES_MAX, RejectionCode::InvalidValue, || {
        format!("{what} environment is {total} bytes in all; at most {ENV_BYTES_MAX}")
    })?;
    Ok(())
}

/// The variable a scheduled job's tasks carry: their schedule's id.
pub const SCHEDULE_ID_VAR: &str = "LOTE_SCHEDULE_ID";

pub(crate) fn validate_display_name(name: &str) -> Result<(), Rejection> {
    ensure(
        name.chars().count() <= DISPLAY_NAME_CHARS_MAX,
        RejectionCode::InvalidValue,
        || format!("display name is longer than {DISPLAY_NAME_CHARS_MAX} characters"),
    )
}

/// Serde helper so state maps serialize as JSON objects in a stable order.
pub type Map<K, V> = std::collections::BTreeMap<K, V>;
