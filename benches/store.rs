//! Event store and replay benchmarks, with the figures issue #2 asks for.
//!
//! Run: `cargo bench --bench store` (all), or pick with
//! `cargo bench --bench store -- fsync buffered replay memory`.
//! Sizes: `--seconds S` (per timed phase, default 5), `--replay-events N`
//! (default 1000000), `--finished-tasks N` (default 1000000).
//! Data goes to a temporary directory on the same disk as `$TMPDIR`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lote::clock::SystemClock;
use lote::domain::job::JobEvent;
use lote::domain::spec::CommandLine;
use lote::domain::task::{TaskBucket, TaskSpec};
use lote::domain::to_new_event;
use lote::store::{
    Durability, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamAppend, StreamId,
};
use lote::types::{AccountName, Causation, JobId, PoolId, Principal, RequestId, TaskId, Timestamp};

const APPENDERS: usize = 256;
/// Appenders in the buffered phase's second run.
const APPENDERS_MANY: usize = 1024;

mod common;
use common::{arg, smoke};

fn wanted(section: &str) -> bool {
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["fsync", "buffered", "replay", "memory"].contains(&a.as_str()))
        .collect();
    picked.is_empty() || picked.iter().any(|p| p == section)
}

fn causation() -> Causation {
    Causation {
        request_id: RequestId(uuid::Uuid::from_u128(1)),
        principal: Principal::System {
            component: "bench".into(),
        },
    }
}

/// One small, realistic event (a job count change), encoded once.
fn small_event() -> NewEvent {
    static EVENT: std::sync::OnceLock<NewEvent> = std::sync::OnceLock::new();
    EVENT
        .get_or_init(|| {
            let event = JobEvent::JobTaskCountsChanged {
                task: TaskId::new("t").unwrap(),
                from: Some(TaskBucket::Active),
                to: Some(TaskBucket::Running),
            };
            to_new_event(&event).unwrap()
        })
        .clone()
}

