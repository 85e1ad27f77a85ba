//! What node agents ask: joining a pool with its token, registering,
//! polling for work (each poll is the node's heartbeat), reporting starts,
//! completions, start tasks, machine figures and file answers.

use super::{internal, permission, Caller, Service};
use crate::actors::CoreError;
use crate::api::{ApiError, Request, Response};
use crate::clock::new_uuid;
use crate::domain::job::Job;
use crate::domain::node::{Node, NodeCommand};
use crate::domain::pool::Pool;
use crate::domain::task::{Task, TaskCommand, TaskStatus};
use crate::domain::{Ctx, RejectionCode};
use crate::server::supervisors::autoscale::ReportUsage;
use crate::server::supervisors::liveness::Heartbeat;
use crate::server::supervisors::placement::{node_key, JobFacts, PollAsk};
use crate::store::StreamId;
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId};

/// How often a busy node's changing task count is recorded.
const LOAD_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A node agent's call, on its way to its handler.
pub(super) struct NodeCall<'a> {
    pub account: &'a AccountName,
    pub pool: &'a PoolId,
    pub node: &'a NodeId,
    pub stream: StreamId,
    pub principal: Principal,
}

impl NodeCall<'_> {
    /// The causation of what this call records.
    fn ctx(&self, service: &Service) -> Ctx {
        service.ctx(self.principal.clone(), None)
    }
}

impl Service {
    /// Waits until placement has folded everything recorded so far, so an
    /// agent told "recorded" is never handed the same attempt again (its
    /// next poll sees the picture with the report in it).
    pub(super) async fn placement_saw_it(&self) {
        let head = self.core.store().head();
        let wait = self.supervisors.placement.caught_up(head);
        // A stalled feed must not stall agents; placement catches up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
    }

