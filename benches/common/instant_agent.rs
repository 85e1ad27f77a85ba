//! A bench-only node agent: it joins a remote pool with the pool's token,
//! registers, polls, and reports every attempt it is handed as succeeded
//! at once, without a process (as `lote agent` reports an attempt that
//! ends within 20 ms: one completion, no start report). It speaks the real protocol
//! over a real connection (the server cannot tell it from `lote agent`),
//! so what it measures is the control plane: placement, the actors, the
//! log and the wire.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lote::api::{AttemptRef, Completion, Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::node::AgentInfo;
use lote::domain::task::TaskResult;
use lote::domain::RejectionCode;
use lote::types::{AccountName, NodeId, PoolId};

/// How long a poll waits for work, as `lote agent`'s does.
const POLL_WAIT_MS: u32 = 1000;

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
    super::must(&client, Request::AgentRegister { agent: info }).await;
    let mut running: Vec<AttemptRef> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let poll = Request::AgentPoll {
            running: std::mem::take(&mut running),
            wait_ms: POLL_WAIT_MS,
            releases_running: Vec::new(),
        };
        counters.polls.fetch_add(1, Ordering::Relaxed);
        let assignments = match client.call(&poll).await {
            Ok(Response::Work { assignments, .. }) => assignments,
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
