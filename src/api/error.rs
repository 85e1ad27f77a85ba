//! Why a call or a connection failed, with what to do about it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::RejectionCode;

/// Why a call or a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The bytes are not a message of this protocol.
    Malformed,
    /// A frame over [`super::FRAME_BYTES_MAX`].
    TooLarge,
    /// The hello names a protocol version this server does not speak.
    UnsupportedVersion,
    /// A call before the hello, or a second hello.
    HandshakeRequired,
    /// Signature does not verify: wrong or old key, unknown account, or a
    /// tampered request. Deliberately not more specific.
    BadSignature,
    /// The signed timestamp is too far from the server's clock.
    ClockSkew,
    /// The nonce was already used: a replayed request.
    NonceReplayed,
    /// Signed correctly, but this credential may not make this request.
    PermissionDenied,
    /// The domain refused the command; see `rejection`.
    Rejected,
    /// The request id was used before for a different request.
    RequestIdReused,
    /// Too many connections or calls in flight; try again shortly.
    Overloaded,
    /// The server is shutting down.
    ShuttingDown,
    /// The connection was too slow or idle for too long.
    Timeout,
    /// The server failed (storage, a bug); nothing was half-done.
    Internal,
}

impl ErrorKind {
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded | ErrorKind::ShuttingDown | ErrorKind::Timeout
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// Set when `kind` is [`ErrorKind::Rejected`].
    pub rejection: Option<RejectionCode>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rejection {
            Some(code) => write!(f, "{} ({}): {}", code.name(), code.code(), self.message),
            None => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            rejection: None,
            message: message.into(),
        }
    }

    pub fn rejected(code: RejectionCode, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Rejected,
            rejection: Some(code),
            message: message.into(),
        }
    }

    pub fn retryable(&self) -> bool {
        match self.rejection {
            Some(code) => code.retryable(),
            None => self.kind.retryable(),
        }
    }
}

impl From<crate::domain::Rejection> for ApiError {
    fn from(r: crate::domain::Rejection) -> Self {
        ApiError::rejected(r.code, r.detail)
    }
}
