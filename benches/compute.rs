//! Tasks through the whole machine: 10,000 `/bin/true` tasks on a local
//! pool of 2 nodes with 2 slots each (real agent processes), durable log,
//! against this machine's raw spawn rate measured in the same run (before
//! and after lote's run; their mean is the baseline).
//!
//! Then the server's resident memory with `--queued` tasks (1,000,000 by
//! default) waiting on a pool that has no node.
//!
//!   cargo bench --bench compute
//!   cargo bench --bench compute -- --tasks 10000 --queued 1000000
//!   cargo bench --bench compute -- --tasks 0          # memory only
//!   cargo bench --bench compute -- --repeat 5         # 5 jobs, each between raw loops, and their median
//!   cargo bench --bench compute -- --nodes-dir /dev/shm   # log on disk, nodes there
//!   cargo bench --bench compute -- --dir /dev/shm         # data and node directories there
//!   cargo bench --bench compute -- --tls       # a server that takes no plaintext: agents over TLS
//!
//! Each attempt creates three directories and two files under its node's
//! directory. On a filesystem that makes creating files dear (this VM's
//! root is ext4 without a journal, which searches past every inode freed
//! in the last minutes for each new one), that alone can cost more than the
//! rest of lote's work. `--nodes-dir` puts the nodes' directories
//! elsewhere (the server's `--nodes-dir`: task scratch space on a fast
//! local disk or a tmpfs) and keeps the log, fsynced, on the disk.
//!
//! Without `--bench` it is a quick smoke run of itself.

mod common;
#[path = "../tests/compute_support/scenario.rs"]
#[allow(dead_code)]
mod scenario;

use std::time::{Duration, Instant};

use common::{arg, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::job::JobSpec;
use lote::domain::pool::PoolSpec;
use lote::domain::spec::CommandLine;
use lote::domain::task::{TaskBucket, TaskSpec};
use lote::server::{self, ServerConfig};
use lote::types::{AccountName, JobId, PoolId, TaskId};
use scenario::Env;

/// CPU time the whole machine spent working (not idle, not waiting on
/// I/O, not stolen by the hypervisor), in seconds, from `/proc/stat`.
/// Differences of it tell what a phase cost in CPU, which this VM's
/// swings in speed disturb less than a rate does.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

/// `/bin/true` spawned `count` times with 2 in flight: spawns per second,
/// and the machine's CPU milliseconds per spawn.
fn raw_spawn_rate(count: u64) -> (f64, f64) {
    let busy = machine_busy_secs();
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..count / 2 {
                    let status = std::process::Command::new("/bin/true").status().unwrap();
                    assert!(status.success());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, cpu_ms_per(busy, count))
}

/// CPU milliseconds the machine spent per item since `busy`.
fn cpu_ms_per(busy: f64, items: u64) -> f64 {
    1000.0 * (machine_busy_secs() - busy) / items.max(1) as f64
}

/// CPU seconds so far of this process (the embedded server and this
/// client) and of its child processes (the local agents; not the tasks
/// they start, whose time goes to the agents only once reaped, as
/// `cutime`). They tell where a task's CPU goes with less noise than the
/// rate: the machine's swings move all three alike.
fn server_and_agents_cpu_secs() -> (f64, f64) {
    use common::server_process::cpu_secs_of;
    let own = cpu_secs_of("/proc/self/stat");
    let mut agents = 0.0;
    for thread in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            agents += cpu_secs_of(&format!("/proc/{pid}/stat"));
        }
    }
    (own, agents)
}

/// What one job cost: its time and CPU milliseconds per task.
struct JobCost {
    elapsed: f64,
    /// The whole machine's.
    cpu_ms: f64,
    server_ms: f64,
    agents_ms: f64,
}

/// This process's resident memory, bytes.
fn resident_bytes() -> u64 {
    common::server_process::resident_of("/proc/self/status")
}

