//! Who a call comes from: the signature (over the connection's challenge)
//! against the credential's keys, then the time window, then the call id,
//! which a connection may use once.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::{Caller, Service};
use crate::api::auth::{self, Challenge, Signed, CLOCK_SKEW_SECS_MAX};
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

/// Call ids a connection may still use: past this many below the highest
/// seen, an id is refused as a replay.
pub const CALL_ID_WINDOW: u64 = 4096;

/// One connection as authentication sees it: the challenge its welcome
/// gave, and the call ids it has used. Its memory is bounded by the
/// window, and it goes with the connection: there is no record shared by
/// every client to fill, and nothing to lose at a restart (a new
/// connection has a new challenge that no captured call covers).
pub struct Session {
    pub challenge: Challenge,
    ids: RefCell<CallIds>,
    /// A call on this connection has verified; told at once, before the
    /// call itself runs (which may take long).
    verified: std::cell::Cell<bool>,
    on_verified: tokio::sync::Notify,
    /// Held while a node's agent speaks on this connection (/metrics).
    pub(super) agent: RefCell<Option<crate::server::metrics::AgentConnected>>,
}

impl Session {
    pub fn new(challenge: Challenge) -> Self {
        Session {
            challenge,
            ids: RefCell::default(),
            verified: std::cell::Cell::new(false),
            on_verified: tokio::sync::Notify::new(),
            agent: RefCell::default(),
        }
    }

    /// Resolves once a call on this connection has verified.
    pub async fn verified(&self) {
        while !self.verified.get() {
            self.on_verified.notified().await;
        }
    }
}

/// The ids used within the window below the highest one seen.
#[derive(Default)]
struct CallIds {
    highest: u64,
    used: BTreeSet<u64>,
}

impl CallIds {
    /// Takes `id` once; false for an id used before or too old to tell.
    fn take(&mut self, id: u64) -> bool {
        if id + CALL_ID_WINDOW <= self.highest {
            return false;
        }
        if !self.used.insert(id) {
            return false;
        }
        if id > self.highest {
            self.highest = id;
            let floor = self.highest.saturating_sub(CALL_ID_WINDOW);
            while self.used.first().is_some_and(|first| *first <= floor) {
                self.used.pop_first();
            }
        }
        true
    }
}

impl Service {
    /// Checks the signature, the time window and the call id, in that
    /// order (nothing unsigned is recorded).
    pub(super) async fn authenticate(
        &self,
        call: &Call,
        session: &Session,
    ) -> Result<Caller, ApiError> {
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
                let state = self
                    .existing::<Pool>(&StreamId::pool(account, pool))
                    .await?
                    .map(|p| p.state)
                    .filter(|p| p.status == PoolStatus::Active);
                let keys = match state {
                    Some(p) => vec![self.join_token(account, pool, p.join_token_generation)],
                    None => Vec::new(),
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
            Credential::Job { account, job } => {
                // Good while the job, which has a manager, has not ended.
                use crate::domain::job::{Job, JobStatus};
                let created = self
                    .existing::<Job>(&StreamId::job(account, job))
                    .await?
                    .filter(|j| {
                        !matches!(
                            j.state.status,
                            JobStatus::Absent | JobStatus::Completed | JobStatus::Deleted
                        ) && j
                            .state
                            .spec
                            .as_ref()
                            .is_some_and(|s| s.job_manager.is_some())
                    })
                    .and_then(|j| j.state.created_at);
                let keys = match created {
                    Some(created) => vec![self.job_key(account, job, created)],
                    None => Vec::new(),
                };
                (
                    keys,
                    Caller::Job {
                        account: account.clone(),
                        job: job.clone(),
                    },
                )
            }
        };
        // An unknown account costs an HMAC too, so timing does not tell
        // whether it exists.
        let challenge = &session.challenge;
        let ok = if keys.is_empty() {
            auth::verify(
                &self.admin_key,
                challenge,
                call.id,
                &call.auth,
                Signed::body(b""),
            );
            false
        } else {
            let signed = Signed {
                body: &call.body,
                bulk_len: call.bulk.len() as u64,
            };
            auth::verify_any(&keys, challenge, call.id, &call.auth, signed)
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
        if !session.ids.borrow_mut().take(call.id) {
            return Err(ApiError::new(
                ErrorKind::NonceReplayed,
                format!(
                    "call id {} was already used on this connection (or is more than {CALL_ID_WINDOW} below its newest): a replayed request is refused",
                    call.id
                ),
            ));
        }
        if !session.verified.replace(true) {
            session.on_verified.notify_waiters();
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_takes_each_call_id_once_within_its_window() {
        let mut ids = CallIds::default();
        assert!(ids.take(1));
        assert!(!ids.take(1), "the same id twice");
        assert!(ids.take(3));
        assert!(ids.take(2), "out of order, once");
        assert!(!ids.take(2));
        assert!(ids.take(10_000));
        assert!(!ids.take(3), "below the window: refused, not forgotten");
        assert!(ids.take(10_000 - CALL_ID_WINDOW + 1));
        assert!(!ids.take(10_000 - CALL_ID_WINDOW));
        assert!(ids.used.len() <= CALL_ID_WINDOW as usize);
        for id in 10_001..30_000 {
            assert!(ids.take(id));
        }
        assert!(
            ids.used.len() <= CALL_ID_WINDOW as usize,
            "memory stays bounded"
        );
    }
}