fn open(dir: &Path, durability: Durability) -> EventStore {
    EventStore::open(
        dir,
        StoreOptions {
            durability,
            ..StoreOptions::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// Sequential one-event appends, each fsynced alone: the disk's fsync rate.
fn raw_fsync_rate(seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Sync);
    let stream = StreamId::parse("job/bench/raw").unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        store
            .append_blocking(
                vec![StreamAppend {
                    stream: stream.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![small_event()],
                }],
                causation(),
            )
            .unwrap();
        n += 1;
    }
    let stats = store.stats();
    assert_eq!(stats.fsyncs, n, "sequential appends must not share fsyncs");
    n as f64 / started.elapsed().as_secs_f64()
}

/// APPENDERS concurrent appenders, one event per append.
fn concurrent(
    durability: Durability,
    seconds: u64,
    appenders: usize,
    events_per_append: usize,
) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), durability);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    runtime.block_on(async {
        let mut handles = Vec::new();
        for i in 0..appenders {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let stream = StreamId::parse(&format!("job/bench/s{i}")).unwrap();
                let mut version = 0;
                while Instant::now() < deadline {
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    let events = (0..events_per_append).map(|_| small_event()).collect();
                    store
                        .append(
                            vec![StreamAppend {
                                stream: stream.clone(),
                                expected,
                                events,
                            }],
                            causation(),
                        )
                        .await
                        .unwrap();
                    version += events_per_append as u64;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    // Events per fsync in sync mode, per write batch in buffered mode.
    let per = if durability == Durability::Sync {
        stats.fsyncs
    } else {
        stats.write_batches
    };
    (
        stats.events_appended as f64 / elapsed,
        stats.events_appended as f64 / per.max(1) as f64,
        stats.events_appended,
    )
}

fn task_spec(i: u64) -> TaskSpec {
    TaskSpec::simple(
        TaskId::new(format!("t{i:08}")).unwrap(),
        CommandLine::Argv(vec!["render".into(), "--frame".into(), i.to_string()]),
    )
}

/// Writes `tasks` finished tasks (4 task events and 3 job events each),
/// spread over jobs of 10,000 tasks, in buffered mode.
fn build_finished_tasks_log(dir: &Path, tasks: u64) -> u64 {
    let store = open(dir, Durability::Buffered);
    let account = AccountName::new("bench").unwrap();
    let pool = PoolId::new("p").unwrap();
    let at = Timestamp::parse("2026-11-27T10:00:00Z").unwrap();
    let per_job = 10_000;
    let mut pending = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut jobs_created = std::collections::HashSet::new();
    for i in 0..tasks {
        let job = JobId::new(format!("j{}", i / per_job)).unwrap();
        if jobs_created.insert(job.clone()) {
            let spec = lote::domain::job::JobSpec {
                id: job.clone(),
                account: account.clone(),
                pool: pool.clone(),
                display_name: String::new(),
                priority: 0,
                max_wall_clock_secs: None,
                max_task_retries: 0,
                on_all_tasks_complete: Default::default(),
                on_task_failure: Default::default(),
                common_resource_files: vec![],
                job_manager: Default::default(),
                dependencies: None,
                preparation: None,
                release: None,
                common_env: vec![],
                metadata: vec![],
                auto_pool: None,
            };
            store
                .append_blocking(
                    vec![StreamAppend {
                        stream: StreamId::job(&account, &job),
                        expected: ExpectedVersion::NoStream,
                        events: vec![to_new_event(&JobEvent::JobCreated { spec, at }).unwrap()],
                    }],
                    causation(),
                )
                .unwrap();
        }
        let spec = task_spec(i);
        let id = spec.id.clone();
        let task_events = common::finished_task_events(&account, &job, &pool, spec, "n1", at);
        let job_events = [
            JobEvent::JobTaskAdded {
                task: id.clone(),
                at,
            },
            JobEvent::JobTaskCountsChanged {
                task: id.clone(),
                from: Some(TaskBucket::Active),
                to: Some(TaskBucket::Running),
            },
            JobEvent::JobTaskCountsChanged {
                task: id.clone(),
                from: Some(TaskBucket::Running),
                to: Some(TaskBucket::Succeeded),
            },
        ];
        let appends = vec![
            StreamAppend {
                stream: StreamId::task(&account, &job, &id),
                expected: ExpectedVersion::NoStream,
                events: task_events
                    .iter()
                    .map(|e| to_new_event(e).unwrap())
                    .collect(),
            },
            StreamAppend {
                stream: StreamId::job(&account, &job),
                expected: ExpectedVersion::Any,
                events: job_events
                    .iter()
                    .map(|e| to_new_event(e).unwrap())
                    .collect(),
            },
        ];
        pending.push(store.append(appends, causation()));
        if pending.len() >= 1024 {
            runtime.block_on(async {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            });
        }
    }
    runtime.block_on(async {
        for p in pending.drain(..) {
            p.await.unwrap();
        }
    });
    store.flush_blocking().unwrap();
    store.head()
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // Child mode: replay a directory and print memory, from a fresh process.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--replay-child") {
        let dir = Path::new(&args[i + 1]);
        let store = EventStore::open_read_only(dir).unwrap();
        let report = lote::replay::replay(&store).unwrap();
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        println!(
            "{} {} {:.0} {} {}",
            report.events,
            report.streams,
            report.events_per_sec,
            rss_kib("VmRSS:"),
            rss_kib("VmHWM:")
        );
        return;
    }
    let smoke = smoke();
    let seconds = arg("--seconds", if smoke { 1 } else { 5 });
    let replay_events = arg("--replay-events", if smoke { 20_000 } else { 1_000_000 });
    let finished_tasks = arg("--finished-tasks", if smoke { 5_000 } else { 1_000_000 });
    if smoke {
        println!("smoke run (figures meaningless); measure with: cargo bench --bench store");
    }
    println!("lote store benchmarks ({APPENDERS} concurrent appenders where noted)");

    if wanted("fsync") {
        let raw = raw_fsync_rate(seconds);
        println!("raw fsync rate (1 appender, 1 event per fsync): {raw:.0} fsyncs/s");
        let (rate, per_fsync, total) = concurrent(Durability::Sync, seconds, APPENDERS, 1);
        println!(
            "sync, {APPENDERS} appenders: {rate:.0} events/s, {per_fsync:.1} events per fsync, {:.1}x the raw fsync rate ({total} events) [goal: >= 50 events per fsync and >= 50x]",
            rate / raw
        );
    }
    if wanted("buffered") {
        for (appenders, per_append) in [(APPENDERS, 1), (APPENDERS_MANY, 1), (APPENDERS, 8)] {
            let (rate, per_batch, total) =
                concurrent(Durability::Buffered, seconds, appenders, per_append);
            println!(
                "buffered, {appenders} appenders, {per_append} event(s) per append: {rate:.0} events/s, {per_batch:.1} events per write batch ({total} events) [goal: >= 300000 events/s]"
            );
        }
    }
    for (section, tasks) in [("replay", replay_events / 7), ("memory", finished_tasks)] {
        if !wanted(section) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let events = build_finished_tasks_log(dir.path(), tasks);
        println!(
            "[{section}] built a log of {events} events ({tasks} finished tasks) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--replay-child")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let (replayed, streams, rate, rss, hwm) = (
            f[0],
            f[1],
            f[2],
            f[3].parse::<u64>().unwrap(),
            f[4].parse::<u64>().unwrap(),
        );
        match section {
            "replay" => println!("replay: {replayed} events, {streams} streams, {rate} events/s [goal: >= 500000 events/s]"),
            _ => println!(
                "memory: after replaying {tasks} finished tasks ({replayed} events): resident {} MiB, peak {} MiB [goal: <= 300 MiB]",
                rss / 1024,
                hwm / 1024
            ),
        }
    }
}
