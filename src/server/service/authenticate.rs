//! Who a call comes from: the signature against the credential's keys,
//! then the time window, then the nonce.

use super::{Caller, Service};
use crate::api::auth::{self, NonceRefusal, Signed, CLOCK_SKEW_SECS_MAX};
use crate::api::{ApiError, Call, Credential, ErrorKind};
use crate::domain::account::Account;
use crate::domain::node::Node;
use crate::domain::pool::{Pool, PoolStatus};
use crate::store::StreamId;
use crate::types::Principal;

fn bad_signature() -> ApiError {
    ApiError::new(
        ErrorKind::BadSignature,
        "the signature does not verify: wrong or regenerated key, unknown account, or a changed request",
    )
}

impl Service {
    /// Checks the signature, the time window and the nonce, in that order
    /// (nothing unsigned may fill the nonce cache).
    pub(super) async fn authenticate(&self, call: &Call) -> Result<Caller, ApiError> {
        let cred = &call.auth.credential;
        let (keys, caller): (Vec<String>, Caller) = match cred {
            Credential::Admin => (vec![self.admin_key.clone()], Caller::Admin),
            Credential::Account { account } => {
                let stream = StreamId::account(account);
                let state = self
                    .existing::<Account>(&stream)
                    .await?
                    .map(|a| a.state)
                    .unwrap_or_default();
                let keys = [&state.primary_key, &state.secondary_key]
                    .into_iter()
                    .flatten()
                    .map(|k| k.expose().to_string())
                    .collect();
                (keys, Caller::Account(account.clone(), Box::new(state)))
            }
            Credential::Join { account, pool } => {
                let live = self
                    .existing::<Pool>(&StreamId::pool(account, pool))
                    .await?
                    .is_some_and(|p| p.state.status == PoolStatus::Active);
                let keys = if live {
                    vec![self.join_token(account, pool)]
                } else {
                    Vec::new()
                };
                (
                    keys,
                    Caller::Join {
                        account: account.clone(),
                        pool: pool.clone(),
                    },
                )
            }
            Credential::Node {
                account,
                pool,
                node,
            } => {
                let live = self
                    .existing::<Node>(&StreamId::node(account, pool, node))
                    .await?
                    .is_some();
                let keys = if live {
                    vec![self.node_credential(account, pool, node)]
                } else {
                    Vec::new()
                };
                (
                    keys,
                    Caller::Node(Principal::Node {
                        account: account.clone(),
                        pool: pool.clone(),
                        node: node.clone(),
                    }),
                )
            }
        };
        // An unknown account costs an HMAC too, so timing does not tell
        // whether it exists.
        let ok = if keys.is_empty() {
            auth::verify(&self.admin_key, call.id, &call.auth, Signed::body(b""));
            false
        } else {
            let signed = Signed {
                body: &call.body,
                bulk_len: call.bulk.len() as u64,
            };
            auth::verify_any(&keys, call.id, &call.auth, signed)
        };
        if !ok {
            return Err(bad_signature());
        }
        let now = self.clock.now().as_micros();
        let skew = (now - call.auth.timestamp).abs();
        if skew > CLOCK_SKEW_SECS_MAX * 1_000_000 {
            return Err(ApiError::new(
                ErrorKind::ClockSkew,
                format!(
                    "the request's time is {}s from the server's; at most {CLOCK_SKEW_SECS_MAX}s is accepted. Check this machine's clock",
                    skew / 1_000_000
                ),
            ));
        }
        match self.nonces.borrow_mut().check_and_insert(
            cred,
            call.auth.nonce,
            call.auth.timestamp,
            now,
        ) {
            Ok(()) => Ok(caller),
            Err(NonceRefusal::Replayed) => Err(ApiError::new(
                ErrorKind::NonceReplayed,
                "this nonce was already used: a replayed request is refused",
            )),
            Err(NonceRefusal::Full) => Err(ApiError::new(
                ErrorKind::Overloaded,
                "too many requests in the replay window; try again shortly",
            )),
        }
    }
}