    /// A node agent's requests.
    pub(super) async fn agent(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        request: Request,
    ) -> Result<Response, ApiError> {
        let me = NodeCall {
            account,
            pool,
            node,
            stream: StreamId::node(account, pool, node),
            principal: Principal::Node {
                account: account.clone(),
                pool: pool.clone(),
                node: node.clone(),
            },
        };
        let (principal, node_stream) = (&me.principal, &me.stream);
        let ctx = || me.ctx(self);
        // Any call from the agent is its heartbeat.
        self.supervisors
            .liveness
            .do_send(Heartbeat(node_key(account, pool, node)));
        // A node reads its account's blobs (resource files, packages) and
        // writes outputs, as the account could; it may not delete.
        if request.is_blob() && !matches!(request, Request::DeleteBlob { .. }) {
            return self.blob_request(account, request).await;
        }
        match request {
            Request::AgentRegister { agent } => {
                self.agent_register(account, pool, node_stream, agent, ctx())
                    .await
            }
            Request::AgentUsage { usage } => {
                self.keep_usage(account, pool, node, usage);
                Ok(Response::Recorded)
            }
            Request::AgentSecrets { generation } => {
                self.agent_secrets(account, pool, generation).await
            }
            Request::AgentStartTaskBegin => {
                self.core
                    .execute::<Node>(node_stream, NodeCommand::BeginStartTask, ctx())
                    .await?;
                Ok(Response::Recorded)
            }
            Request::AgentStartTaskFinished {
                success,
                exit_code,
                message,
            } => {
                let command = NodeCommand::FinishStartTask {
                    success,
                    exit_code,
                    message,
                };
                self.core
                    .execute::<Node>(node_stream, command, ctx())
                    .await?;
                Ok(Response::Recorded)
            }
            Request::AgentPoll {
                running,
                reporting,
                wait_ms,
                releases_running,
                usage,
                secrets_seen,
            } => {
                if let Some(usage) = usage {
                    self.keep_usage(account, pool, node, usage);
                }
                let wait = std::time::Duration::from_millis(u64::from(wait_ms))
                    .min(self.supervisors.poll_wait_max);
                let ask = PollAsk {
                    running,
                    reporting,
                    releases_running,
                    secrets_seen,
                    wait,
                };
                self.agent_poll(&me, ask).await
            }
            Request::AgentJobPreparationEnded { job, status } => {
                let node = node.clone();
                let command = crate::domain::job::JobCommand::RecordPreparation { node, status };
                self.record_on_job(&me, &job, command).await
            }
            Request::AgentJobReleaseEnded { job, status } => {
                let node = node.clone();
                let command = crate::domain::job::JobCommand::RecordRelease { node, status };
                self.record_on_job(&me, &job, command).await
            }
            Request::AgentFileData { read, result } => {
                // An answer nobody waits for any more (timed out) is dropped.
                self.supervisors
                    .placement
                    .deliver_read(account, pool, node, read, result)
                    .await;
                Ok(Response::Recorded)
            }
            Request::AgentStarted { job, task, attempt } => {
                let stream = StreamId::task(account, &job, &task);
                match self
                    .core
                    .execute::<Task>(&stream, TaskCommand::StartTask { attempt }, ctx())
                    .await
                {
                    Ok(_) => {
                        self.placement_saw_it().await;
                        Ok(Response::Recorded)
                    }
                    // Reported twice (a resend after a lost reply).
                    Err(CoreError::Rejected(r)) if r.code == RejectionCode::TaskStateConflict => {
                        Ok(Response::Recorded)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Request::AgentCompleted { completions } => {
                self.agent_completed(&me, completions, ctx()).await
            }
            _ => Err(permission(
                "node agents may only register, poll and report",
                &Caller::Node(principal.clone()),
            )),
        }
    }

    /// What an assignment carries of a job the picture has not folded
    /// yet, from the job's actor: its common resource files, its manager
    /// (and creation time), its preparation, its variables.
    async fn job_facts_of_actor(
        &self,
        account: &AccountName,
        job: &crate::types::JobId,
    ) -> Result<JobFacts, ApiError> {
        let stream = StreamId::job(account, job);
        let state = self.core.state::<Job>(&stream).await?.state;
        let created = state.created_at.unwrap_or(crate::types::Timestamp::EPOCH);
        Ok(state
            .spec
            .map(|j| JobFacts {
                manager: j.job_manager.map(|m| (m.task.id, created)),
                files: std::sync::Arc::new(j.common_resource_files),
                preparation: j.preparation.map(|p| std::sync::Arc::new(*p)),
                env: std::sync::Arc::new(j.common_env),
            })
            .unwrap_or_default())
    }

    /// Ended attempts an agent reports, decided together and appended as
    /// one where the tasks' actors are not running (see
    /// `Core::execute_batch`); each gets its own answer.
    async fn agent_completed(
        &self,
        me: &NodeCall<'_>,
        completions: Vec<crate::api::Completion>,
        ctx: Ctx,
    ) -> Result<Response, ApiError> {
        if completions.is_empty() || completions.len() > crate::api::AGENT_COMPLETIONS_MAX {
            return Err(ApiError::rejected(
                RejectionCode::InvalidValue,
                format!(
                    "a completion report carries 1 to {} completions, not {}",
                    crate::api::AGENT_COMPLETIONS_MAX,
                    completions.len()
                ),
            ));
        }
        let account = me.account;
        let attempts: Vec<(StreamId, u32)> = completions
            .iter()
            .map(|c| (StreamId::task(account, &c.job, &c.task), c.attempt))
            .collect();
        let ended: Vec<(JobId, TaskId, u32)> = completions
            .iter()
            .map(|c| (c.job.clone(), c.task.clone(), c.attempt))
            .collect();
        let commands = completions
            .into_iter()
            .zip(&attempts)
            .map(|(c, (stream, _))| {
                let command = TaskCommand::CompleteTask {
                    attempt: c.attempt,
                    result: c.result,
                    outputs: c.outputs,
                };
                (stream.clone(), command)
            })
            .collect();
        let outcomes = self.core.execute_batch::<Task>(commands, ctx).await;
        let mut results = Vec::with_capacity(outcomes.len());
        for ((stream, attempt), outcome) in attempts.iter().zip(outcomes) {
            results.push(self.recorded(stream, *attempt, outcome).await);
        }
        // Recorded (now or before): placement's picture drops them at once.
        // Waiting for the fold alone handed them out again whenever the feed
        // lagged past that wait, as it does while a large job is added.
        let recorded = ended
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(attempt, _)| attempt)
            .collect();
        let placement = &self.supervisors.placement;
        placement.ended(account, me.pool, me.node, recorded).await;
        if results.iter().any(|r| matches!(r, Ok(true))) {
            self.placement_saw_it().await;
        }
        Ok(Response::Reported {
            results: results.into_iter().map(|r| r.map(|_| ())).collect(),
        })
    }

    /// What recording one ended attempt came to: Ok(true) if recorded
    /// now, Ok(false) if it had been (a resend after a lost reply).
    async fn recorded(
        &self,
        stream: &StreamId,
        attempt: u32,
        outcome: Result<crate::actors::Outcome<Task>, CoreError>,
    ) -> Result<bool, ApiError> {
        match outcome {
            Ok(_) => Ok(true),
            Err(CoreError::Rejected(r)) if r.code == RejectionCode::StaleAttempt => {
                // Recorded before (same attempt, no longer running): a
                // resend. Otherwise the attempt was superseded.
                let now = self.core.state::<Task>(stream).await?;
                let recorded = now.state.attempt == attempt
                    && !matches!(now.state.status, TaskStatus::Assigned | TaskStatus::Running);
                if recorded {
                    Ok(false)
                } else {
                    Err(r.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn join(
        &self,
        account: &AccountName,
        pool: &PoolId,
        name: String,
    ) -> Result<Response, ApiError> {
        let node = NodeId::new(format!("node-{}", &new_uuid().simple().to_string()[..12]))
            .map_err(internal)?;
        let stream = StreamId::node(account, pool, &node);
        let principal = Principal::Node {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
        };
        self.core
            .execute::<Node>(
                &stream,
                NodeCommand::AddNode {
                    account: account.clone(),
                    pool: pool.clone(),
                    node: node.clone(),
                    name,
                },
                self.ctx(principal, None),
            )
            .await?;
        Ok(Response::Joined {
            credential: self.node_credential(account, pool, &node),
            node,
        })
    }

    /// An agent registering its machine: the node's start task and
    /// packages in reply.
    pub(super) async fn agent_register(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node_stream: &StreamId,
        agent: crate::domain::node::AgentInfo,
        ctx: Ctx,
    ) -> Result<Response, ApiError> {
        let pool_state = self
            .show::<Pool>(&StreamId::pool(account, pool), pool.as_str())
            .await?;
        let (start_task, application_packages, task_settings) = pool_state
            .state
            .spec
            .map(|p| (p.start_task, p.application_packages, p.task_settings))
            .unwrap_or_default();
        // A start task not waited for runs while the node works.
        let command = NodeCommand::RegisterAgent {
            agent,
            has_start_task: start_task.as_ref().is_some_and(|s| s.wait_for_success),
        };
        let heartbeat_ms = self.supervisors.poll_wait_max.as_millis() as u32;
        match self.core.execute::<Node>(node_stream, command, ctx).await {
            Ok(_) => Ok(Response::Registered {
                start_task,
                application_packages,
                task_settings,
                heartbeat_ms,
            }),
            // An agent restarting on a node that is already up.
            Err(CoreError::Rejected(r)) if r.code == RejectionCode::NodeStateConflict => {
                Ok(Response::Registered {
                    start_task: None,
                    application_packages,
                    task_settings,
                    heartbeat_ms,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An agent's long poll: its load recorded when it changed, then the
    /// attempts to start, the ones to cancel, file reads, a reboot.
    /// A preparation's or release's end, recorded on its job by the node.
    async fn record_on_job(
        &self,
        me: &NodeCall<'_>,
        job: &crate::types::JobId,
        command: crate::domain::job::JobCommand,
    ) -> Result<Response, ApiError> {
        self.exec::<Job>(StreamId::job(me.account, job), command, me.ctx(self))
            .await?;
        Ok(Response::Recorded)
    }

    /// A node's machine figures, kept in memory until the next sample
    /// takes them into the pool's log; a node removed meanwhile is simply
    /// dropped.
    fn keep_usage(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        usage: crate::api::agent::NodeUsage,
    ) {
        self.supervisors.autoscaler.do_send(ReportUsage {
            pool_key: format!("{account}/{pool}"),
            node: node.clone(),
            usage,
        });
    }

    pub(super) async fn agent_poll(
        &self,
        me: &NodeCall<'_>,
        ask: PollAsk,
    ) -> Result<Response, ApiError> {
        let (account, pool, node, node_stream) = (me.account, me.pool, me.node, &me.stream);
        let ctx = || me.ctx(self);
        // Recorded beside the poll, not before it: a changed count
        // is a durable append, and work must not wait for it. A
        // busy node's count is recorded at most once a second (it
        // changes with every task); idle ⇄ busy at once.
        let count = ask.running.len() as u32;
        let now = std::time::Instant::now();
        let due = match self.loads.borrow().get(node_stream) {
            None => true,
            Some((last, _)) if (*last == 0) != (count == 0) => true,
            Some((last, at)) => *last != count && now.duration_since(*at) >= LOAD_REPORT_EVERY,
        };
        if due {
            self.loads
                .borrow_mut()
                .insert(node_stream.clone(), (count, now));
            let load = NodeCommand::ReportLoad {
                running_tasks: count,
            };
            let (core, stream, load_ctx) = (self.core.clone(), node_stream.clone(), ctx());
            tokio::task::spawn_local(async move {
                if let Err(e) = core.execute::<Node>(&stream, load, load_ctx).await {
                    tracing::debug!(%stream, error = %e, "load report refused");
                }
            });
        }
        let work = self
            .supervisors
            .placement
            .work_for(account, pool, node, ask)
            .await?;
        let mut jobs = work.jobs;
        let mut assignments = Vec::with_capacity(work.to_start.len());
        for start in work.to_start {
            let (job, task, attempt) = (start.job, start.task, start.attempt);
            let spec = match start.spec {
                Some(spec) => Some(spec),
                // Not kept (assigned before a restart, or dropped): from
                // the task's actor, started from the state the assignment's
                // batch kept when it can be.
                None => {
                    let stream = StreamId::task(account, &job, &task);
                    self.core.state::<Task>(&stream).await?.state.spec
                }
            };
            let Some(spec) = spec.map(std::sync::Arc::unwrap_or_clone) else {
                continue;
            };
            let facts = match jobs.get(&job) {
                Some(facts) => facts.clone(),
                None => {
                    let facts = self.job_facts_of_actor(account, &job).await?;
                    jobs.insert(job.clone(), facts.clone());
                    facts
                }
            };
            let job_key = facts
                .manager
                .filter(|(id, _)| id == &task)
                .map(|(_, created)| {
                    crate::types::Secret::new(self.job_key(account, &job, created))
                });
            assignments.push(crate::api::Assignment {
                job,
                task,
                attempt,
                spec,
                job_resource_files: facts.files.as_ref().clone(),
                job_key,
                preparation: facts.preparation.map(|p| p.as_ref().clone()),
                job_env: facts.env.as_ref().clone(),
            });
        }
        Ok(Response::Work {
            assignments,
            cancel: work.cancel,
            reads: work.reads,
            reboot: work.reboot,
            reimage: work.reimage,
            releases: work.releases,
            secrets_epoch: work.secrets_epoch,
        })
    }
}