fn main() {
    let smoke = smoke();
    let tasks = arg("--tasks", if smoke { 200 } else { 10_000 });
    let queued = arg("--queued", if smoke { 2_000 } else { 1_000_000 });
    let repeat = arg("--repeat", 1).max(1);
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench compute");
    }
    // Local agents are the lote binary, not this one (unless told
    // otherwise: a wrapper that traces or profiles them).
    if std::env::var_os("LOTE_AGENT_EXE").is_none() {
        std::env::set_var("LOTE_AGENT_EXE", env!("CARGO_BIN_EXE_lote"));
    }

    let raw = if tasks > 0 {
        raw_spawn_rate(tasks)
    } else {
        (0.0, 0.0)
    };
    if tasks > 0 {
        println!(
            "raw spawn rate before: {tasks} x /bin/true, 2 in flight: {:.0} spawns/s, {:.3} CPU ms per spawn",
            raw.0, raw.1
        );
    }

    let data = common::scratch_dir();
    println!("data directory: {}", data.path().display());
    let mut config = ServerConfig::new(data.path(), "127.0.0.1:0");
    if std::env::args().any(|a| a == "--tls") {
        // Local agents are then given the certificate's fingerprint and
        // speak TLS, as remote ones do.
        config.plaintext = server::tls::Plaintext::Never;
        println!("transport: TLS only (agents and this client pin the certificate)");
    }
    let nodes = common::scratch_dir_in("--nodes-dir");
    if let Some(nodes) = &nodes {
        println!("nodes directory: {}", nodes.path().display());
        config.nodes_dir = nodes.path().to_path_buf();
    }
    let server = server::Embedded::start(config).expect("server starts");
    let addr = server.addr.to_string();
    let admin_key = server.admin_key.clone();
    let data_path = data.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let account = AccountName::new("bench").unwrap();
        let trust = common::tls_trust(data_path.as_path());
        let primary = common::new_account(&addr, &admin_key, &account, trust.clone()).await;
        let client = Client::new(
            ClientConfig::new(
                addr.clone(),
                Credential::Account {
                    account: account.clone(),
                },
                primary,
            )
            .with_trust(trust),
        );
        if tasks > 0 {
            run_true_tasks(&client, tasks, raw, repeat).await;
        }
        if queued > 0 {
            queued_memory(&client, &account, queued).await;
        }
    });
    server.stop().expect("server stops cleanly");
}

/// `tasks` x /bin/true on 2 local nodes x 2 slots, first add to last
/// completion, once the nodes are up; `repeat` jobs, each set against the
/// raw loops run right before and after it, and their median.
async fn run_true_tasks(client: &Client, tasks: u64, mut raw: (f64, f64), repeat: u64) {
    let pool = PoolId::new("local").unwrap();
    // The pool is made ready first: its start-up (processes started,
    // registered) is a figure of its own, not part of the tasks' time, as
    // with any batch service's pool allocation.
    let creating = Instant::now();
    Env::new(client).pool("local").nodes(2).slots(2).await;
    println!(
        "pool of 2 local nodes ready (agents started and registered) in {:.2}s",
        creating.elapsed().as_secs_f64()
    );
    let (mut ratios, mut efficiencies) = (Vec::new(), Vec::new());
    for run in 0..repeat {
        let job = if run == 0 {
            JobId::new("true").unwrap()
        } else {
            JobId::new(format!("true-{run}")).unwrap()
        };
        let JobCost {
            elapsed,
            cpu_ms,
            server_ms,
            agents_ms,
        } = one_job(client, &pool, job, tasks).await;
        let rate = tasks as f64 / elapsed;
        // This VM's spawn rate drifts by a fifth from one minute to the
        // next: measured again right after (the agents idle meanwhile), and
        // lote is set against the mean of both.
        let after = raw_spawn_rate(tasks);
        println!(
            "raw spawn rate after: {:.0} spawns/s, {:.3} CPU ms per spawn",
            after.0, after.1
        );
        let raw_cpu_ms = (raw.1 + after.1) / 2.0;
        let raw_rate = (raw.0 + after.0) / 2.0;
        println!(
            "lote: {tasks} x /bin/true on 2 local nodes x 2 slots, durable: {elapsed:.2}s from first add to last completion = {rate:.0} tasks/s = {:.0}% of the raw spawn rate, {raw_rate:.0}/s as the mean of before and after (goal: >= 70%)",
            100.0 * rate / raw_rate
        );
        // With both CPUs busy the rate follows the CPU each task costs: this
        // ratio is the same comparison, less disturbed by the VM's swings.
        println!(
            "CPU per task: lote {cpu_ms:.3} ms (every process: server, agents, tasks), raw loop {raw_cpu_ms:.3} ms per spawn = {:.0}% efficiency",
            100.0 * raw_cpu_ms / cpu_ms
        );
        println!(
            "  of which: server (and this client) {server_ms:.3} ms, agents {agents_ms:.3} ms, the tasks and the kernel's work for them {:.3} ms",
            cpu_ms - server_ms - agents_ms
        );
        ratios.push(100.0 * rate / raw_rate);
        efficiencies.push(100.0 * raw_cpu_ms / cpu_ms);
        // The next job's "before".
        raw = after;
    }
    if repeat > 1 {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "median of {repeat} jobs: {:.1}% of the raw spawn rate ({}%), efficiency {:.1}% ({}%) (goal: >= 70%)",
            median(&ratios),
            list(&ratios),
            median(&efficiencies),
            list(&efficiencies)
        );
    }
    client
        .call(&Request::DeletePool { pool, force: false })
        .await
        .unwrap();
}

