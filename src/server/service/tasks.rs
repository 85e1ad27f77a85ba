//! Tasks: add (in batches), list, show, terminate, delete, why one waits,
//! and its attempts' output and files (read by the agent of the node an
//! attempt ran on).

use super::{internal, misrouted, AccountCall, Service, LIST_ITEMS_MAX};
use crate::api::{ApiError, Request, Response};
use crate::domain::job::Job;
use crate::domain::pool::Pool;
use crate::domain::task::{Task, TaskCommand, TaskStatus};
use crate::domain::{self, Rejection, RejectionCode};
use crate::store::StreamId;
use crate::types::{AccountName, JobId, NodeId, TaskId};

impl Service {
    /// A task request of an account.
    pub(super) async fn tasks(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        match request {
            Request::AddTasks { job, tasks, .. } => self.add_tasks(call, request, job, tasks).await,
            Request::ReadTaskOutput { .. }
            | Request::ListTaskFiles { .. }
            | Request::ReadTaskFile { .. } => self.task_files(call, request).await,
            Request::ListTasks { job, after, limit } => {
                self.show::<Job>(&call.job_stream(job), job.as_str())
                    .await?;
                let limit = match *limit as usize {
                    0 => LIST_ITEMS_MAX,
                    n => n.min(LIST_ITEMS_MAX),
                };
                let after = after.as_ref().map(|t| StreamId::task(account, job, t));
                let (items, next) =
                    self.page::<Task>(&format!("task/{account}/{job}/"), after.as_ref(), limit)?;
                let next =
                    next.and_then(|s| s.segments().last().and_then(|t| TaskId::new(*t).ok()));
                Ok(Response::Tasks { items, next })
            }
            Request::ShowTask { job, task } => Ok(Response::Task(
                self.show::<Task>(&StreamId::task(account, job, task), task.as_str())
                    .await?,
            )),
            Request::TerminateTask { job, task, reason } => {
                self.exec::<Task>(
                    StreamId::task(account, job, task),
                    TaskCommand::TerminateTask {
                        reason: reason.clone(),
                    },
                    ctx(),
                )
                .await
            }
            Request::DeleteTask { job, task } => {
                self.exec::<Task>(
                    StreamId::task(account, job, task),
                    TaskCommand::DeleteTask,
                    ctx(),
                )
                .await
            }
            Request::ExplainTask { job, task } => {
                let stream = StreamId::task(account, job, task);
                let state = self.show::<Task>(&stream, task.as_str()).await?.state;
                // The picture must include everything durable so far.
                let placement = &self.supervisors.placement;
                placement.caught_up(self.core.store().head()).await;
                let of = stream.clone();
                let found = placement.inspect(move |s| s.explain(&of)).await?;
                let waiting = match found {
                    Some((pool_key, slots, reasons)) => Some(crate::api::explain::Explanation {
                        slots,
                        reasons,
                        pool: self.pool_context(&pool_key).await?,
                    }),
                    None => None,
                };
                Ok(Response::TaskExplanation {
                    job: job.clone(),
                    task: task.clone(),
                    status: state.status,
                    waiting,
                })
            }
            other => Err(misrouted(other)),
        }
    }

