//! What the admin console asks of the service: who a sign-in is, and the
//! same dispatcher the message API uses for everything a session does.
//!
//! A console session is a key checked once, at sign-in; every later
//! request carries a session cookie instead of a signature. The session
//! keeps a digest of the key, never the key, and each request checks it
//! against the account's keys as they are now: a key regenerated since
//! ends the sessions opened with it.

use sha2::{Digest, Sha256};

use super::{permission, Caller, Service};
use crate::api::{ApiError, ErrorKind, Family, Request, Response};
use crate::codec;
use crate::domain::account::Account;
use crate::domain::decode_event;
use crate::domain::job::Job;
use crate::domain::node::Node;
use crate::domain::pool::{Pool, PoolEvent, PoolSample};
use crate::domain::RejectionCode;
use crate::domain::Versioned;
use crate::replay::{Audit, AuditError};
use crate::server::supervisors::scheduler::PlacementStats;
use crate::store::StreamId;
use crate::store::StreamKind;
use crate::types::{AccountName, PoolId, Timestamp};

/// Runs a read of the log that may be long (an entity's whole stream) on
/// the blocking pool, not on the control plane's thread.
async fn off_thread<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(super::internal)
}

/// The newest `limit` of a pool's recorded samples, oldest first: its
/// stream read in batches, only `PoolSampled` events decoded.
fn newest_samples(
    store: &crate::store::EventStore,
    stream: &StreamId,
    limit: usize,
) -> Result<Vec<PoolSample>, crate::store::StoreError> {
    let mut samples = std::collections::VecDeque::with_capacity(limit.min(4096));
    let mut from = 1;
    loop {
        let batch = store.read_stream(stream, from, 1024)?;
        let Some(last) = batch.last() else { break };
        from = last.stream_version + 1;
        for envelope in batch.iter().filter(|e| e.event_type == "PoolSampled") {
            if let Ok(PoolEvent::PoolSampled { sample }) =
                decode_event::<PoolEvent>(StreamKind::Pool, envelope)
            {
                if samples.len() == limit {
                    samples.pop_front();
                }
                samples.push_back(sample);
            }
        }
        if batch.len() < 1024 {
            break;
        }
    }
    Ok(samples.into())
}

/// Every pool, node and job the log holds now.
pub struct Census {
    pub pools: Vec<Versioned<Pool>>,
    pub nodes: Vec<Versioned<Node>>,
    pub jobs: Vec<Versioned<Job>>,
}

/// Who signed in to the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleUser {
    Admin,
    Account(AccountName),
}

impl ConsoleUser {
    /// The account whose objects the session sees; None: the operator.
    pub fn account(&self) -> Option<&AccountName> {
        match self {
            ConsoleUser::Admin => None,
            ConsoleUser::Account(a) => Some(a),
        }
    }
}

