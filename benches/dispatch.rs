//! Dispatch without spawning: how many tasks per second one server feeds,
//! and its CPU per task, when nodes cost nothing. `--agents` bench agents
//! (64) of `--slots` slots (16) join a remote pool over real connections
//! and report each attempt started and succeeded at once (see
//! `common/instant_agent.rs`); a job of `--tasks` tasks (200,000) is added
//! from 4 senders in batches; the figure runs from the first add to the
//! job's completion stamp. The server is a `lote server` process of its
//! own with a durable log (`--durability buffered` to compare), so its CPU
//! is its own.
//!
//!   cargo bench --bench dispatch
//!   cargo bench --bench dispatch -- --agents 64 --slots 16 --tasks 200000
//!   cargo bench --bench dispatch -- --agents 1000 --slots 4 --tasks 100000 --idle-secs 10 --kill 100
//!   cargo bench --bench dispatch -- --queued 1000000
//!
//! With `--queued N`, N tasks of a disabled job wait on the same pool
//! throughout (placement's queue holds them; the figure shows what a deep
//! queue costs), and the server's memory per queued task is reported.
//! With `--idle-secs S` the agents first sit connected and idle for S
//! seconds, and the server's CPU over them is reported (a thousand nodes
//! polling). With `--kill N`, after the job, N agents are stopped at once
//! (their connections dropped) and the time until the server marks each
//! one lost is reported against its `--node-lost-after-secs`.
//!
//! Without `--bench` it is a quick smoke run of itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::instant_agent::{self, Counters};
use common::server_process::{cpu_secs_of, ServerProcess};
use common::{arg, arg_value, must, new_account, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::job::{DisableTasks, JobSpec, OnAllTasksComplete};
use lote::domain::node::NodeState;
use lote::domain::pool::{NodeProvider, PoolSpec};
use lote::domain::spec::CommandLine;
use lote::domain::task::{TaskBucket, TaskSpec};
use lote::types::{AccountName, JobId, PoolId, TaskId};

/// Seconds a silent node has before the server calls it lost, as the
/// server is started here.
const LOST_AFTER_SECS: u64 = 5;

struct Plan {
    agents: u64,
    slots: u64,
    tasks: u64,
    idle_secs: u64,
    kill: u64,
    queued: u64,
}

fn main() {
    // A panic in an agent's task must end the run, not leave it waiting.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    let smoke = smoke();
    let plan = Plan {
        agents: arg("--agents", if smoke { 8 } else { 64 }),
        slots: arg("--slots", if smoke { 4 } else { 16 }),
        tasks: arg("--tasks", if smoke { 2_000 } else { 200_000 }),
        idle_secs: arg("--idle-secs", if smoke { 1 } else { 0 }),
        kill: arg("--kill", if smoke { 2 } else { 0 }),
        queued: arg("--queued", if smoke { 1_000 } else { 0 }),
    };
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench dispatch");
    }
    let durability = arg_value("--durability").unwrap_or_else(|| "sync".into());
    let data = common::scratch_dir();
    let lost_after = LOST_AFTER_SECS.to_string();
    // A thousand agents and the bench's clients each hold a connection.
    let connections = (plan.agents + 64).max(1024).to_string();
    let server = ServerProcess::start(
        &data.path().join("data"),
        &[
            "--durability",
            &durability,
            "--node-lost-after-secs",
            &lost_after,
            "--max-connections",
            &connections,
        ],
    );
    println!(
        "server pid {} on {}, log {durability}; {} agents x {} slots in this process",
        server.pid(),
        server.addr,
        plan.agents,
        plan.slots
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(&server, &plan));
    server.stop();
}

