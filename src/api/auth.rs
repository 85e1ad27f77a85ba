//! Request signing: HMAC-SHA256 over the connection's challenge, the call
//! id, who, when, a nonce and the body's hash. The key never travels. The
//! challenge is the server's, new for every connection: a call captured on
//! one connection verifies on no other, before or after a restart; on its
//! own connection the server takes each call id once.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::call::{Auth, Credential};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted difference between the client's and the server's clock.
pub const CLOCK_SKEW_SECS_MAX: i64 = 15 * 60;

/// The random bytes a server gives each connection in its welcome; every
/// signature on that connection covers them.
pub type Challenge = [u8; 16];

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
    challenge: &Challenge,
    call_id: u64,
    credential: &Credential,
    timestamp: i64,
    nonce: &[u8; 16],
    signed: Signed<'_>,
) -> Vec<u8> {
    let body_hash = Sha256::digest(signed.body);
    format!(
        "lote-v3\n{}\n{call_id}\n{credential}\n{timestamp}\n{}\n{}\n{}",
        hex(challenge),
        hex(nonce),
        hex(&body_hash),
        signed.bulk_len
    )
    .into_bytes()
}

/// Signs call `call_id`'s body (and bulk length) with `key`, for the
/// connection whose welcome gave `challenge`.
pub fn sign(
    key: &str,
    challenge: &Challenge,
    call_id: u64,
    credential: Credential,
    timestamp: i64,
    nonce: [u8; 16],
    signed: Signed<'_>,
) -> Auth {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&string_to_sign(
        challenge,
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
pub fn verify(
    key: &str,
    challenge: &Challenge,
    call_id: u64,
    auth: &Auth,
    signed: Signed<'_>,
) -> bool {
    verify_any(&[key.to_string()], challenge, call_id, auth, signed)
}

/// Whether `auth` signs `body` by any of `keys`. Tries every key (no early
/// exit), so the time taken does not tell which matched.
pub fn verify_any(
    keys: &[String],
    challenge: &Challenge,
    call_id: u64,
    auth: &Auth,
    signed: Signed<'_>,
) -> bool {
    let message = string_to_sign(
        challenge,
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

/// The bytes of lower- or upper-case hex text; None when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_back() {
        assert_eq!(unhex(&hex(&[0, 10, 255])), Some(vec![0, 10, 255]));
        assert_eq!(unhex("0aFF"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
    use crate::types::AccountName;

    fn account() -> Credential {
        Credential::Account {
            account: AccountName::new("acme").unwrap(),
        }
    }

    #[test]
    fn signatures_verify_only_with_the_key_and_the_same_body() {
        let body = |b: &'static [u8]| Signed::body(b);
        let c = [3; 16];
        let auth = sign("k1", &c, 5, account(), 1_000, [7; 16], body(b"body"));
        assert!(verify("k1", &c, 5, &auth, body(b"body")));
        assert!(!verify("k1", &c, 6, &auth, body(b"body")));
        assert!(!verify("k2", &c, 5, &auth, body(b"body")));
        assert!(!verify("k1", &c, 5, &auth, body(b"bodY")));
        // Another connection's challenge: the same call does not verify.
        assert!(!verify("k1", &[4; 16], 5, &auth, body(b"body")));
        let mut other = auth.clone();
        other.timestamp += 1;
        assert!(!verify("k1", &c, 5, &other, body(b"body")));
        let mut other = auth.clone();
        other.credential = Credential::Admin;
        assert!(!verify("k1", &c, 5, &other, body(b"body")));
        // The bulk's length is signed: a chunk cut short or padded fails
        // at once (its bytes are checked by the upload's SHA-256).
        let with_bulk = Signed {
            body: b"body",
            bulk_len: 1 << 20,
        };
        let auth = sign("k1", &c, 5, account(), 1_000, [7; 16], with_bulk);
        assert!(verify("k1", &c, 5, &auth, with_bulk));
        assert!(!verify("k1", &c, 5, &auth, body(b"body")));
        let shorter = Signed {
            bulk_len: (1 << 20) - 1,
            ..with_bulk
        };
        assert!(!verify("k1", &c, 5, &auth, shorter));
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
