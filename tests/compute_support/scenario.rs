//! Scenarios in the product's words, over a real server and real agents:
//!
//! ```ignore
//! let env = Env::new(&client);
//! env.pool("render").nodes(2).slots(2).await;            // created, nodes up
//! let job = env.job("frames").on("render").await;         // created
//! job.tasks((1..=8).map(|i| shell(&format!("f{i}"), "true"))).await;
//! job.wait(Duration::from_secs(60)).await;
//! ```
//!
//! Every step is a real request through the signed API; a refusal fails
//! the test with the server's words. Shared by the integration tests and
//! the compute benchmark (which includes this file by path).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

use lote::api::{Request, Response, ADD_TASKS_BATCH_MAX};
use lote::client::Client;
use lote::domain::job::{Job, JobSpec, OnAllTasksComplete};
use lote::domain::node::{Node, NodeState};
use lote::domain::pool::{NodeProvider, PoolSpec, ScaleSettings, SchedulingPolicy};
use lote::domain::spec::StartTask;
use lote::domain::task::TaskSpec;
use lote::domain::Versioned;
use lote::types::{AccountName, JobId, PoolId};

/// How long a scenario step waits for nodes to come up.
const NODES_UP_WITHIN: Duration = Duration::from_secs(60);

/// An account's view of a server, to build scenarios on.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    client: &'a Client,
}

impl<'a> Env<'a> {
    pub fn new(client: &'a Client) -> Self {
        Env { client }
    }

    pub fn client(&self) -> &'a Client {
        self.client
    }

    /// A pool to create: local, 1 node of 1 slot unless told otherwise.
    /// Awaiting it creates it and, for a local pool, waits for its nodes.
    pub fn pool(&self, id: &str) -> PoolPlan<'a> {
        PoolPlan {
            client: self.client,
            spec: PoolSpec::fixed(
                PoolId::new(id).expect("a valid pool id"),
                // The server puts the caller's account in.
                AccountName::new("self").expect("a valid name"),
                1,
                1,
            ),
            wait_for_nodes: true,
        }
    }

    /// A job to create; awaiting it creates it on its pool.
    pub fn job(&self, id: &str) -> JobPlan<'a> {
        JobPlan {
            client: self.client,
            spec: JobSpec::on_pool(
                JobId::new(id).expect("a valid job id"),
                AccountName::new("self").expect("a valid name"),
                PoolId::new("pool").expect("a valid pool id"),
            ),
        }
    }

    /// An existing job.
    pub fn existing_job(&self, id: &str) -> JobRef<'a> {
        JobRef {
            client: self.client,
            id: JobId::new(id).expect("a valid job id"),
        }
    }
}

/// A pool about to be created.
pub struct PoolPlan<'a> {
    client: &'a Client,
    spec: PoolSpec,
    wait_for_nodes: bool,
}

impl<'a> PoolPlan<'a> {
    pub fn nodes(mut self, n: u32) -> Self {
        self.spec.scale = ScaleSettings::Fixed { target_nodes: n };
        self.spec.node_count_max = self.spec.node_count_max.max(n);
        self
    }

    pub fn slots(mut self, n: u32) -> Self {
        self.spec.node_size.task_slots = n;
        self
    }

    pub fn spread(mut self) -> Self {
        self.spec.scheduling = SchedulingPolicy::Spread;
        self
    }

    /// Nodes are agents started by hand (`lote agent` with the join
    /// token), so creating it does not wait for any.
    pub fn remote(mut self) -> Self {
        self.spec.provider = NodeProvider::Remote;
        self.wait_for_nodes = false;
        self
    }

    pub fn start_task(mut self, start_task: StartTask) -> Self {
        self.spec.start_task = Some(start_task);
        self
    }

    /// Creates the pool and does not wait for its nodes.
    pub fn without_waiting(mut self) -> Self {
        self.wait_for_nodes = false;
        self
    }

    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    async fn create(self) -> Vec<Versioned<Node>> {
        let PoolPlan {
            client,
            spec,
            wait_for_nodes,
        } = self;
        let id = spec.id.clone();
        let count = match spec.scale {
            ScaleSettings::Fixed { target_nodes } => target_nodes,
            ScaleSettings::Autoscale { .. } => 0,
        };
        client
            .call(&Request::CreatePool {
                spec,
                request_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create pool {id}: {e}"));
        if !wait_for_nodes {
            return Vec::new();
        }
        nodes_ready(client, &id, count as usize).await
    }
}

impl<'a> IntoFuture for PoolPlan<'a> {
    type Output = Vec<Versioned<Node>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.create())
    }
}

