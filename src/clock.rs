//! The only module allowed to read the wall clock or draw random ids
//! (`clippy.toml` forbids them elsewhere). Everything else receives time and
//! ids as inputs, so replay never asks the clock and tests are deterministic.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::types::{RequestId, Timestamp};

/// A source of "now".
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned use
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(chrono::Utc::now())
    }
}

/// A clock that tests move by hand.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.as_micros())))
    }
    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }
}

/// A fresh random id.
#[allow(clippy::disallowed_methods)] // the one sanctioned use
pub fn new_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// A fresh request id for work that no client request caused.
pub fn new_request_id() -> RequestId {
    RequestId(new_uuid())
}

/// A fresh secret key: 256 random bits, hex encoded.
pub fn new_key() -> String {
    let a = new_uuid().as_u128();
    let b = new_uuid().as_u128();
    format!("{a:032x}{b:032x}")
}
