//! An agent's completion reports, gathered: one call in flight at a time,
//! and whatever ended while it was out goes in the next one.
//!
//! Short tasks end faster than a durable round trip, so under load a call
//! carries several completions and the server appends them in one round;
//! a lone completion still leaves at once. A report stays queued until
//! the server has recorded it (or refused it), across reconnects and
//! server restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::api::{Completion, Request, Response, AGENT_COMPLETIONS_MAX};
use crate::client::Client;
use crate::domain::RejectionCode;

/// Most completions gathered into one call. Far below the protocol's
/// bound: a call's output manifests must fit one frame.
const COMPLETIONS_PER_CALL: usize = 64;
const _: () = assert!(COMPLETIONS_PER_CALL <= AGENT_COMPLETIONS_MAX);

/// Why a completion was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum NotRecorded {
    /// The attempt is no longer the task's current one (requeued,
    /// terminated, deleted): its outcome does not count.
    #[error("superseded: {0}")]
    Superseded(String),
    #[error("{0}")]
    Failed(String),
}

struct Pending {
    completion: Completion,
    done: oneshot::Sender<Result<(), NotRecorded>>,
}

/// Hands completions to the task that reports them.
#[derive(Clone)]
pub struct Reporter {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Reporter {
    pub fn start(client: Arc<Client>, retry_pause: Duration) -> Reporter {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_reports(client, rx, retry_pause));
        Reporter { queue }
    }

    /// Returns once the server has recorded the completion (or refused it).
    pub async fn report(&self, completion: Completion) -> Result<(), NotRecorded> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { completion, done })
            .map_err(|_| NotRecorded::Failed("the agent is stopping".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(NotRecorded::Failed("the agent is stopping".into())))
    }
}

async fn send_reports(
    client: Arc<Client>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    retry_pause: Duration,
) {
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        if batch.is_empty() {
            match queue.recv().await {
                Some(p) => batch.push(p),
                None => return,
            }
        }
        while batch.len() < COMPLETIONS_PER_CALL {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let request = Request::AgentCompleted {
            completions: batch.iter().map(|p| p.completion.clone()).collect(),
        };
        match client.call(&request).await {
            Ok(Response::Reported { results }) if results.len() == batch.len() => {
                for (pending, result) in batch.drain(..).zip(results) {
                    let outcome = result.map_err(|e| match e.rejection {
                        Some(RejectionCode::StaleAttempt | RejectionCode::TaskNotFound) => {
                            NotRecorded::Superseded(e.to_string())
                        }
                        _ => NotRecorded::Failed(e.to_string()),
                    });
                    let _ = pending.done.send(outcome);
                }
            }
            // Kept, and sent again (with whatever ended meanwhile): the
            // server records each (task, attempt) once.
            Err(e) if e.is_transient() => tokio::time::sleep(retry_pause).await,
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(reply) => format!("unexpected reply to a completion report: {reply:?}"),
                };
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(NotRecorded::Failed(why.clone())));
                }
            }
        }
    }
}