/// Waits until `count` nodes of the pool are ready for tasks (idle or
/// running); returns them.
pub async fn nodes_ready(client: &Client, pool: &PoolId, count: usize) -> Vec<Versioned<Node>> {
    let deadline = Instant::now() + NODES_UP_WITHIN;
    loop {
        let nodes = match client
            .call(&Request::ListNodes { pool: pool.clone() })
            .await
            .unwrap_or_else(|e| panic!("list nodes of {pool}: {e}"))
        {
            Response::Nodes(nodes) => nodes,
            other => panic!("expected nodes, got {other:?}"),
        };
        let ready = nodes
            .iter()
            .filter(|n| matches!(n.state.state, NodeState::Idle | NodeState::Running))
            .count();
        if ready >= count {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "pool {pool}: {ready} of {count} nodes ready after {NODES_UP_WITHIN:?}: {:?}",
            nodes.iter().map(|n| n.state.state).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job about to be created.
pub struct JobPlan<'a> {
    client: &'a Client,
    spec: JobSpec,
}

impl<'a> JobPlan<'a> {
    /// The pool it runs on.
    pub fn on(mut self, pool: &str) -> Self {
        self.spec.pool = PoolId::new(pool).expect("a valid pool id");
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }

    pub fn max_task_retries(mut self, n: u32) -> Self {
        self.spec.max_task_retries = n;
        self
    }

    /// Its tasks may depend on each other; a failed parent does `action`
    /// to its dependents unless its exit conditions say otherwise.
    pub fn dependencies(mut self, action: lote::domain::task_spec::DependencyAction) -> Self {
        self.spec.dependencies = Some(lote::domain::job::JobDependencies {
            on_failed_parent: action,
        });
        self
    }

    /// The job completes (terminates) once all its tasks have.
    pub fn ends_with_its_tasks(mut self) -> Self {
        self.spec.on_all_tasks_complete = OnAllTasksComplete::TerminateJob;
        self
    }

    /// Creates it and adds `tasks`, in batches as a client would.
    pub async fn tasks(self, tasks: impl IntoIterator<Item = TaskSpec>) -> JobRef<'a> {
        let job = self.await;
        job.tasks(tasks).await;
        job
    }

    async fn create(self) -> JobRef<'a> {
        let JobPlan { client, spec } = self;
        let id = spec.id.clone();
        client
            .call(&Request::CreateJob {
                spec,
                request_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create job {id}: {e}"));
        JobRef { client, id }
    }
}

impl<'a> IntoFuture for JobPlan<'a> {
    type Output = JobRef<'a>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.create())
    }
}

/// A job that exists.
#[derive(Clone)]
pub struct JobRef<'a> {
    client: &'a Client,
    id: JobId,
}

impl JobRef<'_> {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Adds tasks in batches of the API's maximum, each with a fresh
    /// request id.
    pub async fn tasks(&self, tasks: impl IntoIterator<Item = TaskSpec>) -> u64 {
        let tasks: Vec<TaskSpec> = tasks.into_iter().collect();
        for batch in tasks.chunks(ADD_TASKS_BATCH_MAX) {
            self.client
                .call(&Request::AddTasks {
                    job: self.id.clone(),
                    tasks: batch.to_vec(),
                    request_id: Some(lote::clock::new_uuid()),
                })
                .await
                .unwrap_or_else(|e| panic!("add tasks to {}: {e}", self.id));
        }
        tasks.len() as u64
    }

    /// The job's state now.
    pub async fn state(&self) -> Versioned<Job> {
        match self
            .client
            .call(&Request::ShowJob {
                job: self.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("show job {}: {e}", self.id))
        {
            Response::Job(job) => job,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    /// Waits until none of its tasks is unfinished; returns its state.
    pub async fn wait(&self, within: Duration) -> Versioned<Job> {
        let deadline = Instant::now() + within;
        loop {
            let job = self.state().await;
            if job.state.tasks_added > 0 && job.state.unfinished() == 0 {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {}: {} of {} tasks unfinished after {within:?}",
                self.id,
                job.state.unfinished(),
                job.state.tasks_added
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
