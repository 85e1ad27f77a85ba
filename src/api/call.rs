//! The frames of a connection: the hello, signed calls, replies and
//! streamed events.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::response::{EventView, Response};
use crate::types::{AccountName, JobId, NodeId, PoolId};

/// Version of this protocol. A server speaks exactly its own version and
/// says so in its refusal, so an old client knows to upgrade.
pub const PROTOCOL_VERSION: u16 = 13;

/// First bytes of every hello, so that a stray client of another protocol
/// is told so instead of getting a decode error.
pub const MAGIC: [u8; 4] = *b"LOTE";

/// Everything a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    Hello(Hello),
    Call(Call),
    /// Ends the subscription started by call `id` (see [`Request::TailEvents`]).
    Cancel {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u16,
    /// Free text for the server's logs, e.g. `lote-cli/0.1.0`.
    pub client: String,
}

/// One signed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the client, unique among its calls in flight; echoed in
    /// the reply.
    pub id: u64,
    pub auth: Auth,
    /// The encoded [`Request`]. Kept as bytes because the signature covers
    /// exactly these bytes.
    #[serde(with = "crate::codec::bytes")]
    pub body: Vec<u8>,
    /// Bulk content beside the body: an upload chunk's bytes, empty for
    /// every other request. The signature covers its length, not its
    /// bytes; those are covered by the upload's SHA-256, which the signed
    /// [`Request::FinishUpload`] carries and the store checks before
    /// anything becomes visible. Hashing every chunk for its call as well
    /// would double the hashing of an upload on both sides.
    #[serde(with = "crate::codec::bytes")]
    pub bulk: Vec<u8>,
}

/// [`ClientFrame::Call`] borrowing its parts, so a call is encoded
/// straight into its frame without copying an upload chunk twice. It
/// encodes to the same bytes as the owned form (tested).
#[derive(Serialize)]
pub(crate) enum ClientFrameRef<'a> {
    #[allow(dead_code)] // Only its position matters: Call is the second variant.
    Hello(&'a Hello),
    Call(CallRef<'a>),
}

#[derive(Serialize)]
pub(crate) struct CallRef<'a> {
    pub id: u64,
    pub auth: &'a Auth,
    #[serde(with = "crate::codec::bytes")]
    pub body: &'a [u8],
    #[serde(with = "crate::codec::bytes")]
    pub bulk: &'a [u8],
}

/// Who signs, when, and the signature (see the `auth` module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub credential: Credential,
    /// Microseconds since the Unix epoch, by the client's clock.
    pub timestamp: i64,
    /// Random, never reused within the accepted clock skew.
    pub nonce: [u8; 16],
    /// HMAC-SHA256, see `string_to_sign` in the `auth` module.
    pub signature: [u8; 32],
}

/// Which key a call is signed with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Credential {
    /// The service administrator's key.
    Admin,
    /// One of an account's two keys.
    Account { account: AccountName },
    /// A pool's join token: only good for [`Request::JoinPool`].
    Join { account: AccountName, pool: PoolId },
    /// A node agent's own credential, handed out when it joined.
    Node {
        account: AccountName,
        pool: PoolId,
        node: NodeId,
    },
    /// A job manager task's key: its own job's tasks only.
    Job { account: AccountName, job: JobId },
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Admin => f.write_str("admin"),
            Credential::Account { account } => write!(f, "account:{account}"),
            Credential::Join { account, pool } => write!(f, "join:{account}/{pool}"),
            Credential::Node {
                account,
                pool,
                node,
            } => write!(f, "node:{account}/{pool}/{node}"),
            Credential::Job { account, job } => write!(f, "job:{account}/{job}"),
        }
    }
}

/// Everything the server sends.
// A frame is built, encoded and dropped: boxing its reply would cost an
// allocation per call for no memory held.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    Welcome {
        version: u16,
        server: String,
        frame_bytes_max: u32,
        /// Random, new for this connection: every call's signature covers
        /// it (see `auth::string_to_sign`).
        challenge: [u8; 16],
    },
    Reply {
        id: u64,
        result: Result<Response, ApiError>,
    },
    /// One event of the subscription started by call `id`.
    Event { id: u64, event: EventView },
    /// The server closes the connection after this, for the reason given.
    Goodbye { error: ApiError },
}
