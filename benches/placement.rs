//! Placement alone, no processes: the scheduler's picture of a pool of
//! `--nodes` nodes (100) with `--slots` slots each (4) and `--tasks` queued
//! tasks (100,000), fed the same events the log would carry. Each round
//! plans onto the free slots; the planned tasks are then folded back as
//! assigned and completed (what the agents' reports would record), which
//! frees their slots for the next round.
//!
//!   cargo bench --bench placement
//!   cargo bench --bench placement -- --nodes 100 --slots 4 --tasks 100000
//!
//! Prints placements per second counting planning only, and counting the
//! whole loop (planning plus folding the assignments, completions and the
//! job's count changes). Without `--bench` it is a quick smoke run of
//! itself.
//!
//! With dependencies (`--deps fan-in`): the tasks are numbered and a merge
//! task depends on the range of all of them. `--deps chains`: `--tasks`
//! chains of two, each second task waiting for its first. Also prints the
//! dependency graph's bytes per edge.
//!
//!   cargo bench --bench placement -- --deps fan-in
//!   cargo bench --bench placement -- --deps chains

mod common;

use std::time::{Duration, Instant};

use common::{arg, smoke};
use lote::domain::job::{Job, JobCommand, JobSpec};
use lote::domain::node::{AgentInfo, Node, NodeCommand};
use lote::domain::pool::{Pool, PoolCommand, PoolSpec, SchedulingPolicy};
use lote::domain::spec::CommandLine;
use lote::domain::task::{Task, TaskCommand, TaskResult, TaskSpec};
use lote::domain::Aggregate;
use lote::store::{Envelope, StreamId};
use lote::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId};

/// Runs commands on in-memory aggregates and turns their events into the
/// envelopes the log would hold.
struct Log {
    position: u64,
}

impl Log {
    fn run<A: Aggregate>(
        &mut self,
        state: &mut A,
        version: &mut u64,
        stream: &StreamId,
        command: A::Command,
        principal: Principal,
    ) -> Vec<Envelope> {
        let at = (version, &mut self.position);
        lote::domain::decide_to_envelopes(state, at, stream, command, principal)
            .expect("the command is accepted")
    }
}

fn simple(id: &str) -> TaskSpec {
    TaskSpec::simple(TaskId::new(id).unwrap(), CommandLine::Shell("true".into()))
}

