//! Request signing: HMAC-SHA256 over who, when, a nonce and the body's
//! hash. The key never travels; a captured call cannot be replayed (nonce)
//! or kept for later (timestamp window).

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::proto::{Auth, Credential};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted difference between the client's and the server's clock.
pub const CLOCK_SKEW_SECS_MAX: i64 = 15 * 60;

/// Most nonces remembered at once. Past this the server refuses new calls
/// as overloaded rather than forget nonces still inside the window (which
/// would let a replay through).
pub const NONCES_MAX: usize = 4_000_000;

/// The exact bytes a signature covers. Every field is fixed-width or
/// newline-free, so two different calls never share a string to sign.
/// The call id is covered too: it is transport bookkeeping, but a copy
/// with any bit changed must not be accepted.
pub fn string_to_sign(
    call_id: u64,
    credential: &Credential,
    timestamp: i64,
    nonce: &[u8; 16],
    body: &[u8],
) -> Vec<u8> {
    let body_hash = Sha256::digest(body);
    format!(
        "lote-v1\n{call_id}\n{credential}\n{timestamp}\n{}\n{}",
        hex(nonce),
        hex(&body_hash)
    )
    .into_bytes()
}

/// Signs call `call_id`'s body with `key`.
pub fn sign(
    key: &str,
    call_id: u64,
    credential: Credential,
    timestamp: i64,
    nonce: [u8; 16],
    body: &[u8],
) -> Auth {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&string_to_sign(
        call_id,
        &credential,
        timestamp,
        &nonce,
        body,
    ));
    Auth {
        credential,
        timestamp,
        nonce,
        signature: mac.finalize().into_bytes().into(),
    }
}

/// Whether `auth` is a signature of `body` by `key`. Constant time in the
/// signature's bytes.
pub fn verify(key: &str, call_id: u64, auth: &Auth, body: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&string_to_sign(
        call_id,
        &auth.credential,
        auth.timestamp,
        &auth.nonce,
        body,
    ));
    mac.verify_slice(&auth.signature).is_ok()
}

/// A secret derived from the server's own secret for one purpose (a pool's
/// join token, a node's credential). Derived rather than stored, so there
/// is nothing more to keep safe than the server secret.
pub fn derive_secret(server_secret: &str, purpose: &str) -> String {
    let mut mac =
        HmacSha256::new_from_slice(server_secret.as_bytes()).expect("hmac takes any key length");
    mac.update(purpose.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// SHA-256 of a request body, hex: what idempotency records compare.
pub fn body_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceRefusal {
    Replayed,
    Full,
}

/// Nonces seen within the clock-skew window, per credential.
#[derive(Default)]
pub struct NonceCache {
    /// (credential, nonce) → the time after which the entry can go: by
    /// then its timestamp is outside the window and the call is refused
    /// for that reason anyway.
    seen: HashMap<(Credential, [u8; 16]), i64>,
    next_sweep: i64,
}

impl NonceCache {
    /// Records a nonce; refuses one seen before. `now` and `timestamp` in
    /// microseconds; the caller has already checked the window.
    pub fn check_and_insert(
        &mut self,
        credential: &Credential,
        nonce: [u8; 16],
        timestamp: i64,
        now: i64,
    ) -> Result<(), NonceRefusal> {
        let window = CLOCK_SKEW_SECS_MAX * 1_000_000;
        if now >= self.next_sweep {
            self.seen.retain(|_, expires| *expires >= now);
            self.next_sweep = now + 10_000_000;
        }
        let key = (credential.clone(), nonce);
        if let Some(expires) = self.seen.get(&key) {
            if *expires >= now {
                return Err(NonceRefusal::Replayed);
            }
        }
        if self.seen.len() >= NONCES_MAX {
            return Err(NonceRefusal::Full);
        }
        self.seen.insert(key, timestamp.saturating_add(window));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AccountName;

    fn account() -> Credential {
        Credential::Account {
            account: AccountName::new("acme").unwrap(),
        }
    }

    #[test]
    fn signatures_verify_only_with_the_key_and_the_same_body() {
        let auth = sign("k1", 5, account(), 1_000, [7; 16], b"body");
        assert!(verify("k1", 5, &auth, b"body"));
        assert!(!verify("k1", 6, &auth, b"body"));
        assert!(!verify("k2", 5, &auth, b"body"));
        assert!(!verify("k1", 5, &auth, b"bodY"));
        let mut other = auth.clone();
        other.timestamp += 1;
        assert!(!verify("k1", 5, &other, b"body"));
        let mut other = auth.clone();
        other.credential = Credential::Admin;
        assert!(!verify("k1", 5, &other, b"body"));
    }

    #[test]
    fn nonces_are_refused_twice_and_forgotten_after_the_window() {
        let mut cache = NonceCache::default();
        let now = 10_000_000_000;
        assert_eq!(
            cache.check_and_insert(&account(), [1; 16], now, now),
            Ok(())
        );
        assert_eq!(
            cache.check_and_insert(&account(), [1; 16], now, now),
            Err(NonceRefusal::Replayed)
        );
        // The same nonce under another credential is another nonce.
        assert_eq!(
            cache.check_and_insert(&Credential::Admin, [1; 16], now, now),
            Ok(())
        );
        let later = now + (CLOCK_SKEW_SECS_MAX + 11) * 1_000_000;
        assert_eq!(
            cache.check_and_insert(&account(), [2; 16], later, later),
            Ok(())
        );
        assert_eq!(cache.len(), 1, "expired entries are swept");
    }

    #[test]
    fn derived_secrets_differ_by_purpose() {
        let a = derive_secret("s", "join:acme/p1");
        assert_eq!(a, derive_secret("s", "join:acme/p1"));
        assert_ne!(a, derive_secret("s", "join:acme/p2"));
        assert_ne!(a, derive_secret("t", "join:acme/p1"));
        assert_eq!(a.len(), 64);
    }
}
