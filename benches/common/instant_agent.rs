//! A bench-only node agent: it joins a remote pool with the pool's token,
//! registers, polls, and reports every attempt it is handed as succeeded
//! at once, without a process (as `lote agent` reports an attempt that
//! ends within 20 ms: one completion, no start report). Idle, it calls as
//! `lote agent` does: one poll per heartbeat period, carrying the
//! machine's figures, and a secrets call when the pool's epoch moves. It
//! speaks the real protocol over a real connection (the server cannot tell
//! it from `lote agent`), so what it measures is the control plane:
//! placement, the actors, the log and the wire.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lote::api::{AttemptRef, Completion, Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::node::AgentInfo;
use lote::domain::task::TaskResult;
use lote::domain::RejectionCode;
use lote::types::{AccountName, NodeId, PoolId};

/// How long a poll asks to wait for work, as `lote agent`'s does: the
/// most the protocol allows; the server parks it for its heartbeat period.
const POLL_WAIT_MS: u32 = lote::api::AGENT_POLL_WAIT_MS_MAX;

/// One joined node, ready to run.
pub struct Joined {
    pub node: NodeId,
    pub client: Client,
}

/// Joins `pool` as a node named `name` with the pool's join `token`.
pub async fn join(
    addr: &str,
    account: &AccountName,
    pool: &PoolId,
    token: &str,
    name: &str,
) -> Joined {
    let joiner = Client::new(ClientConfig::new(
        addr.to_string(),
        Credential::Join {
            account: account.clone(),
            pool: pool.clone(),
        },
        token.to_string(),
    ));
    let request = Request::JoinPool {
        name: name.to_string(),
    };
    let Response::Joined { node, credential } = super::must(&joiner, request).await else {
        panic!("JoinPool answers Joined")
    };
    let client = Client::new(ClientConfig::new(
        addr.to_string(),
        Credential::Node {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
        },
        credential,
    ));
    Joined { node, client }
}

/// What the agents did, shared by all of them.
#[derive(Default)]
pub struct Counters {
    pub completed: AtomicU64,
    pub polls: AtomicU64,
    pub calls: AtomicU64,
    /// Prefetched attempts moved to another node before they started.
    pub moved: AtomicU64,
}

/// Registers `joined` with `slots` slots, then serves until `stop` is set
/// (or the task is aborted, which is how a bench "kills" a node: its
/// connection closes and it says nothing more).
pub async fn run(joined: Joined, slots: u32, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let client = joined.client;
    let info = AgentInfo {
        hostname: format!("bench-{}", joined.node),
        address: "127.0.0.1".into(),
        cores: slots,
        memory_mib: 1024,
        task_slots: slots,
        agent_version: "bench".into(),
    };
    let registered = super::must(&client, Request::AgentRegister { agent: info }).await;
    let Response::Registered { heartbeat_ms, .. } = registered else {
        panic!("AgentRegister answers Registered")
    };
    let period = std::time::Duration::from_millis(u64::from(heartbeat_ms));
    let mut running: Vec<AttemptRef> = Vec::new();
    let mut sampled: Option<std::time::Instant> = None;
    let mut secrets_seen = None;
    while !stop.load(Ordering::Relaxed) {
        // As `lote agent`: its machine figures ride on a poll once per
        // heartbeat period (every idle poll), and a changed secrets epoch
        // is answered with a secrets call.
        let usage = match sampled {
            Some(at) if at.elapsed() < period => None,
            _ => {
                sampled = Some(std::time::Instant::now());
                Some(Default::default())
            }
        };
        let poll = Request::AgentPoll {
            running: std::mem::take(&mut running),
            reporting: Vec::new(),
            wait_ms: POLL_WAIT_MS,
            releases_running: Vec::new(),
            usage,
            secrets_seen,
        };
        counters.polls.fetch_add(1, Ordering::Relaxed);
        let assignments = match client.call(&poll).await {
            Ok(Response::Work {
                assignments,
                secrets_epoch,
                ..
            }) => {
                if secrets_seen != Some(secrets_epoch) {
                    let ask = Request::AgentSecrets { generation: None };
                    super::must(&client, ask).await;
                    secrets_seen = Some(secrets_epoch);
                }
                assignments
            }
            Ok(_) => panic!("a poll answers Work"),
            // Stopped meanwhile: the connection may be gone.
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(e) => panic!("poll: {e}"),
        };
        if assignments.is_empty() {
            continue;
        }
        // `lote agent` reports an attempt that ends within 20 ms once, as
        // completed (no start report): these all do, in one report.
        let completions: Vec<Completion> = assignments
            .into_iter()
            .map(|a| Completion {
                job: a.job,
                task: a.task,
                attempt: a.attempt,
                result: TaskResult {
                    exit_code: Some(0),
                    signal: None,
                    duration_ms: 0,
                    failure: None,
                },
                outputs: Vec::new(),
            })
            .collect();
        for chunk in completions.chunks(lote::api::AGENT_COMPLETIONS_MAX) {
            let report = Request::AgentCompleted {
                completions: chunk.to_vec(),
            };
            counters.calls.fetch_add(1, Ordering::Relaxed);
            let Response::Reported { results } = client.call(&report).await.expect("report") else {
                panic!("AgentCompleted answers Reported")
            };
            for r in results {
                match r {
                    Ok(()) => counters.completed.fetch_add(1, Ordering::Relaxed),
                    // A prefetched attempt placement moved to a node gone
                    // idle meanwhile: not this node's any more.
                    Err(e) if e.rejection == Some(RejectionCode::StaleAttempt) => {
                        counters.moved.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("a completion refused: {e}"),
                };
            }
        }
    }
}
