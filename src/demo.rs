//! `lote demo`: the main job on the embedded default.
//!
//! The seed's figure 4, end to end, with nothing else running: an
//! in-process server on a local data directory, a local pool of two nodes
//! (two real agent processes), a job of frame tasks that each digest a
//! generated input file with `sha256sum`, a progress bar, a summary. Every
//! 17th frame fails on its first attempt to show retries. At the end the
//! pool is deleted (its agents stop) and the server shuts down.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::{Credential, Request, Response};
use crate::client::{Client, ClientConfig};
use crate::domain::job::{Job, JobSpec, OnAllTasksComplete};
use crate::domain::pool::{PoolSpec, SchedulingPolicy};
use crate::domain::spec::CommandLine;
use crate::domain::task::{TaskBucket, TaskSpec};
use crate::domain::Versioned;
use crate::server::{self, ServerConfig};
use crate::store::Durability;
use crate::types::{AccountName, JobId, PoolId, TaskId};

/// Bytes of each generated input file.
const INPUT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoSummary {
    pub account: String,
    pub pool: String,
    pub job: String,
    pub tasks: u32,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u32,
    pub job_status: String,
    pub sample_task: String,
    pub elapsed_secs: f64,
    pub outputs: PathBuf,
}

fn frame_id(i: u32) -> TaskId {
    TaskId::new(format!("frame-{i:05}")).expect("valid id")
}

