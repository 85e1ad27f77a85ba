//! Recovery: time from a server start to serving requests, with
//! `--events` events in its log (1,000,000 by default): a pool, a job and
//! finished tasks (added, assigned, started, completed), as a busy day
//! leaves them.
//!
//!   cargo bench --bench recovery
//!   cargo bench --bench recovery -- --events 1000000
//!   cargo bench --bench recovery -- --crash
//!
//! The log is closed before the restart as a server's clean stop leaves
//! it (memtables written out); with `--crash` it is written by a child process that is SIGKILLed
//! once the log is durable, so the restart replays RocksDB's write-ahead
//! log first, as after a crash.
//!
//! Prints: the time until the port is bound, until the first
//! authenticated read is answered, and until placement has folded the
//! whole log (a task added then is explained from the rebuilt picture).
//! Without `--bench` it is a quick smoke run of itself.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{arg, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::clock::{Clock, SystemClock};
use lote::domain::account::{Account, AccountCommand};
use lote::domain::job::{JobEvent, JobSpec};
use lote::domain::pool::{PoolEvent, PoolSpec};
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::domain::{to_new_event, Aggregate, Ctx};
use lote::server::{self, ServerConfig};
use lote::store::{Durability, EventStore, ExpectedVersion, StoreOptions, StreamAppend, StreamId};
use lote::types::{AccountName, Causation, JobId, PoolId, Principal, RequestId, TaskId};

/// Tasks per append while the log is written.
const TASKS_PER_APPEND: u64 = 500;

fn account_client(addr: &str, account: &AccountName, key: &str) -> Client {
    Client::new(ClientConfig::new(
        addr.to_string(),
        Credential::Account {
            account: account.clone(),
        },
        key.to_string(),
    ))
}

/// The whole log written straight into the store, as fast as it goes:
/// the account (its keys made as the server makes them), the pool, the
/// job and the finished tasks. Returns the account's key and the store,
/// still open.
fn write_log(data: &std::path::Path, events: u64) -> (String, EventStore) {
    let account = AccountName::new("bench").unwrap();
    let pool = PoolId::new("p").unwrap();
    let job = JobId::new("j").unwrap();
    let written = Instant::now();
    let clock = SystemClock;
    let at = clock.now();
    let store = EventStore::open(
        data,
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut state = Account::default();
    let ctx = Ctx::live(&clock, Principal::Admin, lote::clock::new_request_id());
    let created = state
        .decide(
            &AccountCommand::CreateAccount {
                name: account.clone(),
            },
            &ctx,
        )
        .unwrap();
    for e in &created {
        state.apply(e);
    }
    let key = state.primary_key.as_ref().unwrap().expose().to_string();
    store
        .append_blocking(
            vec![StreamAppend {
                stream: StreamId::account(&account),
                expected: ExpectedVersion::NoStream,
                events: created.iter().map(|e| to_new_event(e).unwrap()).collect(),
            }],
            Causation {
                request_id: ctx.request_id,
                principal: Principal::Admin,
            },
        )
        .unwrap();
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(7)),
        principal: Principal::System {
            component: "bench".into(),
        },
    };
    let spec = PoolSpec::fixed(pool.clone(), account.clone(), 0, 4);
    let spec = PoolSpec {
        provider: lote::domain::pool::NodeProvider::Remote,
        ..spec
    };
    let head = vec![
        StreamAppend {
            stream: StreamId::pool(&account, &pool),
            expected: ExpectedVersion::NoStream,
            events: vec![to_new_event(&PoolEvent::PoolCreated { spec, at }).unwrap()],
        },
        StreamAppend {
            stream: StreamId::job(&account, &job),
            expected: ExpectedVersion::NoStream,
            events: vec![to_new_event(&JobEvent::JobCreated {
                spec: JobSpec::on_pool(job.clone(), account.clone(), pool.clone()),
                at,
            })
            .unwrap()],
        },
    ];
    store.append_blocking(head, causation.clone()).unwrap();
    let tasks = events.saturating_sub(2) / 4;
    let mut i = 0;
    while i < tasks {
        let batch: Vec<StreamAppend> = (i..(i + TASKS_PER_APPEND).min(tasks))
            .map(|n| {
                let id = TaskId::new(format!("t{n:07}")).unwrap();
                let spec = TaskSpec::simple(id.clone(), CommandLine::Shell("true".into()));
                let evs = common::finished_task_events(&account, &job, &pool, spec, "gone", at);
                StreamAppend {
                    stream: StreamId::task(&account, &job, &id),
                    expected: ExpectedVersion::NoStream,
                    events: evs.iter().map(|e| to_new_event(e).unwrap()).collect(),
                }
            })
            .collect();
        store.append_blocking(batch, causation.clone()).unwrap();
        i += TASKS_PER_APPEND;
    }
    println!(
        "recovery: wrote {} events in {:.1}s",
        store.head(),
        written.elapsed().as_secs_f64()
    );
    (key, store)
}