fn main() {
    let smoke = smoke();
    let nodes = arg("--nodes", 100) as u32;
    let slots = arg("--slots", 4) as u32;
    let tasks = arg("--tasks", if smoke { 5_000 } else { 100_000 });
    let deps = common::arg_value("--deps").unwrap_or_else(|| "none".into());
    assert!(
        matches!(deps.as_str(), "none" | "fan-in" | "chains"),
        "--deps is none, fan-in or chains"
    );
    let system = Principal::System {
        component: "bench".into(),
    };
    let account = AccountName::new("bench").unwrap();
    let pool_id = PoolId::new("p").unwrap();
    let job_id = JobId::new("j").unwrap();
    let mut log = Log { position: 0 };
    let mut scheduler = lote::server::supervisors::scheduler::Scheduler::default();

    // The pool, its nodes (registered, idle), the job.
    let pool_stream = StreamId::pool(&account, &pool_id);
    let spec = PoolSpec {
        scheduling: SchedulingPolicy::Spread,
        ..PoolSpec::fixed(pool_id.clone(), account.clone(), nodes, slots)
    };
    let (mut pool, mut v) = (Pool::default(), 0);
    for e in log.run(
        &mut pool,
        &mut v,
        &pool_stream,
        PoolCommand::CreatePool { spec },
        system.clone(),
    ) {
        scheduler.observe(&e);
    }
    for i in 0..nodes {
        let node = NodeId::new(format!("node-{i}")).unwrap();
        let stream = StreamId::node(&account, &pool_id, &node);
        let (mut state, mut v) = (Node::default(), 0);
        let add = NodeCommand::AddNode {
            account: account.clone(),
            pool: pool_id.clone(),
            node: node.clone(),
            name: format!("tvm-{i}"),
        };
        let agent = Principal::Node {
            account: account.clone(),
            pool: pool_id.clone(),
            node: node.clone(),
        };
        let register = NodeCommand::RegisterAgent {
            agent: AgentInfo {
                hostname: format!("host-{i}"),
                address: "127.0.0.1".into(),
                cores: slots,
                memory_mib: 4096,
                task_slots: slots,
                agent_version: "bench".into(),
            },
            has_start_task: false,
        };
        let mut envelopes = log.run(&mut state, &mut v, &stream, add, system.clone());
        envelopes.extend(log.run(&mut state, &mut v, &stream, register, agent));
        for e in envelopes {
            scheduler.observe(&e);
        }
    }
    let job_stream = StreamId::job(&account, &job_id);
    let (mut job, mut v) = (Job::default(), 0);
    let mut spec = JobSpec::on_pool(job_id.clone(), account.clone(), pool_id.clone());
    if deps != "none" {
        spec.dependencies = Some(lote::domain::job::JobDependencies {
            on_failed_parent: lote::domain::task_spec::DependencyAction::Cancel,
        });
    }
    for e in log.run(
        &mut job,
        &mut v,
        &job_stream,
        JobCommand::CreateJob { spec },
        system.clone(),
    ) {
        scheduler.observe(&e);
    }

    // The queue: with dependencies, the specs say what waits for what.
    let specs: Vec<TaskSpec> = match deps.as_str() {
        "fan-in" => {
            let mut specs: Vec<TaskSpec> = (0..tasks).map(|i| simple(&i.to_string())).collect();
            let mut merge = simple("merge");
            merge.depends_on.ranges = vec![lote::domain::task_spec::TaskIdRange {
                start: 0,
                end: tasks - 1,
            }];
            specs.push(merge);
            specs
        }
        "chains" => (0..tasks)
            .flat_map(|i| {
                let first = simple(&format!("a{i:07}"));
                let mut second = simple(&format!("b{i:07}"));
                second.depends_on.task_ids = vec![first.id.clone()];
                [first, second]
            })
            .collect(),
        _ => (0..tasks).map(|i| simple(&format!("t{i:07}"))).collect(),
    };
    let total = specs.len() as u64;
    let mut states: Vec<(StreamId, Task, u64)> = Vec::with_capacity(specs.len());
    let started = Instant::now();
    for spec in specs {
        let stream = StreamId::task(&account, &job_id, &spec.id);
        let (mut state, mut v) = (Task::default(), 0);
        let add = TaskCommand::AddTask {
            account: account.clone(),
            job: job_id.clone(),
            pool: pool_id.clone(),
            spec,
            max_task_retries: 0,
        };
        for e in log.run(&mut state, &mut v, &stream, add, system.clone()) {
            scheduler.observe(&e);
        }
        states.push((stream, state, v));
    }
    let queued_in = started.elapsed();
    let (edges, graph_bytes) = scheduler.dependency_footprint();
    let index: std::collections::HashMap<StreamId, usize> = states
        .iter()
        .enumerate()
        .map(|(i, (s, _, _))| (s.clone(), i))
        .collect();

    // Rounds until the queue is empty.
    let ok = TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 1,
        failure: None,
    };
    let counts_ctx = lote::domain::Ctx::live(
        &lote::clock::SystemClock,
        system.clone(),
        lote::clock::new_request_id(),
    );
    let mut planning = Duration::ZERO;
    let mut placed = 0u64;
    let mut rounds = 0u64;
    let whole = Instant::now();
    let mut job_version = v;
    while placed < total {
        let t = Instant::now();
        let plan = scheduler.plan();
        planning += t.elapsed();
        assert!(
            !plan.is_empty(),
            "a round placed nothing with {placed} of {total} placed"
        );
        rounds += 1;
        placed += plan.len() as u64;
        for p in plan {
            let stream = StreamId::task(&p.account, &p.job, &p.task);
            let (_, state, v) = &mut states[index[&stream]];
            let before = state.clone();
            let assigned = log.run(
                state,
                v,
                &stream,
                TaskCommand::AssignTask { node: p.node },
                system.clone(),
            );
            let done = log.run(
                state,
                v,
                &stream,
                TaskCommand::CompleteTask {
                    attempt: 1,
                    result: ok.clone(),
                    outputs: vec![],
                },
                system.clone(),
            );
            // The job's count change, appended with the completion (what
            // ends a parent for its dependents).
            let id = state.spec.as_ref().unwrap().id.clone();
            let change = lote::domain::task::counts_change(&id, &before, state).unwrap();
            job_version += 1;
            log.position += 1;
            let counted = lote::domain::to_envelope(
                &change,
                &job_stream,
                (job_version, log.position),
                &counts_ctx,
            )
            .unwrap();
            for e in assigned.iter().chain(&done).chain([&counted]) {
                scheduler.observe(e);
            }
        }
    }
    let whole = whole.elapsed();
    println!(
        "placement: {nodes} nodes x {slots} slots, {total} tasks, dependencies: {deps} (queued in {:.2}s)",
        queued_in.as_secs_f64()
    );
    if edges > 0 {
        println!(
            "  dependency graph:     {edges} edges, {graph_bytes} bytes: {:.1} bytes per edge, {:.1} per task [goal: <= 64 per edge]",
            graph_bytes as f64 / edges as f64,
            graph_bytes as f64 / total as f64
        );
    }
    println!(
        "  planning only:        {:>10.0} placements/s ({placed} in {:.3}s, {rounds} rounds; {} slots, each also holding prefetched work) [goal: >= 100000]",
        placed as f64 / planning.as_secs_f64(),
        planning.as_secs_f64(),
        nodes * slots
    );
    println!(
        "  with folding reports: {:>10.0} placements/s ({:.3}s, each placement folded as assigned and completed)",
        placed as f64 / whole.as_secs_f64(),
        whole.as_secs_f64()
    );
}