    /// A file operation on an attempt's directory (its output or any file
    /// in it), carried out by the agent of the node it ran on: (node,
    /// attempt, answer, completed).
    pub(super) async fn task_file(
        &self,
        account: &AccountName,
        job: &crate::types::JobId,
        task: &TaskId,
        attempt: u32,
        path: &str,
        op: crate::api::FileOp,
    ) -> Result<(NodeId, u32, crate::api::FileAnswer, bool), ApiError> {
        // An unknown job is named as such, not as a missing task.
        self.show::<Job>(&StreamId::job(account, job), job.as_str())
            .await?;
        let stream = StreamId::task(account, job, task);
        let state = self.show::<Task>(&stream, task.as_str()).await?.state;
        let attempt = if attempt == 0 { state.attempt } else { attempt };
        if attempt == 0 {
            return Err(ApiError::rejected(
                RejectionCode::TaskStateConflict,
                format!("task {task} has not run yet: it is queued (lote task show {job} {task})"),
            ));
        }
        if attempt > state.attempt {
            return Err(Rejection::invalid(format!(
                "task {task} has had {} attempts; there is no attempt {attempt}",
                state.attempt
            ))
            .into());
        }
        // Whether the attempt has ended is decided before reading, so a
        // reader that sees `completed` and reads to the end has it all.
        let completed = !(attempt == state.attempt
            && matches!(state.status, TaskStatus::Assigned | TaskStatus::Running));
        // The attempt's node, from its assignment in the task's history.
        let mut node = None;
        for e in self.core.store().read_stream(&stream, 1, usize::MAX)? {
            if let Ok(crate::domain::task::TaskEvent::TaskAssigned {
                placement,
                attempt: a,
                ..
            }) = domain::decode_event(crate::store::StreamKind::Task, &e)
            {
                if a == attempt {
                    node = Some(placement);
                }
            }
        }
        let Some(placed) = node else {
            return Err(internal(format!(
                "task {task} attempt {attempt} has no assignment"
            )));
        };
        let root = crate::api::FileRoot::Attempt(crate::api::AttemptRef {
            job: job.clone(),
            task: task.clone(),
            attempt,
        });
        let answer = self
            .ask_agent(account, &placed.pool, &placed.node, root, path, op, || {
                format!(
                    "attempt {attempt} of task {task} ran on node {}, which has left pool {}; its files went with it",
                    placed.node, placed.pool
                )
            })
            .await?;
        Ok((placed.node, attempt, answer, completed))
    }

    /// A batch of tasks for a job: checked whole (size, packages, slots)
    /// before any is added.
    async fn add_tasks(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
        job: &JobId,
        tasks: &[crate::domain::task::TaskSpec],
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        if tasks.is_empty() || tasks.len() > crate::api::ADD_TASKS_BATCH_MAX {
            return Err(Rejection::invalid(format!(
                "a batch holds 1..={} tasks, not {}; split it",
                crate::api::ADD_TASKS_BATCH_MAX,
                tasks.len()
            ))
            .into());
        }
        let job_state = self
            .show::<Job>(&call.job_stream(job), job.as_str())
            .await?;
        // A package that does not exist would fail every attempt.
        let mut refs: Vec<&crate::domain::spec::PackageRef> = tasks
            .iter()
            .flat_map(|t| t.application_packages.iter())
            .collect();
        refs.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
        refs.dedup();
        for r in refs {
            self.blobs
                .resolve(account, r.id.clone(), r.version.clone())
                .await
                .map_err(|mut e| {
                    e.message = format!("{}; no task was added", e.message);
                    e
                })?;
        }
        // A task no node of the pool could ever hold is refused now,
        // not left queued for ever.
        if let Some(spec) = job_state.state.spec.as_ref() {
            let pool = self
                .show::<Pool>(&call.pool_stream(&spec.pool), spec.pool.as_str())
                .await?;
            let node_slots = pool.state.spec.map(|p| p.node_size.task_slots).unwrap_or(0);
            if let Some(t) = tasks
                .iter()
                .find(|t| t.required_slots > node_slots || t.required_slots == 0)
            {
                return Err(Rejection::invalid(format!(
                    "task {} needs {} slots; nodes of pool {} have {node_slots}, and a task needs at least 1",
                    t.id, t.required_slots, spec.pool
                ))
                .into());
            }
        }
        self.parents_exist(call, job, tasks).await?;
        let reply = Response::TasksAdded {
            job: job.clone(),
            count: tasks.len() as u32,
        };
        let tasks = tasks.to_vec();
        self.idempotent(account, request, call.body, reply, |extra| async move {
            self.core
                .add_tasks(account, job, tasks, ctx(), extra)
                .await?;
            Ok(())
        })
        .await
    }

