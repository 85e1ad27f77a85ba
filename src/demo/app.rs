//! The demo's second half, the seed's figure 5: a program published as an
//! app, then run by its users with parameters, without a word about tasks
//! or nodes. The example app (examples/mandelzoom) renders the frames of a
//! zoom into the Mandelbrot set; lote splits the frames into tasks on a
//! pool made for the run alone, merges them into one animated PNG with a
//! still preview, and deletes the pool when the run ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::{Request, Response};
use crate::blob::app_files;
use crate::client::Client;
use crate::domain::app::submit::{result_prefix, result_preview_prefix};
use crate::domain::app::{RunStatus, JOBS_CONTAINER};
use crate::domain::job::{AutoPool, TaskBucket};
use crate::domain::pool::PoolSpec;
use crate::types::{AccountName, JobId, PoolId};

/// The example's definition, as shipped beside its program.
const APP_TOML: &str = include_str!("../../examples/mandelzoom/app.toml");

/// What the app run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppRunSummary {
    pub app: String,
    pub description: String,
    pub job: String,
    pub tasks: u64,
    pub status: String,
    pub elapsed_secs: f64,
    /// The merged result and its preview, downloaded.
    pub result: PathBuf,
    pub result_bytes: u64,
    pub preview: PathBuf,
}

/// Publishes and runs the example app; None when its program was not
/// built beside this binary (`cargo build --release --bins`).
pub(super) async fn figure5(
    client: &Client,
    account: &AccountName,
    data_dir: &Path,
) -> Result<Option<AppRunSummary>, String> {
    let program = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("mandelzoom");
    if !program.is_file() {
        println!(
            "figure 5 skipped: the example app's program is not beside lote ({}); build it with cargo build --release --bins",
            program.display()
        );
        return Ok(None);
    }
    // What a publisher has: the existing program and a definition.
    let dir = data_dir.join("app-mandelzoom");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::copy(&program, dir.join("mandelzoom"))
        .map_err(|e| format!("copying mandelzoom: {e}"))?;
    std::fs::write(dir.join("app.toml"), APP_TOML).map_err(|e| e.to_string())?;
    let def = app_files::publish(client, &dir, true, |_, _| {})
        .await
        .map_err(|e| e.to_string())?;

    // What a user does: name the app, give parameters, ask for nodes.
    let suffix = format!(
        "{:06x}",
        crate::clock::new_uuid().as_u128() as u32 & 0xff_ffff
    );
    let job = JobId::new(format!("zoom-{suffix}")).expect("valid id");
    let pool = PoolId::new(job.as_str()).expect("valid id");
    let params = [
        ("frames", "48"),
        ("width", "320"),
        ("height", "240"),
        ("palette", "fire"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let started = Instant::now();
    client
        .call(&Request::RunApp {
            app: def.name.clone(),
            version: None,
            job: Some(job.clone()),
            params,
            inputs: vec![],
            pool: None,
            auto_pool: Some(AutoPool {
                pool: PoolSpec::fixed(pool.clone(), account.clone(), 2, 2),
                keep_alive: false,
            }),
            request_id: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let state = loop {
        let Response::Job(state) = client
            .call(&Request::ShowJob { job: job.clone() })
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("unexpected reply to ShowJob".into());
        };
        let s = &state.state;
        let done = s.count(TaskBucket::Succeeded) + s.count(TaskBucket::Failed);
        eprint!(
            "\r{}",
            super::bar(done, s.tasks_added, s.count(TaskBucket::Running))
        );
        let _ = std::io::stderr().flush();
        if s.completed_at.is_some() {
            eprintln!();
            break state.state;
        }
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!();
            return Err(format!("the app run {job} did not finish within 5 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed_secs = started.elapsed().as_secs_f64();

    // The merged result and its preview, as `lote app job download` gets
    // them.
    let out = data_dir.join("results-app");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut fetched = vec![];
    for prefix in [result_prefix(&job), result_preview_prefix(&job)] {
        let blobs = crate::blob::transfer::list_all(client, JOBS_CONTAINER, &prefix)
            .await
            .map_err(|e| e.to_string())?;
        for meta in blobs {
            let path = out.join(&meta.name[prefix.len()..]);
            crate::blob::transfer::download_to(client, &meta, &path, |_, _| {})
                .await
                .map_err(|e| e.to_string())?;
            fetched.push((path, meta.size));
        }
    }
    // The run's pool goes when the run ends; the demo leaves nothing
    // running, so it waits for that.
    let gone_by = Instant::now() + Duration::from_secs(60);
    while client
        .call(&Request::ShowPool { pool: pool.clone() })
        .await
        .is_ok()
    {
        if Instant::now() > gone_by {
            return Err(format!(
                "the run's pool {pool} was not deleted within a minute"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let [(result, result_bytes), (preview, _)] = <[(PathBuf, u64); 2]>::try_from(fetched)
        .map_err(|f| format!("expected a result and a preview, downloaded {}", f.len()))?;
    Ok(Some(AppRunSummary {
        app: format!("{} {}", def.name, def.version),
        description: def.description.clone(),
        job: job.to_string(),
        tasks: state.tasks_added,
        status: crate::types::json_name(&RunStatus::of(&state)),
        elapsed_secs,
        result,
        result_bytes,
        preview,
    }))
}