/// Writes the inputs: deterministic pseudo-random bytes per frame.
fn generate_inputs(dir: &Path, tasks: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..tasks {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(i);
        let mut bytes = Vec::with_capacity(INPUT_BYTES);
        while bytes.len() < INPUT_BYTES {
            // xorshift64*: cheap and good enough to make distinct files.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        std::fs::write(dir.join(format!("frame-{i:05}.raw")), &bytes)?;
    }
    Ok(())
}

fn bar(done: u64, total: u64, running: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}] {done}/{total} tasks done, {running} running",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// Runs the demo; blocks until it is over and nothing is left running.
pub fn run(data_dir: &Path, tasks: u32, durability: Durability) -> Result<DemoSummary, String> {
    let inputs = data_dir.join("inputs");
    let outputs = data_dir.join("outputs");
    generate_inputs(&inputs, tasks).map_err(|e| format!("cannot write the inputs: {e}"))?;
    std::fs::create_dir_all(&outputs)
        .map_err(|e| format!("cannot create {}: {e}", outputs.display()))?;

    let mut config = ServerConfig::new(data_dir, "127.0.0.1:0");
    config.durability = durability;
    let server = server::Embedded::start(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let addr = server.addr.to_string();
    let result = runtime.block_on(drive(&server.admin_key, &addr, tasks, &inputs, &outputs));
    server.stop().map_err(|e| format!("server: {e}"))?;
    result
}

async fn drive(
    admin_key: &str,
    addr: &str,
    tasks: u32,
    inputs: &Path,
    outputs: &Path,
) -> Result<DemoSummary, String> {
    let err = |e: crate::client::ClientError| e.to_string();
    let admin = Client::new(ClientConfig::new(addr, Credential::Admin, admin_key));
    let suffix = format!("{:08x}", crate::clock::new_uuid().as_u128() as u32);
    let account = AccountName::new(format!("demo-{suffix}")).expect("valid id");
    admin
        .call(&Request::CreateAccount {
            name: account.clone(),
            request_id: None,
        })
        .await
        .map_err(err)?;
    let Response::Keys { primary, .. } = admin
        .call(&Request::ShowKeys {
            name: account.clone(),
        })
        .await
        .map_err(err)?
    else {
        return Err("unexpected reply to ShowKeys".into());
    };
    let client = Client::new(ClientConfig::new(
        addr,
        Credential::Account {
            account: account.clone(),
        },
        primary,
    ));

    let pool = PoolId::new("render").expect("valid id");
    let spec = PoolSpec {
        display_name: "Render farm".into(),
        scheduling: SchedulingPolicy::Spread,
        ..PoolSpec::fixed(pool.clone(), account.clone(), 2, 2)
    };
    client
        .call(&Request::CreatePool {
            spec,
            request_id: None,
        })
        .await
        .map_err(err)?;
    let job = JobId::new("frames").expect("valid id");
    let spec = JobSpec {
        display_name: "Digest the intro's frames".into(),
        priority: 100,
        max_task_retries: 2,
        on_all_tasks_complete: OnAllTasksComplete::TerminateJob,
        ..JobSpec::on_pool(job.clone(), account.clone(), pool.clone())
    };
    client
        .call(&Request::CreateJob {
            spec,
            request_id: None,
        })
        .await
        .map_err(err)?;

    let started = Instant::now();
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|i| {
            let input = inputs.join(format!("frame-{i:05}.raw"));
            let output = outputs.join(format!("frame-{i:05}.sha256"));
            // Every 17th frame fails its first attempt: a retry to watch.
            let flaky = if i % 17 == 0 {
                "[ \"$LOTE_TASK_ATTEMPT\" = 1 ] && { echo 'simulated failure' >&2; exit 3; }; "
            } else {
                ""
            };
            let line = format!(
                "{flaky}sha256sum '{}' > digest.txt && cp digest.txt '{}'",
                input.display(),
                output.display()
            );
            TaskSpec {
                display_name: format!("frame {i}"),
                ..TaskSpec::simple(frame_id(i), CommandLine::Shell(line))
            }
        })
        .collect();
    for batch in specs.chunks(crate::api::ADD_TASKS_BATCH_MAX) {
        client
            .call(&Request::AddTasks {
                job: job.clone(),
                tasks: batch.to_vec(),
                request_id: Some(crate::clock::new_uuid()),
            })
            .await
            .map_err(err)?;
    }

    // Progress until the job completes (all tasks finished).
    let deadline = Instant::now() + Duration::from_secs(300);
    let state: Versioned<Job> = loop {
        let Response::Job(state) = client
            .call(&Request::ShowJob { job: job.clone() })
            .await
            .map_err(err)?
        else {
            return Err("unexpected reply to ShowJob".into());
        };
        let done = state.state.count(TaskBucket::Succeeded) + state.state.count(TaskBucket::Failed);
        eprint!(
            "\r{}",
            bar(
                done,
                u64::from(tasks),
                state.state.count(TaskBucket::Running)
            )
        );
        let _ = std::io::stderr().flush();
        if state.state.completed_at.is_some() {
            eprintln!();
            break state;
        }
        if Instant::now() > deadline {
            eprintln!();
            return Err("the job did not finish within 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed_secs = started.elapsed().as_secs_f64();

    // Count retries from the tasks themselves.
    let mut retried = 0;
    let mut after = None;
    loop {
        let Response::Tasks { items, next } = client
            .call(&Request::ListTasks {
                job: job.clone(),
                after: after.take(),
                limit: 0,
            })
            .await
            .map_err(err)?
        else {
            return Err("unexpected reply to ListTasks".into());
        };
        retried += items.iter().map(|t| t.state.retry_count).sum::<u32>();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }

    // Leave nothing running: the pool's agents stop with it.
    client
        .call(&Request::DeletePool { pool: pool.clone() })
        .await
        .map_err(err)?;

    Ok(DemoSummary {
        account: account.to_string(),
        pool: format!("pool/{account}/{pool}"),
        job: format!("job/{account}/{job}"),
        tasks,
        succeeded: state.state.count(TaskBucket::Succeeded),
        failed: state.state.count(TaskBucket::Failed),
        retried,
        job_status: serde_json::to_value(state.state.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        sample_task: format!("task/{account}/{job}/{}", frame_id(0)),
        elapsed_secs,
        outputs: outputs.to_path_buf(),
    })
}
