//! Pool secrets: sealed before anything is written, so the log, its
//! snapshots and its replays hold them only sealed; opened for the pool's
//! own nodes and nobody else.
//!
//! Sealing is ChaCha20-Poly1305 with a key derived from the server's
//! secret for this one purpose, a random nonce per value, and the secret's
//! account, pool and name as associated data: a sealed value copied into
//! another pool's or name's event does not open.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use super::{internal, misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::domain::pool::{Pool, PoolCommand, PoolSecret};
use crate::store::StreamId;
use crate::types::{AccountName, PoolId, Secret};

/// What a sealed value starts with; a value without it was written before
/// sealing existed and is used as it is.
const SEALED_PREFIX: &str = "sealed:v1:";

/// The key pool secrets are sealed with.
pub(super) struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    pub(super) fn new(server_secret: &str) -> Sealer {
        let derived = crate::api::auth::derive_secret(server_secret, "pool secrets at rest");
        let key = Sha256::digest(derived.as_bytes());
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    fn context(account: &AccountName, pool: &PoolId, name: &str) -> Vec<u8> {
        format!("{account}/{pool}/{name}").into_bytes()
    }

    /// The secret with its value sealed.
    pub(super) fn seal(
        &self,
        account: &AccountName,
        pool: &PoolId,
        secret: &PoolSecret,
    ) -> Result<PoolSecret, ApiError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::context(account, pool, &secret.name);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.value.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| internal("a secret could not be sealed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(PoolSecret {
            value: Secret::new(format!("{SEALED_PREFIX}{}", crate::api::auth::hex(&bytes))),
            ..secret.clone()
        })
    }

    /// The secret with its value opened.
    pub(super) fn open(
        &self,
        account: &AccountName,
        pool: &PoolId,
        secret: &PoolSecret,
    ) -> Result<PoolSecret, ApiError> {
        let Some(hex) = secret.value.expose().strip_prefix(SEALED_PREFIX) else {
            return Ok(secret.clone());
        };
        let bytes =
            crate::api::auth::unhex(hex).ok_or_else(|| internal("a sealed secret is not hex"))?;
        if bytes.len() < 12 {
            return Err(internal("a sealed secret is too short"));
        }
        let (nonce, sealed) = bytes.split_at(12);
        let aad = Self::context(account, pool, &secret.name);
        let clear = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload { msg: sealed, aad: &aad },
            )
            .map_err(|_| {
                internal(format!(
                    "secret {} of pool {account}/{pool} does not open: the server secret changed since it was set; set it again",
                    secret.name
                ))
            })?;
        let clear = String::from_utf8(clear).map_err(internal)?;
        Ok(PoolSecret {
            value: Secret::new(clear),
            ..secret.clone()
        })
    }
}

impl Service {
    /// A pool's secrets, each sealed for that pool.
    pub(super) fn seal_all(
        &self,
        account: &AccountName,
        pool: &PoolId,
        secrets: &[PoolSecret],
    ) -> Result<Vec<PoolSecret>, ApiError> {
        secrets
            .iter()
            .map(|s| self.sealer.seal(account, pool, s))
            .collect()
    }

    /// `SetPoolSecret` and `RemovePoolSecret` of an account.
    pub(super) async fn pool_secrets(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let (pool, command) = match request {
            Request::SetPoolSecret { pool, secret } => (
                pool,
                PoolCommand::SetSecret {
                    secret: self.sealer.seal(call.account, pool, secret)?,
                },
            ),
            Request::RemovePoolSecret { pool, name } => {
                (pool, PoolCommand::RemoveSecret { name: name.clone() })
            }
            other => return Err(misrouted(other)),
        };
        self.exec::<Pool>(call.pool_stream(pool), command, call.ctx(self))
            .await
    }

    /// A node's pool's secrets, opened, when they changed since the
    /// generation the agent has.
    pub(super) async fn agent_secrets(
        &self,
        account: &AccountName,
        pool: &PoolId,
        have: Option<u32>,
    ) -> Result<Response, ApiError> {
        let state = self
            .show::<Pool>(&StreamId::pool(account, pool), pool.as_str())
            .await?
            .state;
        let generation = state.secrets_generation;
        if have == Some(generation) {
            return Ok(Response::Secrets {
                generation,
                secrets: None,
            });
        }
        let secrets = state
            .spec
            .map(|s| s.secrets)
            .unwrap_or_default()
            .iter()
            .map(|s| self.sealer.open(account, pool, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::Secrets {
            generation,
            secrets: Some(secrets),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> PoolSecret {
        PoolSecret {
            name: name.into(),
            value: Secret::new(value),
            start_task_env: false,
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_pool_name_and_server() {
        let (a, p, q) = (
            AccountName::new("acme").unwrap(),
            PoolId::new("render").unwrap(),
            PoolId::new("other").unwrap(),
        );
        let sealer = Sealer::new("server secret");
        let sealed = sealer.seal(&a, &p, &secret("db", "hunter2")).unwrap();
        assert!(sealed.value.expose().starts_with(SEALED_PREFIX));
        assert!(!sealed.value.expose().contains("hunter2"));
        // A fresh nonce each time.
        let again = sealer.seal(&a, &p, &secret("db", "hunter2")).unwrap();
        assert_ne!(sealed.value.expose(), again.value.expose());
        assert_eq!(
            sealer.open(&a, &p, &sealed).unwrap().value.expose(),
            "hunter2"
        );
        assert!(sealer.open(&a, &q, &sealed).is_err(), "another pool");
        let renamed = PoolSecret {
            name: "other".into(),
            ..sealed.clone()
        };
        assert!(sealer.open(&a, &p, &renamed).is_err(), "another name");
        assert!(Sealer::new("another server").open(&a, &p, &sealed).is_err());
        // Written before sealing existed: used as it is.
        assert_eq!(
            sealer
                .open(&a, &p, &secret("db", "plain"))
                .unwrap()
                .value
                .expose(),
            "plain"
        );
    }
}
