//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use lote::clock::{Clock, ManualClock};
use lote::domain::account::AccountCommand;
use lote::domain::job::{JobSpec, OnAllTasksComplete, OnTaskFailure};
use lote::domain::pool::{NodeProvider, NodeSize, PoolSpec, ScaleSettings, SchedulingPolicy};
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::domain::Ctx;
use lote::store::{EventStore, StoreOptions, StreamId};
use lote::types::{AccountName, JobId, NodeId, PoolId, Principal, RequestId, TaskId, Timestamp};

pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-27T10:00:00Z").unwrap()
}

pub fn clock() -> ManualClock {
    ManualClock::new(t0())
}

/// A store in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_store(options: StoreOptions) -> (tempfile::TempDir, EventStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path(), options, Arc::new(clock())).unwrap();
    (dir, store)
}

/// A deterministic context: `n` seeds the fresh ids.
pub fn ctx_n(principal: Principal, n: u128) -> Ctx {
    Ctx {
        now: t0(),
        principal,
        request_id: RequestId(uuid::Uuid::from_u128(n)),
        fresh: [
            uuid::Uuid::from_u128(n * 4 + 1),
            uuid::Uuid::from_u128(n * 4 + 2),
            uuid::Uuid::from_u128(n * 4 + 3),
            uuid::Uuid::from_u128(n * 4 + 4),
        ],
    }
}

pub fn ctx(principal: Principal) -> Ctx {
    ctx_n(principal, 7)
}

pub fn live_ctx(clock: &dyn Clock, principal: Principal) -> Ctx {
    Ctx::live(clock, principal, lote::clock::new_request_id())
}

pub fn acme() -> AccountName {
    AccountName::new("acme").unwrap()
}

pub fn user() -> Principal {
    Principal::Account { account: acme() }
}

pub fn system() -> Principal {
    Principal::System {
        component: "test".into(),
    }
}

pub fn agent(node: &str) -> Principal {
    Principal::Node {
        account: acme(),
        pool: pool_id(),
        node: NodeId::new(node).unwrap(),
    }
}

pub fn pool_id() -> PoolId {
    PoolId::new("pool-1").unwrap()
}

pub fn job_id() -> JobId {
    JobId::new("job-1").unwrap()
}

pub fn pool_spec(target_nodes: u32) -> PoolSpec {
    PoolSpec {
        id: pool_id(),
        account: acme(),
        display_name: "test pool".into(),
        node_size: NodeSize {
            cores: 2,
            memory_mib: 2048,
            task_slots: 2,
        },
        os: "linux-x86_64".into(),
        scale: ScaleSettings::Fixed { target_nodes },
        node_count_max: 8,
        inter_node_communication: false,
        secrets: vec![],
        start_task: None,
        scheduling: SchedulingPolicy::Pack,
        provider: NodeProvider::Local,
        application_packages: vec![],
        task_settings: Default::default(),
    }
}

pub fn job_spec() -> JobSpec {
    JobSpec {
        id: job_id(),
        account: acme(),
        pool: pool_id(),
        display_name: "test job".into(),
        priority: 0,
        max_wall_clock_secs: None,
        max_task_retries: 1,
        on_all_tasks_complete: OnAllTasksComplete::NoAction,
        on_task_failure: OnTaskFailure::NoAction,
        common_resource_files: vec![],
        job_manager: Default::default(),
        dependencies: None,
        preparation: None,
        release: None,
        common_env: vec![],
        metadata: vec![],
        auto_pool: None,
    }
}

pub fn task_spec(id: &str) -> TaskSpec {
    TaskSpec::simple(
        TaskId::new(id).unwrap(),
        CommandLine::Shell("echo hello".into()),
    )
}

pub fn account_stream() -> StreamId {
    StreamId::account(&acme())
}

pub fn create_account_cmd() -> AccountCommand {
    AccountCommand::CreateAccount { name: acme() }
}
