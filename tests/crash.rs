//! The server killed with SIGKILL at random moments while a 2,000-task job
//! runs on a local pool (whose agents keep running through each crash):
//! nothing acknowledged is lost, every task completes, and none runs or is
//! recorded twice. Seeded; the seed is printed (set LOTE_TEST_SEED to
//! repeat a run).

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::api::{Credential, Request};
use lote::domain::task::{TaskBucket, TaskSpec};
use lote::types::{AccountName, JobId};
use server_support::*;

const TASKS: usize = 2000;
const BATCH: usize = 100;
const CRASHES: usize = 10;

/// xorshift64*, enough to pick crash moments repeatably.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_crashes_lose_nothing_and_run_nothing_twice() {
    let seed: u64 = std::env::var("LOTE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed} (LOTE_TEST_SEED={seed} repeats this run)");
    let mut rng = Rng(seed);
    let marks = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&[]);
    let (mut client, key, _) = server.account("acme").await;
    local_pool(&client, "p", 2, 2).await;
    nodes_up(&client, "p", 2).await;
    create_job(&client, "j", "p").await;

    // Each run of a task appends a line to its own mark file.
    let task = |i: usize| -> TaskSpec {
        shell(
            &format!("t{i}"),
            &format!("echo run >> {}/$LOTE_TASK_ID", marks.path().display()),
        )
    };
    let batches = TASKS / BATCH;
    let per_crash = batches / CRASHES;
    let mut sent = 0;
    for crash in 0..CRASHES {
        // Acknowledged batches (the call returned) must all survive.
        for _ in 0..per_crash {
            let tasks = (sent..sent + BATCH).map(task).collect();
            client
                .call(&Request::AddTasks {
                    job: JobId::new("j").unwrap(),
                    tasks,
                    request_id: None,
                })
                .await
                .unwrap();
            sent += BATCH;
        }
        let pause = rng.below(700);
        println!("crash {crash}: {sent} tasks acknowledged, SIGKILL after {pause} ms");
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server = server.crash_restart(&[]);
        client = server.client(
            Credential::Account {
                account: AccountName::new("acme").unwrap(),
            },
            &key,
        );
    }
    assert_eq!(sent, TASKS);
    wait_job(&client, "j", Duration::from_secs(180)).await;
    let job = show_job(&client, "j").await.state;
    assert_eq!(job.tasks_added, TASKS as u64, "acknowledged tasks lost");
    assert_eq!(
        job.task_counts
            .get(&TaskBucket::Succeeded)
            .copied()
            .unwrap_or(0),
        TASKS as u64,
        "{:?}",
        job.task_counts
    );
    // Every task ran exactly once: one line in its mark file.
    let mut twice = Vec::new();
    for i in 0..TASKS {
        let runs = std::fs::read_to_string(marks.path().join(format!("t{i}")))
            .unwrap_or_default()
            .lines()
            .count();
        if runs != 1 {
            twice.push((i, runs));
        }
    }
    assert!(
        twice.is_empty(),
        "seed {seed}: tasks not run exactly once: {twice:?}"
    );
    // The log rebuilds with no mismatch (job counts equal their tasks').
    stop_and_replay(server);
}
