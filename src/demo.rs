//! The demo "main job" of this stage: the seed's workflow driven through
//! the real actors and the real event log, with the node agents' reports
//! made in-process (real agents arrive with the compute layer).

use std::sync::Arc;

use crate::actors::{Core, CoreConfig, CoreError};
use crate::clock::{new_request_id, Clock};
use crate::domain::account::{Account, AccountCommand};
use crate::domain::job::{Job, JobCommand, JobSpec, OnAllTasksComplete, OnTaskFailure};
use crate::domain::node::{AgentInfo, Node, NodeCommand};
use crate::domain::pool::{
    NodeProvider, NodeSize, Pool, PoolCommand, PoolSpec, ScaleSettings, SchedulingPolicy,
};
use crate::domain::spec::CommandLine;
use crate::domain::task::{FailureCategory, Task, TaskCommand, TaskResult, TaskSpec};
use crate::domain::Ctx;
use crate::store::{EventStore, StreamId};
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId};

/// What the demo did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoSummary {
    pub account: String,
    pub pool: String,
    pub job: String,
    pub tasks: u32,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u32,
    pub job_status: String,
    pub sample_task: String,
}

fn ctx(clock: &dyn Clock, principal: &Principal) -> Ctx {
    Ctx::live(clock, principal.clone(), new_request_id())
}

/// Runs the demo workload against `store`. Must run inside an actix system.
pub async fn run(
    store: EventStore,
    clock: Arc<dyn Clock>,
    tasks: u32,
) -> Result<DemoSummary, CoreError> {
    let core = Core::new(store, clock.clone(), CoreConfig::default());
    let admin = Principal::Admin;
    let suffix = format!("{:08x}", crate::clock::new_uuid().as_u128() as u32);
    let account = AccountName::new(format!("demo-{suffix}")).expect("valid id");
    let user = Principal::Account {
        account: account.clone(),
    };
    let c = clock.as_ref();

    core.execute::<Account>(
        &StreamId::account(&account),
        AccountCommand::CreateAccount {
            name: account.clone(),
        },
        ctx(c, &admin),
    )
    .await?;

    let pool_id = PoolId::new("render").expect("valid id");
    let spec = PoolSpec {
        id: pool_id.clone(),
        account: account.clone(),
        display_name: "Render farm".into(),
        node_size: NodeSize {
            cores: 4,
            memory_mib: 8192,
            task_slots: 4,
        },
        os: "linux-x86_64".into(),
        scale: ScaleSettings::Fixed { target_nodes: 2 },
        node_count_max: 10,
        inter_node_communication: false,
        secrets: vec![],
        start_task: None,
        scheduling: SchedulingPolicy::Spread,
        provider: NodeProvider::Local,
    };
    let pool_stream = StreamId::pool(&account, &pool_id);
    core.execute::<Pool>(
        &pool_stream,
        PoolCommand::CreatePool { spec },
        ctx(c, &user),
    )
    .await?;

    let system = Principal::System {
        component: "demo".into(),
    };
    let mut nodes = Vec::new();
    for i in 0..2 {
        let node = NodeId::new(format!("node-{i}")).expect("valid id");
        let stream = StreamId::node(&account, &pool_id, &node);
        core.execute::<Node>(
            &stream,
            NodeCommand::AddNode {
                account: account.clone(),
                pool: pool_id.clone(),
                node: node.clone(),
                name: format!("tvm-{i}"),
            },
            ctx(c, &system),
        )
        .await?;
        let agent = AgentInfo {
            hostname: "localhost".into(),
            address: format!("127.0.0.1:{}", 7100 + i),
            cores: 4,
            memory_mib: 8192,
            task_slots: 4,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        };
        let agent_principal = Principal::Node {
            account: account.clone(),
            pool: pool_id.clone(),
            node: node.clone(),
        };
        core.execute::<Node>(
            &stream,
            NodeCommand::RegisterAgent {
                agent,
                has_start_task: false,
            },
            ctx(c, &agent_principal),
        )
        .await?;
        nodes.push((node, agent_principal));
    }
    core.execute::<Pool>(&pool_stream, PoolCommand::CompleteResize, ctx(c, &system))
        .await?;

    let job_id = JobId::new("frames").expect("valid id");
    let job_stream = StreamId::job(&account, &job_id);
    let job_spec = JobSpec {
        id: job_id.clone(),
        account: account.clone(),
        pool: pool_id.clone(),
        display_name: "Render 'intro' frames".into(),
        priority: 100,
        max_wall_clock_secs: None,
        max_task_retries: 2,
        on_all_tasks_complete: OnAllTasksComplete::TerminateJob,
        on_task_failure: OnTaskFailure::NoAction,
    };
    core.execute::<Job>(
        &job_stream,
        JobCommand::CreateJob { spec: job_spec },
        ctx(c, &user),
    )
    .await?;

    let mut ids = Vec::new();
    for i in 0..tasks {
        let id = TaskId::new(format!("frame-{i:05}")).expect("valid id");
        let mut spec = TaskSpec::simple(
            id.clone(),
            CommandLine::Argv(vec!["render".into(), "--frame".into(), i.to_string()]),
        );
        spec.display_name = format!("frame {i}");
        core.add_task(&account, &job_id, spec, ctx(c, &user))
            .await?;
        ids.push(id);
    }

    // Every 17th frame fails its first attempt and is retried.
    let mut retried = 0;
    for (i, id) in ids.iter().enumerate() {
        let stream = StreamId::task(&account, &job_id, id);
        let (node, agent) = &nodes[i % nodes.len()];
        let mut attempts = 0;
        loop {
            let assigned = core
                .execute::<Task>(
                    &stream,
                    TaskCommand::AssignTask { node: node.clone() },
                    ctx(c, &system),
                )
                .await?;
            let attempt = assigned.state.attempt;
            core.execute::<Task>(&stream, TaskCommand::StartTask { attempt }, ctx(c, agent))
                .await?;
            let fail = i % 17 == 0 && attempts == 0;
            let result = TaskResult {
                exit_code: Some(if fail { 3 } else { 0 }),
                signal: None,
                duration_ms: 1000 + (i as u64 % 7) * 100,
                failure: fail.then(|| (FailureCategory::NonZeroExit, "exit code 3".to_string())),
            };
            let done = core
                .execute::<Task>(
                    &stream,
                    TaskCommand::CompleteTask { attempt, result },
                    ctx(c, agent),
                )
                .await?;
            attempts += 1;
            if done.state.status == crate::domain::task::TaskStatus::Completed {
                break;
            }
            retried += 1;
        }
    }

    let job = core.state::<Job>(&job_stream).await?.state;
    if let Some(reason) = job.completion_due() {
        core.execute::<Job>(
            &job_stream,
            JobCommand::CompleteJob { reason },
            ctx(c, &system),
        )
        .await?;
    }
    let job = core.state::<Job>(&job_stream).await?.state;
    core.store().flush().await?;
    Ok(DemoSummary {
        account: account.to_string(),
        pool: pool_stream.to_string(),
        job: job_stream.to_string(),
        tasks,
        succeeded: job.count(crate::domain::task::TaskBucket::Succeeded),
        failed: job.count(crate::domain::task::TaskBucket::Failed),
        retried,
        job_status: format!("{:?}", job.status).to_lowercase(),
        sample_task: ids
            .first()
            .map(|id| StreamId::task(&account, &job_id, id).to_string())
            .unwrap_or_default(),
    })
}
