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
//! whole loop (planning plus folding the assignments and completions).
//! Without `--bench` it is a quick smoke run of itself.

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

fn main() {
    let smoke = smoke();
    let nodes = arg("--nodes", 100) as u32;
    let slots = arg("--slots", 4) as u32;
    let tasks = arg("--tasks", if smoke { 5_000 } else { 100_000 });
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
    let spec = JobSpec::on_pool(job_id.clone(), account.clone(), pool_id.clone());
    for e in log.run(
        &mut job,
        &mut v,
        &job_stream,
        JobCommand::CreateJob { spec },
        system.clone(),
    ) {
        scheduler.observe(&e);
    }

    // The queue.
    let mut states: Vec<(StreamId, Task, u64)> = Vec::with_capacity(tasks as usize);
    let started = Instant::now();
    for i in 0..tasks {
        let id = TaskId::new(format!("t{i:07}")).unwrap();
        let stream = StreamId::task(&account, &job_id, &id);
        let (mut state, mut v) = (Task::default(), 0);
        let add = TaskCommand::AddTask {
            account: account.clone(),
            job: job_id.clone(),
            pool: pool_id.clone(),
            spec: TaskSpec::simple(id, CommandLine::Shell("true".into())),
            max_task_retries: 0,
        };
        for e in log.run(&mut state, &mut v, &stream, add, system.clone()) {
            scheduler.observe(&e);
        }
        states.push((stream, state, v));
    }
    let queued_in = started.elapsed();
    assert_eq!(scheduler.queued_len() as u64, tasks);
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
    let mut planning = Duration::ZERO;
    let mut placed = 0u64;
    let mut rounds = 0u64;
    let whole = Instant::now();
    while placed < tasks {
        let t = Instant::now();
        let plan = scheduler.plan();
        planning += t.elapsed();
        assert!(
            !plan.is_empty(),
            "a round placed nothing with {placed} of {tasks} placed"
        );
        rounds += 1;
        placed += plan.len() as u64;
        for p in plan {
            let stream = StreamId::task(&p.account, &p.job, &p.task);
            let (_, state, v) = &mut states[index[&stream]];
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
            for e in assigned.iter().chain(&done) {
                scheduler.observe(e);
            }
        }
    }
    let whole = whole.elapsed();
    println!(
        "placement: {nodes} nodes x {slots} slots, {tasks} queued tasks (queued in {:.2}s)",
        queued_in.as_secs_f64()
    );
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