    /// Every parent a batch names must be in the batch or in the job (not
    /// deleted), and every range must select a task: asked of placement's
    /// picture, which holds each job's tasks by id, once per batch (a read
    /// of each parent's actor cost a task actor per parent). A range over
    /// nothing would let its dependent run at once, never what its writer
    /// meant (`add-range` names tasks `task-1`, not `1`).
    async fn parents_exist(
        &self,
        call: &AccountCall<'_>,
        job: &crate::types::JobId,
        tasks: &[crate::domain::task::TaskSpec],
    ) -> Result<(), ApiError> {
        use crate::domain::task_spec::numeric_id;
        let in_batch: std::collections::HashSet<&str> =
            tasks.iter().map(|t| t.id.as_str()).collect();
        let mut numbered: Vec<u64> = tasks
            .iter()
            .filter_map(|t| numeric_id(t.id.as_str()))
            .collect();
        numbered.sort_unstable();
        let mut ids = Vec::new();
        let mut ranges = Vec::new();
        for t in tasks {
            for p in &t.depends_on.task_ids {
                if !in_batch.contains(p.as_str()) {
                    ids.push((t.id.clone(), p.clone()));
                }
            }
            // A backwards range is refused by name when the spec is checked.
            for r in t.depends_on.ranges.iter().filter(|r| r.start <= r.end) {
                let from = numbered.partition_point(|n| *n < r.start);
                if numbered.get(from).is_none_or(|n| *n > r.end) {
                    ranges.push((t.id.clone(), *r));
                }
            }
        }
        if ids.is_empty() && ranges.is_empty() {
            return Ok(());
        }
        // The picture must include every task added so far.
        let placement = &self.supervisors.placement;
        placement.caught_up(self.core.store().head()).await;
        let stream = call.job_stream(job);
        let asked_ids: Vec<_> = ids.iter().map(|(_, p)| p.clone()).collect();
        let asked_ranges: Vec<_> = ranges.iter().map(|(_, r)| *r).collect();
        let (ids_found, ranges_found) = placement
            .inspect(move |s| {
                (
                    s.parents_known(&stream, &asked_ids),
                    s.ranges_select(&stream, &asked_ranges),
                )
            })
            .await?;
        let refuse = |detail: String| -> ApiError {
            Rejection::new(crate::domain::RejectionCode::DependencyNotFound, detail).into()
        };
        if let Some((task, parent)) = ids.iter().zip(ids_found).find(|(_, f)| !f).map(|(a, _)| a) {
            return Err(refuse(format!(
                "task {task} depends on {parent}, which is neither in job {job} nor in this batch \
                 (or was deleted); add parents first or in the same batch"
            )));
        }
        if let Some((task, r)) = ranges
            .iter()
            .zip(ranges_found)
            .find(|(_, f)| !f)
            .map(|(a, _)| a)
        {
            return Err(refuse(format!(
                "task {task} depends on the range {}-{}, which selects no task of job {job}: \
                 a range covers tasks whose ids are integers (1, 07), not task-1; \
                 `lote task add-range JOB 1 N --prefix ''` names them 1 to N",
                r.start, r.end
            )));
        }
        Ok(())
    }

    /// An attempt's output and files, read by its node's agent.
    async fn task_files(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        match request {
            Request::ReadTaskOutput {
                job,
                task,
                attempt,
                stream,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                let (node, attempt, answer, completed) = self
                    .task_file(account, job, task, *attempt, stream.file_name(), op)
                    .await?;
                match answer {
                    crate::api::FileAnswer::Chunk(chunk) => Ok(Response::TaskOutput {
                        node,
                        attempt,
                        chunk,
                        completed,
                    }),
                    crate::api::FileAnswer::Listing(_) => {
                        Err(internal("the agent answered a read with a listing"))
                    }
                }
            }
            Request::ListTaskFiles {
                job,
                task,
                attempt,
                path,
                recursive,
            } => {
                let op = crate::api::FileOp::List {
                    recursive: *recursive,
                };
                self.task_files_reply(account, job, task, *attempt, path, op)
                    .await
            }
            Request::ReadTaskFile {
                job,
                task,
                attempt,
                path,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                self.task_files_reply(account, job, task, *attempt, path, op)
                    .await
            }
            other => Err(misrouted(other)),
        }
    }

    /// A listing or read of an attempt's files, as the files reply.
    async fn task_files_reply(
        &self,
        account: &AccountName,
        job: &JobId,
        task: &TaskId,
        attempt: u32,
        path: &str,
        op: crate::api::FileOp,
    ) -> Result<Response, ApiError> {
        let (node, _, answer, completed) = self
            .task_file(account, job, task, attempt, path, op)
            .await?;
        Ok(Response::Files {
            node,
            answer,
            completed,
        })
    }
}
