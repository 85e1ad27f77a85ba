//! Tasks through the whole machine: 10,000 `/bin/true` tasks on a local
//! pool of 2 nodes with 2 slots each (real agent processes), durable log,
//! against this machine's raw spawn rate measured in the same run.
//!
//!   cargo bench --bench compute
//!   cargo bench --bench compute -- --tasks 10000
//!
//! Without `--bench` it is a quick smoke run of itself.

mod common;

use std::time::{Duration, Instant};

use common::{arg, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::job::{JobSpec, OnAllTasksComplete};
use lote::domain::pool::PoolSpec;
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::server::{self, ServerConfig};
use lote::types::{AccountName, JobId, PoolId, TaskId};

/// `/bin/true` spawned `count` times with 2 in flight.
fn raw_spawn_rate(count: u64) -> f64 {
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
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let smoke = smoke();
    let tasks = arg("--tasks", if smoke { 200 } else { 10_000 });
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench compute");
    }
    // Local agents are the lote binary, not this one.
    std::env::set_var("LOTE_AGENT_EXE", env!("CARGO_BIN_EXE_lote"));

    let raw = raw_spawn_rate(tasks);
    println!("raw spawn rate: {tasks} x /bin/true, 2 in flight: {raw:.0} spawns/s");

    let data = tempfile::tempdir().expect("temp dir");
    let server = server::Embedded::start(ServerConfig::new(data.path(), "127.0.0.1:0"))
        .expect("server starts");
    let addr = server.addr.to_string();
    let admin_key = server.admin_key.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let admin = Client::new(ClientConfig::new(addr.clone(), Credential::Admin, admin_key));
        let account = AccountName::new("bench").unwrap();
        admin
            .call(&Request::CreateAccount { name: account.clone(), request_id: None })
            .await
            .unwrap();
        let Response::Keys { primary, .. } =
            admin.call(&Request::ShowKeys { name: account.clone() }).await.unwrap()
        else {
            panic!("keys")
        };
        let client = Client::new(ClientConfig::new(
            addr.clone(),
            Credential::Account { account: account.clone() },
            primary,
        ));
        let pool = PoolId::new("local").unwrap();
        client
            .call(&Request::CreatePool {
                spec: PoolSpec::fixed(pool.clone(), account.clone(), 2, 2),
                request_id: None,
            })
            .await
            .unwrap();
        let job = JobId::new("true").unwrap();
        client
            .call(&Request::CreateJob {
                spec: JobSpec {
                    on_all_tasks_complete: OnAllTasksComplete::TerminateJob,
                    ..JobSpec::on_pool(job.clone(), account.clone(), pool.clone())
                },
                request_id: None,
            })
            .await
            .unwrap();
        let specs: Vec<TaskSpec> = (0..tasks)
            .map(|i| {
                TaskSpec::simple(
                    TaskId::new(format!("t{i}")).unwrap(),
                    CommandLine::Argv(vec!["/bin/true".into()]),
                )
            })
            .collect();
        let started = Instant::now();
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
        loop {
            let Response::Job(state) = client.call(&Request::ShowJob { job: job.clone() }).await.unwrap() else {
                panic!("job")
            };
            if state.state.completed_at.is_some() {
                assert_eq!(state.state.unfinished(), 0);
                break;
            }
            assert!(Instant::now() < deadline, "not done: {:?}", state.state.task_counts);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = tasks as f64 / elapsed;
        println!(
            "lote: {tasks} x /bin/true on 2 local nodes x 2 slots, durable: {elapsed:.2}s from first add to last completion = {rate:.0} tasks/s = {:.0}% of the raw spawn rate (goal: >= 60%)",
            100.0 * rate / raw
        );
        client.call(&Request::DeletePool { pool }).await.unwrap();
    });
    server.stop().expect("server stops cleanly");
}
