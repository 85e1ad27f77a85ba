//! Small value types shared by the log and the domain: ids, timestamps,
//! secrets, principals.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest user-chosen id (pool, job, task, account name). Same bound as
/// Azure Batch so that ids carry over.
pub const ID_CHARS_MAX: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} characters; at most {ID_CHARS_MAX} are allowed")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} id {id:?} may contain only letters, digits, '-' and '_'")]
    BadChar { kind: &'static str, id: String },
}

/// Checks a user-chosen id. The character set keeps ids safe inside stream
/// keys (no separator `/`, no NUL), file paths and shell lines.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), IdError> {
    // Every id decoded (each event folded) comes through here: a valid one
    // is all ASCII, so its bytes are its characters.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !id.is_empty() && id.len() <= ID_CHARS_MAX && id.bytes().all(allowed) {
        return Ok(());
    }
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = id.chars().count();
    if len > ID_CHARS_MAX {
        return Err(IdError::TooLong { kind, len });
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(IdError::BadChar {
            kind,
            id: id.to_string(),
        });
    }
    Ok(())
}

/// An immutable string whose clones share one allocation: the ids and
/// stream names that the control plane copies into its maps, events and
/// messages many times per task (a clone was a fresh allocation and a copy,
/// a tenth of the dispatch path). Equal to `str` in JSON and in the log.
pub type SharedStr = arcstr::ArcStr;

/// Reads a [`SharedStr`] with one allocation (serde's own goes through a
/// `Box<str>` first).
pub fn shared_str<'de, D: Deserializer<'de>>(d: D) -> Result<SharedStr, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = SharedStr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SharedStr, E> {
            Ok(text.into())
        }
    }
    d.deserialize_str(Text)
}

/// Defines every id newtype the same way: a validated string, transparent
/// in JSON and in the binary log.
macro_rules! define_id {
    ($($(#[$doc:meta])* $name:ident => $kind:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(#[schemars(with = "String")] SharedStr);

        // Validated on the way in too: ids arrive from the network, and an
        // unchecked `/` would let a request name another stream.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let id = shared_str(d)?;
                validate_id($kind, &id).map_err(serde::de::Error::custom)?;
                Ok(Self(id))
            }
        }

        impl $name {
            /// Validates and wraps an id.
            pub fn new(id: impl AsRef<str>) -> Result<Self, IdError> {
                let id = id.as_ref();
                validate_id($kind, id)?;
                Ok(Self(id.into()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    )*};
}

define_id! {
    /// An account's name, unique in the service.
    AccountName => "account";
    /// A pool's id, unique within its account.
    PoolId => "pool";
    /// A node's id, unique within its pool.
    NodeId => "node";
    /// A job's id, unique within its account.
    JobId => "job";
    /// A task's id, unique within its job.
    TaskId => "task";
}

/// A point in time with microsecond precision, in UTC.
///
/// Stored as an integer in the binary log (compact, exact) and shown as
/// RFC 3339 text wherever a human reads it (JSON, audit output).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }
    pub fn as_micros(self) -> i64 {
        self.0
    }
    pub fn from_datetime(at: chrono::DateTime<chrono::Utc>) -> Self {
        Timestamp(at.timestamp_micros())
    }
    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
    /// Parses RFC 3339 (`2026-11-27T10:00:00Z`) as written by [`fmt::Display`].
    pub fn parse(text: &str) -> Result<Self, chrono::ParseError> {
        Ok(Self::from_datetime(
            chrono::DateTime::parse_from_rfc3339(text)?.to_utc(),
        ))
    }
    pub fn plus_secs(self, secs: u64) -> Self {
        Timestamp(
            self.0
                .saturating_add((secs as i64).saturating_mul(1_000_000)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Timestamp::parse(&text).map_err(serde::de::Error::custom)
        } else {
            Ok(Timestamp(i64::deserialize(d)?))
        }
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// A secret (account key, pool secret). Kept in the log, because the server
/// needs it back after a restart, but never shown: `Debug` and every
/// human-readable serialization (JSON for audit, replay, the console) print
/// a placeholder. Only the binary log codec sees the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

/// What humans see instead of a secret's value.
pub const SECRET_REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for the few places that must use it (signing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(SECRET_REDACTED)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret; always shown as <redacted> outside the binary log."
        })
    }
}

/// Who caused an event. Recorded on every envelope: the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// The service administrator (manages accounts).
    Admin,
    /// A client authenticated with one of an account's keys.
    Account { account: AccountName },
    /// A node agent, authenticated with its node credential.
    Node {
        account: AccountName,
        pool: PoolId,
        node: NodeId,
    },
    /// lote itself: supervisors, timers, sagas.
    System { component: String },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str("admin"),
            Principal::Account { account } => write!(f, "account:{account}"),
            Principal::Node {
                account,
                pool,
                node,
            } => write!(f, "node:{account}/{pool}/{node}"),
            Principal::System { component } => write!(f, "system:{component}"),
        }
    }
}

/// Identifies one request end to end: the client's request id when it gave
/// one, else one the server made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

/// What caused an event: which request, by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Causation {
    pub request_id: RequestId,
    pub principal: Principal,
}

/// The name a value takes in JSON (`"completed"`, `"non_zero_exit"`), or
/// nothing for a value that is not a plain name.
pub fn json_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(JobId::new("job-1_a").is_ok());
        assert_eq!(JobId::new(""), Err(IdError::Empty { kind: "job" }));
        assert!(matches!(JobId::new("a/b"), Err(IdError::BadChar { .. })));
        assert!(matches!(
            JobId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        assert!(JobId::new("x".repeat(64)).is_ok());
        assert!(serde_json::from_str::<JobId>("\"a/b\"").is_err());
        let bad = crate::codec::encode(&"a/b".to_string()).unwrap();
        assert!(crate::codec::decode::<JobId>(&bad).is_err());
    }

    #[test]
    fn secrets_and_timestamps_differ_between_binary_and_json() {
        let secret = Secret::new("hunter2");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{SECRET_REDACTED}\""));
        let bytes = crate::codec::encode(&secret).unwrap();
        let back: Secret = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.expose(), "hunter2");
        assert_eq!(format!("{secret:?}"), SECRET_REDACTED);

        let at = Timestamp::parse("2026-11-27T10:00:00.000001Z").unwrap();
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            "\"2026-11-27T10:00:00.000001Z\""
        );
        let back: Timestamp = crate::codec::decode(&crate::codec::encode(&at).unwrap()).unwrap();
        assert_eq!(back, at);
    }
}
