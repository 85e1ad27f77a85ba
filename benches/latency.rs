//! Submit-to-start latency on an idle pool: `--tasks` (1,000) one-task
//! submissions, one after another, to a local pool of real agents (2
//! nodes x 2 slots, durable log). Each task is `/bin/date +%s%N`: it
//! prints the clock as its process runs. For each: from the `AddTasks`
//! acknowledgement to that printed time (the process running, on the same
//! machine's clock), and from the completion the server recorded to the
//! moment the client's `WaitJob` (what `lote job wait` sends) answers.
//!
//!   cargo bench --bench latency
//!   cargo bench --bench latency -- --tasks 1000
//!
//! Without `--bench` it is a quick smoke run of itself.

mod common;
#[path = "../tests/compute_support/scenario.rs"]
#[allow(dead_code)]
mod scenario;

use std::time::Instant;

use common::{arg, must, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::clock::Clock;
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::server::{Embedded, ServerConfig};
use lote::types::{AccountName, JobId, TaskId};
use scenario::Env;

fn main() {
    let smoke = smoke();
    let tasks = arg("--tasks", if smoke { 30 } else { 1000 });
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench latency");
    }
    if std::env::var_os("LOTE_AGENT_EXE").is_none() {
        std::env::set_var("LOTE_AGENT_EXE", env!("CARGO_BIN_EXE_lote"));
    }
    let data = common::scratch_dir();
    let config = ServerConfig::new(data.path(), "127.0.0.1:0");
    let server = Embedded::start(config).expect("server starts");
    let (addr, admin_key) = (server.addr.to_string(), server.admin_key.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runs = runtime.block_on(async move {
        let account = AccountName::new("bench").unwrap();
        let key = common::new_account(&addr, &admin_key, &account, None).await;
        let client = Client::new(ClientConfig::new(
            addr.clone(),
            Credential::Account { account },
            key,
        ));
        Env::new(&client).pool("idle").nodes(2).slots(2).await;
        Env::new(&client).job("one-by-one").on("idle").await;
        let job = JobId::new("one-by-one").unwrap();
        measure(&client, &job, tasks).await
    });
    server.stop().expect("server stops cleanly");
    where_the_time_went(data.path(), &runs);
}

/// One submission's times, on the system clock.
struct Run {
    task: TaskId,
    acknowledged: chrono::DateTime<chrono::Utc>,
    ran: chrono::DateTime<chrono::Utc>,
}

/// Splits acknowledged -> started at the moment the log staged the task's
/// assignment (its `recorded_at`, taken before the round's fsync): the
/// server's side (feed, placement round, decision) before it, the rest
/// (the fsync, the poll's answer, the agent's launch, the program's own
/// start) after.
fn where_the_time_went(data: &std::path::Path, runs: &[Run]) {
    let store = lote::store::EventStore::open_read_only(data).expect("the log opens");
    let account = AccountName::new("bench").unwrap();
    let job = JobId::new("one-by-one").unwrap();
    let (mut placed, mut launched) = (Vec::new(), Vec::new());
    for run in runs {
        let stream = lote::store::StreamId::task(&account, &job, &run.task);
        let events = store.read_stream(&stream, 1, 16).expect("its stream reads");
        let assigned = events.iter().find(|e| e.event_type == "TaskAssigned");
        let Some(assigned) = assigned else {
            panic!("task {} has no assignment in the log", run.task)
        };
        let at = assigned.recorded_at.to_datetime();
        placed.push(millis(at - run.acknowledged));
        launched.push(millis(run.ran - at));
    }
    println!(
        "  of which acknowledged -> assignment staged (feed, round, decision): {}",
        percentiles(&mut placed)
    );
    println!(
        "  and staged -> started (fsync, poll answer, agent launch, program start): {}",
        percentiles(&mut launched)
    );
}

fn millis(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

async fn measure(client: &Client, job: &JobId, tasks: u64) -> Vec<Run> {
    let clock = lote::clock::SystemClock;
    let (mut to_start, mut seen_after, mut runs) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..tasks {
        let task = TaskId::new(format!("t{i}")).unwrap();
        // The task prints the clock as it runs: its start as the process
        // itself sees it, on the same clock the server and this use.
        let argv = vec!["/bin/date".into(), "+%s%N".into()];
        let spec = TaskSpec::simple(task.clone(), CommandLine::Argv(argv));
        let add = Request::AddTasks {
            job: job.clone(),
            tasks: vec![spec],
            request_id: None,
        };
        must(client, add).await;
        let acknowledged = clock.now().to_datetime();
        let wait = Request::WaitJob {
            job: job.clone(),
            wait_ms: lote::api::WAIT_JOB_MS_MAX,
        };
        let Response::Job(state) = must(client, wait).await else {
            panic!("WaitJob answers a job")
        };
        let seen = clock.now().to_datetime();
        assert_eq!(
            state.state.unfinished(),
            0,
            "the wait ended before the task"
        );
        let show = Request::ShowTask {
            job: job.clone(),
            task: task.clone(),
        };
        let Response::Task(shown) = must(client, show).await else {
            panic!("a task")
        };
        let Some(end) = shown.state.completed_at else {
            panic!("task {i} ended without a completion stamp")
        };
        let read = Request::ReadTaskOutput {
            job: job.clone(),
            task: task.clone(),
            attempt: shown.state.attempt,
            stream: lote::api::OutputStream::Stdout,
            offset: 0,
            max_bytes: 64,
        };
        let Response::TaskOutput { chunk, .. } = must(client, read).await else {
            panic!("its output")
        };
        let nanos: i64 = String::from_utf8_lossy(&chunk.data)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("task {i} printed no clock: {:?}", chunk.data));
        let ran = chrono::DateTime::from_timestamp_nanos(nanos);
        to_start.push(millis(ran - acknowledged));
        seen_after.push(millis(seen - end.to_datetime()));
        runs.push(Run {
            task,
            acknowledged,
            ran,
        });
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{tasks} one-task submissions one after another on an idle pool of 2 local nodes x 2 slots, durable, in {elapsed:.1} s"
    );
    println!(
        "acknowledged -> started: {} (goal: p50 <= 2 ms, p99 <= 10 ms)",
        percentiles(&mut to_start)
    );
    println!(
        "completed -> seen by WaitJob (lote job wait): {} (goal: within 5 ms)",
        percentiles(&mut seen_after)
    );
    runs
}

/// "p50 X ms, p99 Y ms, max Z ms".
fn percentiles(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        values[values.len() - 1]
    )
}