async fn bench(server: &ServerProcess, plan: &Plan) {
    let account = AccountName::new("bench").unwrap();
    let pool = PoolId::new("instant").unwrap();
    let key = new_account(&server.addr, &server.admin_key, &account, None).await;
    let client = Client::new(ClientConfig::new(
        server.addr.clone(),
        Credential::Account {
            account: account.clone(),
        },
        key,
    ));
    let spec = PoolSpec {
        provider: NodeProvider::Remote,
        node_count_max: plan.agents as u32 + 10,
        ..PoolSpec::fixed(
            pool.clone(),
            account.clone(),
            plan.agents as u32,
            plan.slots as u32,
        )
    };
    let create = Request::CreatePool {
        spec,
        request_id: None,
    };
    must(&client, create).await;
    let Response::JoinToken { token, .. } =
        must(&client, Request::ShowJoinToken { pool: pool.clone() }).await
    else {
        panic!("a join token")
    };
    let token = token.split('@').next().unwrap().to_string();
    if plan.queued > 0 {
        backlog(server, &client, &account, &pool, plan.queued).await;
    }

    let joining = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for i in 0..plan.agents {
        let joined =
            instant_agent::join(&server.addr, &account, &pool, &token, &format!("n{i}")).await;
        let node = joined.node.clone();
        let task = tokio::spawn(instant_agent::run(
            joined,
            plan.slots as u32,
            counters.clone(),
            stop.clone(),
        ));
        agents.push((node, task));
    }
    let idle = wait_nodes(&client, &pool, plan.agents, |s| s == NodeState::Idle).await;
    println!(
        "{} agents joined and registered in {:.2} s ({idle} idle)",
        plan.agents,
        joining.elapsed().as_secs_f64()
    );
    if plan.idle_secs > 0 {
        idle_cost(server, plan).await;
    }
    if plan.tasks > 0 {
        dispatch(server, &client, &account, &pool, plan, &counters).await;
    }
    if plan.kill > 0 {
        let tasks = (plan.tasks / 2).max(plan.agents * plan.slots * 4);
        kill_some(
            &client,
            &account,
            &pool,
            &mut agents,
            &counters,
            plan.kill,
            tasks,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for (_, task) in agents {
        task.abort();
    }
}

/// `count` tasks that stay queued on the pool while the bench runs (their
/// job disabled before any node joins): placement keeps them in its
/// queue and must pass over them. Reports the server's memory per task.
async fn backlog(
    server: &ServerProcess,
    client: &Client,
    account: &AccountName,
    pool: &PoolId,
    count: u64,
) {
    let before = server.resident_bytes();
    let job = create_job(client, account, pool, "backlog").await;
    let adding = Instant::now();
    add_tasks(client, &job, count).await;
    let added = adding.elapsed().as_secs_f64();
    let disable = Request::DisableJob {
        job: job.clone(),
        disable_tasks: DisableTasks::Wait,
    };
    must(client, disable).await;
    // Placement folds what was added before it is measured.
    tokio::time::sleep(Duration::from_secs(1 + count / 200_000)).await;
    let after = server.resident_bytes();
    println!(
        "queued: {count} tasks of a disabled job on the same pool, added in {added:.1} s; server resident {:.0} MiB before, {:.0} MiB after = {:.0} bytes per queued task (goal: <= 512)",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / count as f64
    );
}

/// The server's CPU and memory while every agent sits connected and idle.
async fn idle_cost(server: &ServerProcess, plan: &Plan) {
    let cpu = server.cpu_secs();
    let resident = server.resident_bytes();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
    let share = 100.0 * (server.cpu_secs() - cpu) / started.elapsed().as_secs_f64();
    println!(
        "idle: {} agents polling (a poll is parked up to a third of the 5 s lost-node timeout, and carries the machine figures): server CPU {share:.1}% of one core (goal: <= 10%); resident {:.0} MiB = {:.0} KiB per node",
        plan.agents,
        resident as f64 / (1 << 20) as f64,
        resident as f64 / 1024.0 / plan.agents as f64
    );
}

/// One job of `plan.tasks` tasks through the instant agents.
async fn dispatch(
    server: &ServerProcess,
    client: &Client,
    account: &AccountName,
    pool: &PoolId,
    plan: &Plan,
    counters: &Counters,
) {
    let job = create_job(client, account, pool, "instant").await;
    let (polls, calls) = (
        counters.polls.load(Ordering::Relaxed),
        counters.calls.load(Ordering::Relaxed),
    );
    let cpu = server.cpu_secs();
    let me = cpu_secs_of("/proc/self/stat");
    // The server stamps the job's completion with the same clock.
    let started_at = lote::clock::Clock::now(&lote::clock::SystemClock).to_datetime();
    let adding = Instant::now();
    add_tasks(client, &job, plan.tasks).await;
    let added = adding.elapsed().as_secs_f64();
    let elapsed = wait_job(client, &job, plan.tasks, started_at).await;
    let server_cpu = server.cpu_secs() - cpu;
    let agents_cpu = cpu_secs_of("/proc/self/stat") - me;
    let rate = plan.tasks as f64 / elapsed;
    println!(
        "dispatch: {} tasks on {} agents x {} slots: added in {added:.2} s; {elapsed:.2} s from the first add to the job's completion = {rate:.0} tasks/s (goal: >= 25,000)",
        plan.tasks, plan.agents, plan.slots
    );
    println!(
        "CPU per task: server {:.1} us (goal: <= 40), bench agents and clients {:.1} us",
        1e6 * server_cpu / plan.tasks as f64,
        1e6 * agents_cpu / plan.tasks as f64
    );
    println!(
        "agents' calls: {} polls and {} reports for {} tasks; {} prefetched attempts moved to another node before they started",
        counters.polls.load(Ordering::Relaxed) - polls,
        counters.calls.load(Ordering::Relaxed) - calls,
        plan.tasks,
        counters.moved.load(Ordering::Relaxed)
    );
}

/// A job on `pool` that ends with its tasks.
async fn create_job(client: &Client, account: &AccountName, pool: &PoolId, id: &str) -> JobId {
    let job = JobId::new(id).unwrap();
    let mut spec = JobSpec::on_pool(job.clone(), account.clone(), pool.clone());
    spec.on_all_tasks_complete = OnAllTasksComplete::TerminateJob;
    let create = Request::CreateJob {
        spec,
        request_id: None,
    };
    must(client, create).await;
    job
}

/// Adds `count` tasks to `job` in full batches from 4 senders.
async fn add_tasks(client: &Client, job: &JobId, count: u64) {
    let batch = lote::api::ADD_TASKS_BATCH_MAX as u64;
    let batches: Vec<Vec<TaskSpec>> = (0..count.div_ceil(batch))
        .map(|b| {
            (b * batch..((b + 1) * batch).min(count))
                .map(|i| {
                    TaskSpec::simple(
                        TaskId::new(format!("t{i}")).unwrap(),
                        CommandLine::Argv(vec!["/bin/true".into()]),
                    )
                })
                .collect()
        })
        .collect();
    let batches = std::sync::Mutex::new(batches.into_iter());
    let sender = || async {
        loop {
            let Some(tasks) = batches.lock().unwrap().next() else {
                return;
            };
            let add = Request::AddTasks {
                job: job.clone(),
                tasks,
                request_id: None,
            };
            must(client, add).await;
        }
    };
    tokio::join!(sender(), sender(), sender(), sender());
}

/// Seconds from the first add to the job's completion stamp, once every
/// task succeeded.
async fn wait_job(
    client: &Client,
    job: &JobId,
    tasks: u64,
    first_add: chrono::DateTime<chrono::Utc>,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let Response::Job(state) = must(client, Request::ShowJob { job: job.clone() }).await else {
            panic!("a job")
        };
        if let Some(completed_at) = state.state.completed_at {
            assert_eq!(
                state.state.count(TaskBucket::Succeeded),
                tasks,
                "not every task succeeded: {:?}",
                state.state.task_counts
            );
            return (completed_at.to_datetime() - first_add)
                .to_std()
                .unwrap()
                .as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "not done: {:?}",
            state.state.task_counts
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nodes of `pool` whose state passes `want`, once there are `count`.
async fn wait_nodes(
    client: &Client,
    pool: &PoolId,
    count: u64,
    want: impl Fn(NodeState) -> bool,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let Response::Nodes(nodes) = must(client, Request::ListNodes { pool: pool.clone() }).await
        else {
            panic!("nodes")
        };
        let n = nodes.iter().filter(|n| want(n.state.state)).count() as u64;
        if n >= count {
            return n;
        }
        assert!(Instant::now() < deadline, "{n} of {count} nodes so far");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job of `tasks` tasks, during which `count` agents are stopped at
/// once: how long until the server marks each lost, and whether every
/// task still succeeds (theirs requeued).
async fn kill_some(
    client: &Client,
    account: &AccountName,
    pool: &PoolId,
    agents: &mut Vec<(lote::types::NodeId, tokio::task::JoinHandle<()>)>,
    counters: &Counters,
    count: u64,
    tasks: u64,
) {
    let job = create_job(client, account, pool, "survivors").await;
    let first_add = lote::clock::Clock::now(&lote::clock::SystemClock).to_datetime();
    let done_before = counters.completed.load(Ordering::Relaxed);
    add_tasks(client, &job, tasks).await;
    while counters.completed.load(Ordering::Relaxed) < done_before + tasks / 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let victims: Vec<_> = agents.drain(..count as usize).collect();
    let killed_at = Instant::now();
    for (_, task) in &victims {
        task.abort();
    }
    let mut lost_at = std::collections::HashMap::new();
    let deadline = killed_at + Duration::from_secs(LOST_AFTER_SECS + 30);
    while lost_at.len() < victims.len() && Instant::now() < deadline {
        let Response::Nodes(nodes) = must(client, Request::ListNodes { pool: pool.clone() }).await
        else {
            panic!("nodes")
        };
        for n in nodes {
            let (Some(id), NodeState::Unusable) = (n.state.id.clone(), n.state.state) else {
                continue;
            };
            if victims.iter().any(|(v, _)| v == &id) {
                lost_at.entry(id).or_insert_with(|| killed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worst = lost_at.values().max().copied().unwrap_or_default();
    let best = lost_at.values().min().copied().unwrap_or_default();
    println!(
        "lost nodes: {count} agents stopped at once a quarter into a job of {tasks} tasks; {} marked lost after {:.2} - {:.2} s (goal: <= {} s, the timeout + 1 s)",
        lost_at.len(),
        best.as_secs_f64(),
        worst.as_secs_f64(),
        LOST_AFTER_SECS + 1
    );
    assert_eq!(
        lost_at.len(),
        victims.len(),
        "every stopped node is marked lost"
    );
    let elapsed = wait_job(client, &job, tasks, first_add).await;
    println!("lost nodes: every task of the job succeeded (theirs requeued), the job done in {elapsed:.2} s");
}
