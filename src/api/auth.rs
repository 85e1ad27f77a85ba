//! Request signing: HMAC-SHA256 over who, when, a nonce and the body's
//! hash. The key never travels; a captured call cannot be replayed (nonce)
//! or kept for later (timestamp window).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::call::{Auth, Credential};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted difference between the client's and the server's clock.
pub const CLOCK_SKEW_SECS_MAX: i64 = 15 * 60;

/// Most nonces remembered at once (about 16 bytes each). At this many
/// the server refuses new calls as overloaded rather than forget nonces
/// still inside the window (which would let a replay through). 64 M covers
/// 70,000 calls/s sustained over the whole 30-minute window.
pub const NONCES_MAX: usize = 64 * 1024 * 1024;

/// What a signature covers besides who, when and the nonce: the call's
/// body, and the length of its bulk bytes (whose content the upload's own
/// SHA-256 covers, see `Call::bulk`).
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub body: &'a [u8],
    pub bulk_len: u64,
}

impl<'a> Signed<'a> {
    /// A call without bulk bytes.
    pub fn body(body: &'a [u8]) -> Self {
        Signed { body, bulk_len: 0 }
    }
}

/// The exact bytes a signature covers. Every field is fixed-width or
/// newline-free, so two different calls never share a string to sign.
/// The call id is covered too: it is transport bookkeeping, but a copy
/// with any bit changed must not be accepted.
pub fn string_to_sign(
    call_id: u64,
    credential: &Credential,
    timestamp: i64,
    nonce: &[u8; 16],
    signed: Signed<'_>,
) -> Vec<u8> {
    let body_hash = Sha256::digest(signed.body);
    format!(
        "lote-v2\n{call_id}\n{credential}\n{timestamp}\n{}\n{}\n{}",
        hex(nonce),
        hex(&body_hash),
        signed.bulk_len
    )
    .into_bytes()
}

/// Signs call `call_id`'s body (and bulk length) with `key`.
pub fn sign(
    key: &str,
    call_id: u64,
    credential: Credential,
    timestamp: i64,
    nonce: [u8; 16],
    signed: Signed<'_>,
) -> Auth {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&string_to_sign(
        call_id,
        &credential,
        timestamp,
        &nonce,
        signed,
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
pub fn verify(key: &str, call_id: u64, auth: &Auth, signed: Signed<'_>) -> bool {
    verify_any(&[key.to_string()], call_id, auth, signed)
}

/// Whether `auth` signs `body` by any of `keys`. Tries every key (no early
/// exit), so the time taken does not tell which matched.
pub fn verify_any(keys: &[String], call_id: u64, auth: &Auth, signed: Signed<'_>) -> bool {
    let message = string_to_sign(
        call_id,
        &auth.credential,
        auth.timestamp,
        &auth.nonce,
        signed,
    );
    let mut ok = false;
    for key in keys {
        let mut mac =
            HmacSha256::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        mac.update(&message);
        ok |= mac.verify_slice(&auth.signature).is_ok();
    }
    ok
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
    // On every call's path: a table beats `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceRefusal {
    Replayed,
    Full,
}

/// Width of one bucket of the nonce cache, microseconds.
const NONCE_BUCKET_MICROS: i64 = 60_000_000;

/// Nonces seen within the clock-skew window.
///
/// A replay carries the same signed timestamp as the original, so nonces
/// are kept in buckets by timestamp minute and a check looks in one bucket
/// only; whole buckets are dropped once their minute is out of the window
/// (no sweep over every entry, no pause). Entries are 64-bit fingerprints
/// of (credential, nonce, timestamp) under a per-process random hash key, so an
/// attacker cannot aim for collisions, and honest ones are ~1e-5 likely
/// even with tens of millions of entries (the cost: a retry).
pub struct NonceCache {
    buckets: std::collections::BTreeMap<i64, std::collections::HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
    len: usize,
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache {
            buckets: Default::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            len: 0,
        }
    }
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
        use std::hash::BuildHasher;
        let window = CLOCK_SKEW_SECS_MAX * 1_000_000;
        // Buckets wholly older than the window can hold no live nonce.
        let oldest = (now - window).div_euclid(NONCE_BUCKET_MICROS);
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            self.len -= entry.remove().len();
        }
        let fingerprint = self.hasher.hash_one((credential, nonce, timestamp));
        let bucket = timestamp.div_euclid(NONCE_BUCKET_MICROS);
        if self
            .buckets
            .get(&bucket)
            .is_some_and(|b| b.contains(&fingerprint))
        {
            return Err(NonceRefusal::Replayed);
        }
        if self.len >= NONCES_MAX {
            return Err(NonceRefusal::Full);
        }
        self.buckets.entry(bucket).or_default().insert(fingerprint);
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        let body = |b: &'static [u8]| Signed::body(b);
        let auth = sign("k1", 5, account(), 1_000, [7; 16], body(b"body"));
        assert!(verify("k1", 5, &auth, body(b"body")));
        assert!(!verify("k1", 6, &auth, body(b"body")));
        assert!(!verify("k2", 5, &auth, body(b"body")));
        assert!(!verify("k1", 5, &auth, body(b"bodY")));
        let mut other = auth.clone();
        other.timestamp += 1;
        assert!(!verify("k1", 5, &other, body(b"body")));
        let mut other = auth.clone();
        other.credential = Credential::Admin;
        assert!(!verify("k1", 5, &other, body(b"body")));
        // The bulk's length is signed: a chunk cut short or padded fails
        // at once (its bytes are checked by the upload's SHA-256).
        let with_bulk = Signed {
            body: b"body",
            bulk_len: 1 << 20,
        };
        let auth = sign("k1", 5, account(), 1_000, [7; 16], with_bulk);
        assert!(verify("k1", 5, &auth, with_bulk));
        assert!(!verify("k1", 5, &auth, body(b"body")));
        let shorter = Signed {
            bulk_len: (1 << 20) - 1,
            ..with_bulk
        };
        assert!(!verify("k1", 5, &auth, shorter));
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
        // The same nonce with another (signed) timestamp is another call.
        assert_eq!(
            cache.check_and_insert(&account(), [1; 16], now + 1, now),
            Ok(())
        );
        // A replay a minute later is still caught.
        assert_eq!(
            cache.check_and_insert(&account(), [1; 16], now, now + 60_000_000),
            Err(NonceRefusal::Replayed)
        );
        let later = now + (CLOCK_SKEW_SECS_MAX + 120) * 1_000_000;
        assert_eq!(
            cache.check_and_insert(&account(), [2; 16], later, later),
            Ok(())
        );
        assert_eq!(cache.len(), 1, "buckets out of the window are dropped");
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
