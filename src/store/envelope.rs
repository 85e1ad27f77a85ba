//! What one record of the log looks like, and how streams are named.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::types::{AccountName, Causation, JobId, NodeId, PoolId, SharedStr, TaskId, Timestamp};

/// The kinds of aggregate that own streams. The kind is the first segment
/// of a stream id, so one prefix scan finds every stream of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Account,
    Pool,
    Node,
    Job,
    Task,
    /// An idempotency record: which request (by its client request id)
    /// already did its work, and a hash of its body.
    Request,
    /// A job schedule (added last: stored kinds keep their encoding).
    Schedule,
    /// An app's published versions (added after schedules, for the same
    /// reason).
    App,
}

impl StreamKind {
    pub const ALL: [StreamKind; 8] = [
        StreamKind::Account,
        StreamKind::Pool,
        StreamKind::Node,
        StreamKind::Job,
        StreamKind::Task,
        StreamKind::Request,
        StreamKind::Schedule,
        StreamKind::App,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            StreamKind::Account => "account",
            StreamKind::Pool => "pool",
            StreamKind::Node => "node",
            StreamKind::Job => "job",
            StreamKind::Task => "task",
            StreamKind::Request => "request",
            StreamKind::Schedule => "schedule",
            StreamKind::App => "app",
        }
    }

    /// How many `/`-separated ids follow the prefix.
    fn id_segments(self) -> usize {
        match self {
            StreamKind::Account => 1,
            StreamKind::Pool
            | StreamKind::Job
            | StreamKind::Request
            | StreamKind::Schedule
            | StreamKind::App => 2,
            StreamKind::Node | StreamKind::Task => 3,
        }
    }
}

/// One aggregate instance's stream: `account/NAME`, `pool/ACCOUNT/POOL`,
/// `node/ACCOUNT/POOL/NODE`, `job/ACCOUNT/JOB`, `task/ACCOUNT/JOB/TASK`.
/// This is also how the CLI names entities (`lote audit job/acme/render`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct StreamId(
    #[serde(deserialize_with = "crate::types::shared_str")]
    #[schemars(with = "String")]
    SharedStr,
);

/// `kind/a/b...`: built by hand, as these ids are made on every hot path
/// and `format!` costs several times the copying.
fn joined(kind: &str, parts: &[&str]) -> SharedStr {
    let mut id = String::new();
    join_into(&mut id, kind, parts);
    id.into()
}

