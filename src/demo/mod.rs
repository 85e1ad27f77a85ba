//! `lote demo`: the main job on the embedded default.
//!
//! The seed's figure 4, end to end, with nothing else running: an
//! in-process server on a local data directory; the generated input files
//! and the program (a shell script) are uploaded to the blob store; a local
//! pool of two nodes (two real agent processes); a job whose tasks each
//! fetch the program (a job-wide resource file) and their own input, digest
//! it with `sha256sum`, and have their output uploaded to the blob store
//! with a checksummed manifest; a progress bar; a summary; the results
//! downloaded at the end. Every 17th frame fails on its first attempt to
//! show retries. Then the pool is deleted (its agents stop). Then figure 5
//! (`app.rs`): the example app published and run. Then the server shuts
//! down.

mod app;

pub use app::AppRunSummary;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::{Credential, Request, Response};
use crate::client::{Client, ClientConfig};
use crate::domain::job::{Job, JobSpec, OnAllTasksComplete};
use crate::domain::pool::{PoolSpec, SchedulingPolicy};
use crate::domain::spec::{CommandLine, OutputFile, ResourceFile, ResourceSource, UploadCondition};
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
    /// Where the results were downloaded.
    pub outputs: PathBuf,
    /// Result blobs downloaded.
    pub outputs_downloaded: usize,
    /// Output files recorded in the tasks' manifests.
    pub manifest_entries: usize,
    pub uploaded_bytes: u64,
    /// Figure 5: the example app's run (None when its program was not
    /// built).
    pub app_run: Option<AppRunSummary>,
}

/// The program the tasks run, uploaded like any user's program.
const PROGRAM: &str = r#"#!/bin/sh
# digest INPUT OUTPUT: the SHA-256 of a frame, as the frame's result.
set -e
mkdir -p "$(dirname "$2")"
sha256sum "$1" | cut -d' ' -f1 > "$2"
echo "digested $1 on node $LOTE_NODE_ID (attempt $LOTE_TASK_ATTEMPT)"
"#;

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

pub(crate) fn bar(done: u64, total: u64, running: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}] {done}/{total} tasks done, {running} running",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// Runs the demo; blocks until it is over and nothing is left running.
pub fn run(
    data_dir: &Path,
    tasks: u32,
    durability: Durability,
    stay: bool,
) -> Result<DemoSummary, String> {
    let inputs = data_dir.join("inputs");
    let outputs = data_dir.join("results");
    generate_inputs(&inputs, tasks).map_err(|e| format!("cannot write the inputs: {e}"))?;
    std::fs::write(inputs.join("digest.sh"), PROGRAM)
        .map_err(|e| format!("cannot write the program: {e}"))?;

    let mut config = ServerConfig::new(data_dir, "127.0.0.1:0");
    config.durability = durability;
    // The console where a person expects it, unless another server has
    // that port (asked, not probed: two demos starting at once must not
    // both find it free): then any free one (printed either way).
    let usual = "127.0.0.1:7071";
    config.http_listen = Some(usual.to_string());
    let server = match server::Embedded::start(config.clone()) {
        Err(server::ServerError::Bind { addr, .. }) if addr == usual => {
            config.http_listen = Some("127.0.0.1:0".to_string());
            server::Embedded::start(config)
        }
        started => started,
    }
    .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let addr = server.addr.to_string();
    let console = server.console;
    let result = runtime.block_on(async {
        let result = drive(
            &server.admin_key,
            &addr,
            (console, stay),
            tasks,
            &inputs,
            &outputs,
        )
        .await;
        if let (true, Some(console)) = (stay, console) {
            println!("the console stays up on http://{console}/ui/ until Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
        result
    });
    server.stop().map_err(|e| format!("server: {e}"))?;
    result
}

async fn drive(
    admin_key: &str,
    addr: &str,
    (console, stay): (Option<std::net::SocketAddr>, bool),
    tasks: u32,
    inputs: &Path,
    outputs: &Path,
) -> Result<DemoSummary, String> {
    let err = |e: crate::client::ClientError| e.to_string();
    let (account, client, key) = demo_account(admin_key, addr).await?;
    announce_console(console, stay, &account, &key);

    // Figure 4, steps 1 and 2: the inputs and the program to the store,
    // eight uploads at a time.
    let uploaded_bytes = upload_inputs(&client, tasks, inputs).await?;

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
        // Every task gets the program, fetched once per node.
        common_resource_files: vec![ResourceFile {
            source: ResourceSource::Blob {
                container: "programs".into(),
                name: "digest.sh".into(),
            },
            path: "digest.sh".into(),
            mode: Some(0o755),
        }],
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
    let specs = frame_tasks(tasks);
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

    let (retried, manifests) = count_retries(&client, &job).await?;

    // Step 6: the results, from the blob store.
    let results = crate::blob::transfer::list_all(&client, "outputs", "frames/")
        .await
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(outputs)
        .map_err(|e| format!("cannot create {}: {e}", outputs.display()))?;
    for meta in &results {
        let file = meta.name.trim_start_matches("frames/");
        crate::blob::transfer::download_to(&client, meta, &outputs.join(file), |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
    }

    // Leave nothing running: the pool's agents stop with it.
    client
        .call(&Request::DeletePool {
            pool: pool.clone(),
            force: false,
        })
        .await
        .map_err(err)?;

    let data_dir = outputs.parent().unwrap_or(outputs);
    let app_run = app::figure5(&client, &account, data_dir).await?;

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
        outputs_downloaded: results.len(),
        manifest_entries: manifests,
        uploaded_bytes,
        app_run,
    })
}

/// Where to watch the demo, and as whom.
fn announce_console(
    console: Option<std::net::SocketAddr>,
    stay: bool,
    account: &AccountName,
    key: &str,
) {
    let Some(console) = console else { return };
    let hint = if stay {
        ""
    } else {
        "; add --stay to keep it up after the job"
    };
    println!("watch it in the console: http://{console}/ui/ (account {account}, key {key}){hint}");
}

/// A fresh account for the demo, and a client signed with its key.
async fn demo_account(
    admin_key: &str,
    addr: &str,
) -> Result<(AccountName, Client, String), String> {
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
        primary.clone(),
    ));
    Ok((account, client, primary))
}