/// One job of `tasks` x /bin/true: seconds from the first add to its
/// completion stamp, and the machine's CPU milliseconds per task.
async fn one_job(client: &Client, pool: &PoolId, job: JobId, tasks: u64) -> JobCost {
    Env::new(client)
        .job(job.as_str())
        .on(pool.as_str())
        .ends_with_its_tasks()
        .await;
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|i| {
            TaskSpec::simple(
                TaskId::new(format!("t{i}")).unwrap(),
                CommandLine::Argv(vec!["/bin/true".into()]),
            )
        })
        .collect();
    let busy = machine_busy_secs();
    let (server, agents) = server_and_agents_cpu_secs();
    // The server stamps the job's completion with the same clock.
    let started_at = lote::clock::Clock::now(&lote::clock::SystemClock).to_datetime();
    for batch in specs.chunks(lote::api::ADD_TASKS_BATCH_MAX) {
        client
            .call(&Request::AddTasks {
                job: job.clone(),
                tasks: batch.to_vec(),
                request_id: None,
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let elapsed = loop {
        let Response::Job(state) = client
            .call(&Request::ShowJob { job: job.clone() })
            .await
            .unwrap()
        else {
            panic!("job")
        };
        if let Some(completed_at) = state.state.completed_at {
            assert_eq!(state.state.unfinished(), 0);
            // A failed task ends sooner than one that ran: only a job
            // whose every task ran and succeeded is a figure.
            assert_eq!(
                state.state.count(TaskBucket::Succeeded),
                tasks,
                "not every task succeeded: {:?}",
                state.state.task_counts
            );
            break (completed_at.to_datetime() - started_at)
                .to_std()
                .expect("the job completed after its first task was added");
        }
        assert!(
            Instant::now() < deadline,
            "not done: {:?}",
            state.state.task_counts
        );
        // The time comes from the job's completion stamp, so it does not
        // depend on when this asks; four asks a second cost next to nothing.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu_ms = cpu_ms_per(busy, tasks);
    let (server_after, agents_after) = server_and_agents_cpu_secs();
    let per_task = |secs: f64| 1000.0 * secs / tasks.max(1) as f64;
    JobCost {
        elapsed: elapsed.as_secs_f64(),
        cpu_ms,
        server_ms: per_task(server_after - server),
        agents_ms: per_task(agents_after - agents),
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Resident memory of the server (this process) with `count` tasks queued
/// on a pool with no node, added in durable batches from 4 senders.
async fn queued_memory(client: &Client, account: &AccountName, count: u64) {
    let pool = PoolId::new("empty").unwrap();
    client
        .call(&Request::CreatePool {
            spec: PoolSpec {
                provider: lote::domain::pool::NodeProvider::Remote,
                ..PoolSpec::fixed(pool.clone(), account.clone(), 0, 1)
            },
            request_id: None,
        })
        .await
        .unwrap();
    let job = JobId::new("waiting").unwrap();
    let spec = JobSpec::on_pool(job.clone(), account.clone(), pool.clone());
    common::must(
        client,
        Request::CreateJob {
            spec,
            request_id: None,
        },
    )
    .await;
    let before = resident_bytes();
    let started = Instant::now();
    let batch = lote::api::ADD_TASKS_BATCH_MAX as u64;
    let batches = count.div_ceil(batch);
    let senders = 4;
    let sender = |first: u64| {
        let job = job.clone();
        async move {
            let mut b = first;
            while b < batches {
                let specs: Vec<TaskSpec> = (b * batch..((b + 1) * batch).min(count))
                    .map(|i| {
                        TaskSpec::simple(
                            TaskId::new(format!("q{i:07}")).unwrap(),
                            CommandLine::Argv(vec!["/bin/true".into()]),
                        )
                    })
                    .collect();
                let request = Request::AddTasks {
                    job: job.clone(),
                    tasks: specs,
                    request_id: None,
                };
                client.call(&request).await.unwrap();
                b += senders;
            }
        }
    };
    tokio::join!(sender(0), sender(1), sender(2), sender(3));
    let added = started.elapsed().as_secs_f64();
    // Let placement fold the last of them.
    tokio::time::sleep(Duration::from_secs(if count > 10_000 { 5 } else { 1 })).await;
    let after = resident_bytes();
    let per_task = after.saturating_sub(before) as f64 / count as f64;
    println!(
        "queued: {count} tasks added in {added:.1}s ({:.0}/s); resident {:.0} MiB before, {:.0} MiB after = {per_task:.0} bytes per queued task (goal: <= 1024)",
        count as f64 / added,
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
    );
}
