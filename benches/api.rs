//! The message API under load, over real TCP on loopback, against a server
//! in this process (its own actix thread, durable sync log on disk).
//!
//!   cargo bench --bench api            # the figures
//!   cargo bench --bench api -- --clients 32 --seconds 5 --tasks 10000 --batch 500
//!   cargo bench --bench api -- --tls   # the same over TLS (pinned certificate)
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a quick
//! smoke run of the benchmark itself; its figures mean nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::job::JobSpec;
use lote::domain::pool::PoolSpec;
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::server::{self, ServerConfig};
use lote::types::{AccountName, JobId, PoolId, TaskId};

mod common;
use common::{arg, smoke};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let smoke = smoke();
    let clients = arg("--clients", if smoke { 4 } else { 32 }) as usize;
    let seconds = arg("--seconds", if smoke { 1 } else { 5 });
    let tasks = arg("--tasks", if smoke { 1_000 } else { 10_000 });
    let batch = arg("--batch", 500) as usize;
    let senders = arg("--senders", 4) as usize;
    // The pool below is local: its node's agent must be the lote binary.
    // Left to the default (this process's own executable), each agent was
    // another run of this benchmark, which made a pool of its own: a chain
    // of processes that outlived the test run.
    std::env::set_var("LOTE_AGENT_EXE", env!("CARGO_BIN_EXE_lote"));
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench api");
    }

    let data = tempfile::tempdir().expect("temp dir");
    let server = server::Embedded::start(ServerConfig::new(data.path(), "127.0.0.1:0"))
        .expect("server starts");
    let addr = server.addr.to_string();
    let admin_key = server.admin_key.clone();
    // Loopback is plaintext unless a client pins the certificate.
    let tls = std::env::args().any(|a| a == "--tls");
    let trust = tls.then(|| {
        let fp = lote::server::tls::certificate_fingerprint(&data.path().join("tls/cert.pem"))
            .expect("the server's certificate");
        lote::api::tls::Trust::Fingerprint(lote::api::tls::parse_fingerprint(&fp).unwrap())
    });
    println!(
        "transport: {}",
        if tls {
            "TLS 1.3, pinned certificate"
        } else {
            "plaintext (loopback)"
        }
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let account = AccountName::new("bench").unwrap();
        let primary = common::new_account(&addr, &admin_key, &account, trust.clone()).await;
        let cred = Credential::Account { account: account.clone() };
        let setup = Client::new(ClientConfig::new(addr.clone(), cred.clone(), primary.clone()).with_trust(trust.clone()));
        let pool = PoolId::new("bench-pool").unwrap();
        setup
            .call(&Request::CreatePool {
                spec: PoolSpec::fixed(pool.clone(), account.clone(), 1, 1),
                request_id: None,
            })
            .await
            .unwrap();

        // 1. Small authenticated reads from concurrent clients, each on
        //    its own connection, one call at a time.
        let mut readers = Vec::new();
        let until = Instant::now() + Duration::from_secs(seconds);
        for _ in 0..clients {
            let client = Client::new(ClientConfig::new(addr.clone(), cred.clone(), primary.clone()).with_trust(trust.clone()));
            let pool = pool.clone();
            readers.push(tokio::spawn(async move {
                client.connect().await.unwrap();
                let mut latencies = Vec::with_capacity(100_000);
                let request = Request::ShowPool { pool };
                while Instant::now() < until {
                    let start = Instant::now();
                    client.call(&request).await.unwrap();
                    latencies.push(start.elapsed());
                }
                latencies
            }));
        }
        let started = Instant::now();
        let mut all = Vec::new();
        for r in readers {
            all.extend(r.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        println!(
            "reads: {clients} clients, {} authenticated ShowPool calls in {elapsed:.2}s = {:.0} reads/s; p50 {:.2} ms, p99 {:.2} ms (goal: >= 30000/s, p99 < 5 ms)",
            all.len(),
            all.len() as f64 / elapsed,
            percentile(&all, 0.50).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
        );

        // 2. Adding tasks in durable batches from a few concurrent senders.
        let job = JobId::new("bench-job").unwrap();
        setup
            .call(&Request::CreateJob {
                spec: JobSpec::on_pool(job.clone(), account.clone(), pool.clone()),
                request_id: None,
            })
            .await
            .unwrap();
        let specs: Vec<TaskSpec> = (0..tasks)
            .map(|i| {
                TaskSpec::simple(
                    TaskId::new(format!("t{i}")).unwrap(),
                    CommandLine::Shell(format!("render --frame {i}")),
                )
            })
            .collect();
        let batches: Vec<Vec<TaskSpec>> = specs.chunks(batch).map(|c| c.to_vec()).collect();
        let queue = Arc::new(std::sync::Mutex::new(batches));
        let sender_clients: Vec<Arc<Client>> = (0..senders)
            .map(|_| Arc::new(Client::new(ClientConfig::new(addr.clone(), cred.clone(), primary.clone()).with_trust(trust.clone()))))
            .collect();
        for c in &sender_clients {
            c.connect().await.unwrap();
        }
        let started = Instant::now();
        let mut handles = Vec::new();
        for client in sender_clients {
            let queue = queue.clone();
            let job = job.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some(tasks) = next else { break };
                    client
                        .call(&Request::AddTasks {
                            job: job.clone(),
                            tasks,
                            request_id: Some(lote::clock::new_uuid()),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let Response::Job(state) = setup.call(&Request::ShowJob { job }).await.unwrap() else {
            panic!("job")
        };
        assert_eq!(state.state.tasks_added, tasks);
        println!(
            "add tasks: {tasks} tasks in batches of {batch} from {senders} senders, durable (sync): {elapsed:.3}s from first request to last acknowledgement = {:.0} tasks/s (goal: 10000 in < 1 s)",
            tasks as f64 / elapsed
        );
    });
    server.stop().expect("server stops cleanly");
}