/// Figure 4, steps 1 and 2: the inputs and the program to the store,
/// eight uploads at a time. Returns the bytes uploaded.
async fn upload_inputs(client: &Client, tasks: u32, inputs: &Path) -> Result<u64, String> {
    let mut uploaded_bytes = 0u64;
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut files: Vec<(String, PathBuf)> = (0..tasks)
        .map(|i| {
            let name = format!("frame-{i:05}.raw");
            (format!("frames/{name}"), inputs.join(name))
        })
        .collect();
    files.push(("digest.sh".into(), inputs.join("digest.sh")));
    let mut pending = files.into_iter();
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < 8 {
            let Some((name, path)) = pending.next() else {
                break;
            };
            let container = if name == "digest.sh" {
                "programs"
            } else {
                "inputs"
            };

            inflight.push(async move {
                crate::blob::transfer::upload_file(
                    client,
                    Request::BeginUpload {
                        container: container.into(),
                        name,
                    },
                    &path,
                    |_, _| {},
                )
                .await
            });
        }
        match inflight.next().await {
            Some(done) => uploaded_bytes += done.map_err(|e| e.to_string())?.size,
            None => break,
        }
    }
    Ok(uploaded_bytes)
}

/// One task per frame: digest its input, keep the digest as an output.
fn frame_tasks(tasks: u32) -> Vec<TaskSpec> {
    (0..tasks)
        .map(|i| {
            // Every 17th frame fails its first attempt: a retry to watch.
            let flaky = if i % 17 == 0 {
                "[ \"$LOTE_TASK_ATTEMPT\" = 1 ] && { echo 'simulated failure' >&2; exit 3; }; "
            } else {
                ""
            };
            let line = format!("{flaky}./digest.sh input.raw out/frame-{i:05}.sha256");
            TaskSpec {
                display_name: format!("frame {i}"),
                resource_files: vec![ResourceFile {
                    source: ResourceSource::Blob {
                        container: "inputs".into(),
                        name: format!("frames/frame-{i:05}.raw"),
                    },
                    path: "input.raw".into(),
                    mode: None,
                }],
                output_files: vec![OutputFile {
                    pattern: "out/*.sha256".into(),
                    container: "outputs".into(),
                    path_prefix: "frames/".into(),
                    upload_condition: UploadCondition::Success,
                }],
                ..TaskSpec::simple(frame_id(i), CommandLine::Shell(line))
            }
        })
        .collect()
}

/// Retries and output manifest entries, counted from the tasks themselves.
async fn count_retries(client: &Client, job: &JobId) -> Result<(u32, usize), String> {
    let err = |e: crate::client::ClientError| e.to_string();
    let mut retried = 0;
    let mut manifests = 0;
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
        manifests += items.iter().map(|t| t.state.outputs.len()).sum::<usize>();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok((retried, manifests))
}