/// The digest a session keeps of the key it was opened with.
pub type KeyDigest = [u8; 32];

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares digests in time independent of where they differ.
fn same(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn wrong_key() -> ApiError {
    ApiError::new(
        ErrorKind::BadSignature,
        "wrong account name or key (the key is the one `lote account create` printed, or `lote account keys` shows)",
    )
}

impl Service {
    /// Checks a sign-in: the admin key (no account), or one of the
    /// account's two keys. An unknown account and a wrong key get the same
    /// answer after the same work.
    pub(in crate::server) async fn console_sign_in(
        &self,
        account: Option<&AccountName>,
        key: &str,
    ) -> Result<(ConsoleUser, KeyDigest), ApiError> {
        let given = digest(key);
        match account {
            None => {
                if same(&given, &digest(&self.admin_key)) {
                    Ok((ConsoleUser::Admin, given))
                } else {
                    Err(wrong_key())
                }
            }
            Some(name) => {
                self.console_caller(&ConsoleUser::Account(name.clone()), &given)
                    .await?;
                Ok((ConsoleUser::Account(name.clone()), given))
            }
        }
    }

    /// The caller a session acts as, if its key still opens it.
    pub(in crate::server) async fn console_caller(
        &self,
        user: &ConsoleUser,
        key: &KeyDigest,
    ) -> Result<Caller, ApiError> {
        match user {
            ConsoleUser::Admin => {
                if same(key, &digest(&self.admin_key)) {
                    Ok(Caller::Admin)
                } else {
                    Err(wrong_key())
                }
            }
            ConsoleUser::Account(name) => {
                let state = self
                    .existing::<Account>(&StreamId::account(name))
                    .await?
                    .map(|a| a.state)
                    .unwrap_or_default();
                let keys = [&state.primary_key, &state.secondary_key];
                let mut ok = false;
                for k in keys.into_iter().flatten() {
                    ok |= same(key, &digest(k.expose()));
                }
                if ok {
                    Ok(Caller::Account(name.clone(), Box::new(state)))
                } else {
                    Err(wrong_key())
                }
            }
        }
    }

    /// One request of a session, through the message API's dispatcher:
    /// the same authorisation, the same rules, the same log. What only a
    /// node, a join token or a live connection may send is refused.
    pub(in crate::server) async fn console_call(
        &self,
        caller: Caller,
        request: Request,
    ) -> Result<Response, ApiError> {
        self.http_call(caller, request, None).await
    }

    /// A request from the console or the Azure gateway, through the one
    /// dispatcher; `request_id` is the client's id for it, if it gave one.
    pub(in crate::server) async fn http_call(
        &self,
        caller: Caller,
        request: Request,
        request_id: Option<uuid::Uuid>,
    ) -> Result<Response, ApiError> {
        if matches!(request.family(), Family::Agents | Family::Events) {
            return Err(permission(
                &format!(
                    "{} is not for the console (agents' and event streams' calls go over the message API)",
                    request.name()
                ),
                &caller,
            ));
        }
        let body = codec::encode_message(&request).map_err(super::internal)?;
        let started = std::time::Instant::now();
        let name = request.name();
        let result = self.dispatch(caller, request, &body, request_id).await;
        self.metrics
            .call(name, result.is_ok(), started.elapsed().as_secs_f64());
        result
    }

    /// An entity's audit trail, if the caller may see it: the operator any
    /// entity, an account its own (another's is "not found", as anywhere).
    pub(in crate::server) async fn console_audit(
        &self,
        user: &ConsoleUser,
        entity: &str,
        at: Option<Timestamp>,
    ) -> Result<Audit, ApiError> {
        let stream = StreamId::parse(entity)
            .map_err(|e| ApiError::rejected(RejectionCode::InvalidValue, e.to_string()))?;
        let code = match stream.kind() {
            StreamKind::Account => RejectionCode::AccountNotFound,
            StreamKind::Pool => RejectionCode::PoolNotFound,
            StreamKind::Node => RejectionCode::NodeNotFound,
            StreamKind::Job => RejectionCode::JobNotFound,
            StreamKind::Task => RejectionCode::TaskNotFound,
            _ => RejectionCode::InvalidValue,
        };
        let unknown =
            || ApiError::rejected(code, format!("{entity} has no events: no such entity"));
        if let Some(account) = user.account() {
            let first = stream.segments().first().copied().unwrap_or_default();
            if first != account.as_str() {
                return Err(unknown());
            }
        }
        let store = self.core.store().clone();
        let audit = off_thread(move || crate::replay::audit(&store, &stream, at)).await?;
        audit.map_err(|e| match e {
            AuditError::Unknown(_) => unknown(),
            other => super::internal(other),
        })
    }

    /// A pool's newest `limit` load samples (what its charts draw and
    /// formulas read), oldest first.
    pub(in crate::server) async fn console_pool_samples(
        &self,
        account: &AccountName,
        pool: &PoolId,
        limit: usize,
    ) -> Result<Vec<PoolSample>, ApiError> {
        let stream = StreamId::pool(account, pool);
        self.show::<Pool>(&stream, pool.as_str()).await?;
        let store = self.core.store().clone();
        Ok(off_thread(move || newest_samples(&store, &stream, limit)).await??)
    }

    /// The tasks placement has on a node now: (job, task, attempt).
    pub(in crate::server) async fn console_node_tasks(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &crate::types::NodeId,
    ) -> Result<Vec<(String, String, u32)>, ApiError> {
        let key = format!("{account}/{pool}");
        let node = node.clone();
        let held = self
            .supervisors
            .placement
            .inspect(move |s| s.held_on(&key, &node))
            .await?;
        Ok(held
            .into_iter()
            .filter_map(|(stream, attempt)| {
                let ids = stream.segments();
                Some((ids.get(1)?.to_string(), ids.get(2)?.to_string(), attempt))
            })
            .collect())
    }

    /// Placement's counters (and whether it has caught up with the log).
    pub(in crate::server) async fn placement_stats(&self) -> Result<PlacementStats, ApiError> {
        Ok(self.supervisors.placement.inspect(|s| s.stats).await?)
    }

    /// The `/metrics` page as of now.
    pub(in crate::server) async fn metrics_text(&self) -> Result<String, ApiError> {
        let placement = self.placement_stats().await?;
        let census = self.census()?;
        Ok(self
            .metrics
            .render(&census, self.core.store().stats(), placement))
    }

    /// The log, for the console's live feed and the health check.
    pub(in crate::server) fn store(&self) -> &crate::store::EventStore {
        self.core.store()
    }

    /// Every account's pools, nodes and jobs, for /metrics.
    pub(in crate::server) fn census(&self) -> Result<Census, ApiError> {
        Ok(Census {
            pools: self.list("pool/")?,
            nodes: self.list("node/")?,
            jobs: self.list("job/")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_whole() {
        let a = digest("k1");
        assert!(same(&a, &digest("k1")));
        assert!(!same(&a, &digest("k2")));
    }
}