/// `--crash`: the log written by a child process (this binary with
/// `--write-and-wait DIR`), SIGKILLed once it said the log is durable.
fn write_log_and_crash(data: &std::path::Path, events: u64) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--write-and-wait")
        .arg(data)
        .args(["--events", &events.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let key = loop {
        let line = lines.next().expect("the writer's key").unwrap();
        if let Some(key) = line.strip_prefix("key ") {
            break key.to_string();
        }
        println!("{line}");
    };
    child.kill().unwrap();
    child.wait().unwrap();
    println!("recovery: the writer was killed with the log durable and not flushed");
    key
}

fn main() {
    let smoke = smoke();
    let events = arg("--events", if smoke { 20_000 } else { 1_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let account = AccountName::new("bench").unwrap();
    let job = JobId::new("j").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The log, written here and closed as a server's clean stop leaves it
    // (memtables written out), or with `--crash` by a child process killed once the log is
    // durable, so the restart replays RocksDB's write-ahead log as after a
    // crash.
    if let Some(dir) = common::arg_value("--write-and-wait") {
        let (key, store) = write_log(std::path::Path::new(&dir), events);
        store.flush_blocking().unwrap();
        println!("key {key}");
        // Killed by the parent; and with it, should it die first.
        // SAFETY: PR_SET_PDEATHSIG takes one signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        std::thread::sleep(std::time::Duration::from_secs(3600));
        return;
    }
    let key = if std::env::args().any(|a| a == "--crash") {
        write_log_and_crash(&data, events)
    } else {
        let (key, store) = write_log(&data, events);
        store.flush_memtables_blocking().unwrap();
        key
    };

    // The restart.
    let started = Instant::now();
    let server = server::Embedded::start(ServerConfig::new(&data, "127.0.0.1:0")).unwrap();
    let bound = started.elapsed();
    let addr = server.addr.to_string();
    let (first_read, placed) = runtime.block_on(async {
        let client = account_client(&addr, &account, &key);
        let Response::Job(_) = client
            .call(&Request::ShowJob { job: job.clone() })
            .await
            .unwrap()
        else {
            panic!("a job")
        };
        let first_read = started.elapsed();
        // A new task is explained from placement's picture only once the
        // whole log is folded (before that it is not in the picture).
        let fresh = TaskId::new("after-restart").unwrap();
        client
            .call(&Request::AddTasks {
                job: job.clone(),
                tasks: vec![TaskSpec::simple(
                    fresh.clone(),
                    CommandLine::Shell("true".into()),
                )],
                request_id: None,
            })
            .await
            .unwrap();
        loop {
            if let Ok(Response::TaskExplanation {
                waiting: Some(_), ..
            }) = client
                .call(&Request::ExplainTask {
                    job: job.clone(),
                    task: fresh.clone(),
                })
                .await
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (first_read, started.elapsed())
    });
    server.stop().unwrap();
    println!(
        "  port bound after:              {:>7.3}s",
        bound.as_secs_f64()
    );
    println!(
        "  first authenticated read after: {:>7.3}s (goal: under 5 s)",
        first_read.as_secs_f64()
    );
    println!(
        "  placement caught up after:      {:>7.3}s (a task added after the restart explained)",
        placed.as_secs_f64()
    );
}