fn join_into(id: &mut String, kind: &str, parts: &[&str]) {
    id.reserve(kind.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    id.push_str(kind);
    for part in parts {
        id.push('/');
        id.push_str(part);
    }
}

impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Why a text is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an entity name: expected account/NAME, pool/ACCOUNT/POOL, node/ACCOUNT/POOL/NODE, job/ACCOUNT/JOB, task/ACCOUNT/JOB/TASK, schedule/ACCOUNT/SCHEDULE, app/ACCOUNT/APP or request/ACCOUNT/ID ({why})")]
pub struct StreamIdError {
    pub text: String,
    pub why: String,
}

impl StreamId {
    pub fn account(account: &AccountName) -> Self {
        StreamId(format!("account/{account}").into())
    }
    pub fn pool(account: &AccountName, pool: &PoolId) -> Self {
        StreamId(joined("pool", &[account.as_str(), pool.as_str()]))
    }
    pub fn node(account: &AccountName, pool: &PoolId, node: &NodeId) -> Self {
        StreamId(joined(
            "node",
            &[account.as_str(), pool.as_str(), node.as_str()],
        ))
    }
    pub fn job(account: &AccountName, job: &JobId) -> Self {
        StreamId(joined("job", &[account.as_str(), job.as_str()]))
    }
    pub fn task(account: &AccountName, job: &JobId, task: &TaskId) -> Self {
        let mut id = String::new();
        Self::write_task(&mut id, account, job, task);
        StreamId(id.into())
    }
    /// A task's stream from its job's stream (none if `self` is not a
    /// job's).
    pub fn task_of_job(&self, task: &str) -> Option<Self> {
        let rest = self.0.strip_prefix("job")?;
        let mut id = String::with_capacity(self.0.len() + task.len() + 2);
        id.push_str("task");
        id.push_str(rest);
        id.push('/');
        id.push_str(task);
        Some(StreamId(id.into()))
    }
    /// The job stream of a task's stream (none if `self` is not a task's).
    pub fn job_of_task(&self) -> Option<Self> {
        let rest = self.0.strip_prefix("task")?;
        let cut = rest.rfind('/')?;
        Some(StreamId(format!("job{}", &rest[..cut]).into()))
    }
    /// Writes a task's stream id into `buf` (cleared first): a lookup in a
    /// map keyed by stream ids (which borrow as `str`) needs no new string.
    pub fn write_task(buf: &mut String, account: &AccountName, job: &JobId, task: &TaskId) {
        buf.clear();
        join_into(
            buf,
            "task",
            &[account.as_str(), job.as_str(), task.as_str()],
        );
    }
    pub fn schedule(account: &AccountName, schedule: &JobId) -> Self {
        StreamId(joined("schedule", &[account.as_str(), schedule.as_str()]))
    }
    /// An app's stream: its published versions.
    pub fn app(account: &AccountName, app: &str) -> Self {
        StreamId(joined("app", &[account.as_str(), app]))
    }
    /// The idempotency record of client request `id` in `account`.
    pub fn request(account: &AccountName, id: &uuid::Uuid) -> Self {
        StreamId(format!("request/{account}/{id}").into())
    }

    /// Parses and validates a stream id typed by a person.
    pub fn parse(text: &str) -> Result<Self, StreamIdError> {
        let err = |why: String| StreamIdError {
            text: text.to_string(),
            why,
        };
        let mut parts = text.split('/');
        let prefix = parts.next().unwrap_or_default();
        let kind = StreamKind::ALL
            .into_iter()
            .find(|k| k.prefix() == prefix)
            .ok_or_else(|| err(format!("unknown kind {prefix:?}")))?;
        let ids: Vec<&str> = parts.collect();
        if ids.len() != kind.id_segments() {
            return Err(err(format!(
                "{} takes {} id(s) after the kind",
                prefix,
                kind.id_segments()
            )));
        }
        for id in &ids {
            crate::types::validate_id(kind.prefix(), id).map_err(|e| err(e.to_string()))?;
        }
        Ok(StreamId(text.into()))
    }

    pub fn kind(&self) -> StreamKind {
        // Asked of every event the supervisors fold: a `match`, not a
        // search of the kinds' prefixes.
        match self
            .0
            .split_once('/')
            .map_or(&*self.0, |(prefix, _)| prefix)
        {
            "task" => StreamKind::Task,
            "job" => StreamKind::Job,
            "node" => StreamKind::Node,
            "pool" => StreamKind::Pool,
            "account" => StreamKind::Account,
            "request" => StreamKind::Request,
            "schedule" => StreamKind::Schedule,
            "app" => StreamKind::App,
            // Every constructor and `parse` checks the prefix.
            other => unreachable!("stream id with an unknown kind {other:?}"),
        }
    }

    /// The ids after the kind, in order.
    pub fn segments(&self) -> Vec<&str> {
        self.0.split('/').skip(1).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// One recorded event with everything needed to audit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Place in the global log; 1 is the first event ever recorded.
    pub position: u64,
    pub stream: StreamId,
    /// Place in its stream; 1 is the stream's first event.
    pub stream_version: u64,
    /// When the store recorded it (never goes backwards along positions).
    pub recorded_at: Timestamp,
    /// The event's variant name, e.g. `TaskAdded`.
    pub event_type: String,
    /// Version of that event type's payload layout; upcasters lift old ones.
    pub schema_version: u16,
    pub causation: Causation,
    /// The event itself, in the log codec.
    #[schemars(with = "Vec<u8>")]
    #[serde(with = "crate::codec::bytes")]
    pub payload: Vec<u8>,
}

/// [`Envelope`] by reference, for encoding without copying: the same fields
/// in the same order, hence the same bytes.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub position: u64,
    pub stream: &'a StreamId,
    pub stream_version: u64,
    pub recorded_at: Timestamp,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub causation: &'a Causation,
    #[serde(with = "crate::codec::bytes")]
    pub payload: &'a [u8],
}

impl Envelope {
    pub(crate) fn as_ref(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            position: self.position,
            stream: &self.stream,
            stream_version: self.stream_version,
            recorded_at: self.recorded_at,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            causation: &self.causation,
            payload: &self.payload,
        }
    }
}

