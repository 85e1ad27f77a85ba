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

/// Random bytes drawn from the OS per refill of a thread's pool: one
/// `getrandom` call serves this many ids.
const RANDOM_POOL_BYTES: usize = 4096;

thread_local! {
    static RANDOM_POOL: std::cell::RefCell<RandomPool> =
        const { std::cell::RefCell::new(RandomPool { bytes: [0; RANDOM_POOL_BYTES], used: RANDOM_POOL_BYTES }) };
}

/// Bytes from the kernel's CSPRNG, handed out once each. Each live command
/// takes five ids and each signed call a nonce; a system call for every
/// one was a measurable share of the server's thread. The bytes are the
/// kernel's own (no user-space generator stretches them), each is used
/// once, and lote's processes exec whatever they fork, so no two processes
/// share a pool.
struct RandomPool {
    bytes: [u8; RANDOM_POOL_BYTES],
    used: usize,
}

impl RandomPool {
    fn take16(&mut self) -> [u8; 16] {
        if self.used + 16 > RANDOM_POOL_BYTES {
            self.refill();
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.bytes[self.used..self.used + 16]);
        // Handed out once: wipe what was given.
        self.bytes[self.used..self.used + 16].fill(0);
        self.used += 16;
        out
    }

    fn refill(&mut self) {
        let mut filled = 0;
        while filled < RANDOM_POOL_BYTES {
            // SAFETY: getrandom(2) writes at most the given length into
            // the buffer, which is ours and that long.
            let n = unsafe {
                libc::getrandom(
                    self.bytes[filled..].as_mut_ptr().cast(),
                    RANDOM_POOL_BYTES - filled,
                    0,
                )
            };
            if n > 0 {
                filled += n as usize;
            } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // No getrandom (a very old kernel): the uuid crate's own
                // source, 16 bytes at a time.
                #[allow(clippy::disallowed_methods)] // the one sanctioned use
                for chunk in self.bytes[filled..].chunks_mut(16) {
                    let id = uuid::Uuid::new_v4().into_bytes();
                    chunk.copy_from_slice(&id[..chunk.len()]);
                }
                filled = RANDOM_POOL_BYTES;
            }
        }
        self.used = 0;
    }
}

/// A fresh random id (version 4).
/// 16 bytes from the operating system's random source (a connection's
/// challenge).
pub fn random16() -> [u8; 16] {
    RANDOM_POOL.with(|pool| pool.borrow_mut().take16())
}

pub fn new_uuid() -> uuid::Uuid {
    let bytes = RANDOM_POOL.with(|pool| pool.borrow_mut().take16());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_and_never_repeat_across_refills() {
        let n = 3 * RANDOM_POOL_BYTES / 16 + 5;
        let ids: std::collections::HashSet<uuid::Uuid> = (0..n).map(|_| new_uuid()).collect();
        assert_eq!(ids.len(), n);
        assert!(ids
            .iter()
            .all(|id| id.get_version() == Some(uuid::Version::Random)));
        // Another thread has its own pool, drawn from the kernel apart.
        let other = std::thread::spawn(new_uuid).join().unwrap();
        assert!(!ids.contains(&other));
    }
}