/// An event on its way into the log: the store adds position, version and
/// time.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

/// Bytes of the checksum appended to every stored record.
const CHECKSUM_BYTES: usize = 4;

/// Encodes a record as stored: codec bytes then a CRC-32 of them, so damage
/// that RocksDB's own checksums miss (a bad upcaster, a bug in a tool that
/// edits the directory) is still caught on read.
pub fn seal<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::with_capacity(256);
    seal_append(value, &mut bytes)?;
    Ok(bytes)
}

/// [`seal`] at the end of a reused buffer (the write path packs a whole
/// append into one); the same bytes. On error `out` is left as it was.
pub fn seal_append<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let from = out.len();
    if let Err(e) = codec::encode_append(value, out) {
        out.truncate(from);
        return Err(e);
    }
    let crc = crc32fast::hash(&out[from..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks and decodes a sealed record.
pub fn unseal<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < CHECKSUM_BYTES {
        return Err(format!(
            "record of {} bytes is shorter than its checksum",
            bytes.len()
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes(tail.try_into().expect("split at 4 bytes"));
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    codec::decode(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_and_reject() {
        let s = StreamId::parse("task/acme/render/frame-1").unwrap();
        assert_eq!(s.kind(), StreamKind::Task);
        assert_eq!(s.segments(), vec!["acme", "render", "frame-1"]);
        assert!(StreamId::parse("task/acme/render").is_err());
        assert!(StreamId::parse("widget/x").is_err());
        assert!(StreamId::parse("job/acme/a b").is_err());
        assert!(StreamId::parse("job/acme/").is_err());
        for kind in StreamKind::ALL {
            let ids = vec!["x"; kind.id_segments()].join("/");
            let parsed = StreamId::parse(&format!("{}/{ids}", kind.prefix())).unwrap();
            assert_eq!(parsed.kind(), kind, "every kind is told by its prefix");
        }
    }

    #[test]
    fn envelope_ref_encodes_like_the_envelope() {
        let envelope = Envelope {
            position: 9,
            stream: StreamId::parse("job/acme/j").unwrap(),
            stream_version: 3,
            recorded_at: Timestamp::from_micros(123),
            event_type: "JobEnabled".into(),
            schema_version: 1,
            causation: Causation {
                request_id: crate::types::RequestId(uuid::Uuid::from_u128(5)),
                principal: crate::types::Principal::Admin,
            },
            payload: vec![1, 2, 3, 200],
        };
        assert_eq!(seal(&envelope).unwrap(), seal(&envelope.as_ref()).unwrap());
        assert_eq!(
            unseal::<Envelope>(&seal(&envelope.as_ref()).unwrap()).unwrap(),
            envelope
        );
    }

    #[test]
    fn sealed_records_detect_flipped_bits() {
        let mut bytes = seal(&("hello".to_string(), 42u32)).unwrap();
        assert_eq!(
            unseal::<(String, u32)>(&bytes).unwrap(),
            ("hello".to_string(), 42)
        );
        bytes[1] ^= 0x40;
        assert!(unseal::<(String, u32)>(&bytes)
            .unwrap_err()
            .contains("checksum"));
        bytes[1] ^= 0x40;
        bytes[5] ^= 0x01;
        assert!(unseal::<(String, u32)>(&bytes)
            .unwrap_err()
            .contains("checksum"));
        assert!(unseal::<(String, u32)>(&bytes[..2]).is_err());
    }
}
