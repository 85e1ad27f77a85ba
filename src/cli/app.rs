//! `lote app`: publish a program with its definition (app.toml), then run
//! it with parameters and input files, watch the run, and download what
//! it made. Runs are jobs; `app_jobs.rs` shows and fetches them.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{json, Value};

use super::app_jobs::{self, AppJobCmd};
use super::output::{from_transfer, opt, refused, table, Progress};
use super::Rendered;
use lote::api::{Request, Response};
use lote::blob::app_files;
use lote::client::{Client, ClientError};
use lote::domain::app::definition::{AppDefinition, ParamKind, Split};
use lote::domain::app::submit::AppInput;
use lote::domain::app::{App, INPUTS_CONTAINER};
use lote::domain::job::AutoPool;
use lote::domain::pool::PoolSpec;
use lote::types::{AccountName, JobId, PoolId};

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Publish a version of an app: a directory (or a zip) holding its
    /// program and its definition, app.toml, at the top. The definition
    /// is checked first, every problem reported with its line; then the
    /// files are uploaded as the package NAME VERSION, and the version
    /// published. The first version becomes the default.
    ///
    /// Example:
    ///   lote app publish ./mandelzoom --default
    #[command(verbatim_doc_comment)]
    Publish {
        path: PathBuf,
        /// Make it the version runs get when they name none.
        #[arg(long)]
        default: bool,
    },
    /// The account's apps: versions, default, description.
    List,
    /// One app: its versions, and a version's parameters (types, defaults,
    /// bounds), split, stages and merge.
    ///
    /// Example: lote app show mandelzoom:1.0
    #[command(verbatim_doc_comment)]
    Show {
        /// NAME or NAME:VERSION (default: the default version).
        app: String,
    },
    /// Make a version the one runs get when they name none.
    SetDefault {
        app: String,
        #[arg(value_name = "VERSION")]
        app_version: String,
    },
    /// Run an app: its parameters are checked first, all problems at once;
    /// input files the store lacks are uploaded (a file is known by its
    /// content's SHA-256, so the same file is sent once); then one job runs
    /// the app's tasks. Prints the job's id.
    ///
    /// Examples:
    ///   lote app run mandelzoom --param frames=60 --pool render --wait --progress
    ///   lote app run thumbs --input ./photos/*.jpg --auto-pool nodes=2,slots=2
    #[command(verbatim_doc_comment)]
    Run {
        /// NAME or NAME:VERSION (default: the default version).
        app: String,
        /// A parameter, NAME=VALUE (repeatable). A file parameter takes a
        /// local path, uploaded like --input.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// An input file every task gets in its working directory
        /// (repeatable).
        #[arg(long = "input", value_name = "PATH")]
        inputs: Vec<PathBuf>,
        /// Run on this pool...
        #[arg(long, required_unless_present = "auto_pool")]
        pool: Option<PoolId>,
        /// ...or on a pool made for this run alone and deleted when it
        /// ends: nodes=N,slots=S[,cores=C,memory-mib=M,keep-alive].
        #[arg(long, conflicts_with = "pool", value_name = "nodes=N,slots=S")]
        auto_pool: Option<String>,
        /// The job's id (default: NAME-xxxxxxxx).
        #[arg(long)]
        job: Option<JobId>,
        /// Wait until the run ends; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
        /// With --wait, a live progress line on stderr.
        #[arg(long, requires = "wait")]
        progress: bool,
        /// With --wait, give up after this many seconds (exit 1).
        #[arg(long, requires = "wait")]
        timeout_secs: Option<u64>,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Runs of the account's apps (or of one): state, percent complete.
    Jobs { app: Option<String> },
    /// One run: show, download, cancel, reprocess.
    #[command(subcommand)]
    Job(AppJobCmd),
}

/// `nodes=N,slots=S[,cores=C,memory-mib=M,keep-alive]` as an auto pool.
pub(super) fn auto_pool_arg(text: &str) -> Result<AutoPool, ClientError> {
    let placeholder = PoolId::new("auto").expect("a valid id");
    let account = AccountName::new("self").expect("a valid name");
    let mut pool = PoolSpec::fixed(placeholder, account, 1, 1);
    let mut keep_alive = false;
    let mut nodes = None;
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let number = || -> Result<u32, ClientError> {
            value
                .parse()
                .map_err(|_| refused(format!("--auto-pool {item:?}: {key} takes a whole number")))
        };
        match key {
            "nodes" => nodes = Some(number()?),
            "slots" => pool.node_size.task_slots = number()?,
            "cores" => pool.node_size.cores = number()?,
            "memory-mib" => pool.node_size.memory_mib = number()? as u64,
            "keep-alive" => keep_alive = true,
            _ => {
                return Err(refused(format!(
                    "--auto-pool {item:?}: expected nodes=N, slots=S, cores=C, memory-mib=M or keep-alive"
                )))
            }
        }
    }
    let nodes = nodes.ok_or_else(|| refused("--auto-pool needs nodes=N (and slots=S)"))?;
    if nodes == 0 || pool.node_size.task_slots == 0 {
        return Err(refused(
            "--auto-pool needs at least 1 node of at least 1 slot: nothing would run on it",
        ));
    }
    pool.scale = lote::domain::pool::ScaleSettings::Fixed {
        target_nodes: nodes,
    };
    pool.node_count_max = nodes.max(1);
    Ok(AutoPool { pool, keep_alive })
}

/// A job's pool: the one named, or (with an auto pool) the job's own id,
/// which the server also gives the pool.
pub(super) fn pool_or_own(pool: Option<PoolId>, job: &JobId) -> PoolId {
    pool.unwrap_or_else(|| {
        PoolId::new(job.as_str()).unwrap_or_else(|_| PoolId::new("auto").expect("a valid id"))
    })
}

pub(super) async fn run(cmd: AppCmd, client: &Client) -> Result<Rendered, ClientError> {
    match cmd {
        AppCmd::Publish { path, default } => publish(client, &path, default).await,
        AppCmd::List => {
            let Response::Apps(apps) = client.call(&Request::ListApps).await? else {
                return Err(ClientError::Protocol("expected apps".into()));
            };
            Ok(Some(list_view(&apps)))
        }
        AppCmd::Show { app } => {
            let lote::domain::spec::PackageRef { id: name, version } =
                super::files::parse_app(&app).map_err(refused)?;
            let Response::App(app) = client.call(&Request::ShowApp { app: name }).await? else {
                return Err(ClientError::Protocol("expected an app".into()));
            };
            let def = app
                .state
                .resolve(version.as_deref())
                .map_err(|r| refused(r.detail))?;
            Ok(Some(show_view(&app.state, def)))
        }
        AppCmd::SetDefault { app, app_version } => Ok(Some(super::render::render(
            client
                .call(&Request::SetDefaultAppVersion {
                    app,
                    version: app_version,
                })
                .await?,
        ))),
        AppCmd::Run {
            app,
            params,
            inputs,
            pool,
            auto_pool,
            job,
            wait,
            progress,
            timeout_secs,
            request_id,
        } => {
            let lote::domain::spec::PackageRef { id: name, version } =
                super::files::parse_app(&app).map_err(refused)?;
            let auto_pool = auto_pool.as_deref().map(auto_pool_arg).transpose()?;
            let (params, inputs, uploaded) = prepare_inputs(client, &name, params, inputs).await?;
            let created = client
                .call(&Request::RunApp {
                    app: name,
                    version,
                    job,
                    params,
                    inputs,
                    pool,
                    auto_pool,
                    request_id,
                })
                .await?;
            let Response::Created { entity } = created else {
                return Err(ClientError::Protocol("expected the run's job".into()));
            };
            let job = entity.rsplit('/').next().unwrap_or(&entity).to_string();
            let job = JobId::new(job).map_err(|e| ClientError::Protocol(e.to_string()))?;
            if !wait {
                return Ok(Some((
                    json!({ "job": job, "inputs": uploaded.0 + uploaded.1, "inputs_uploaded": uploaded.0 }),
                    format!(
                        "{job}\n{} input file(s), {} uploaded, {} already stored\nwatch it: lote app job show {job}\n",
                        uploaded.0 + uploaded.1,
                        uploaded.0,
                        uploaded.1
                    ),
                )));
            }
            app_jobs::wait(client, &job, progress, timeout_secs).await
        }
        AppCmd::Jobs { app } => app_jobs::list(client, app.as_deref()).await,
        AppCmd::Job(cmd) => app_jobs::run(cmd, client).await,
    }
}

async fn publish(client: &Client, path: &Path, default: bool) -> Result<Rendered, ClientError> {
    let mut bar = Progress::new(path.display().to_string());
    let published = app_files::publish(client, path, default, |d, t| bar.update(d, t)).await;
    bar.finish();
    let def = published.map_err(|e| match e {
        app_files::PublishError::Refused(why) => refused(why),
        app_files::PublishError::Transfer(t) => from_transfer(t),
    })?;
    Ok(Some((
        json!({ "app": def.name, "version": def.version }),
        format!(
            "published {} {}\nrun it: lote app run {}:{} --pool POOL (lote app show {} lists its parameters)\n",
            def.name, def.version, def.name, def.version, def.name
        ),
    )))
}

/// The run's parameters and inputs: each local file (an --input, or the
/// value of a file parameter) hashed, and uploaded when the store does
/// not hold it yet. Also how many files were uploaded and how many were
/// stored already.
async fn prepare_inputs(
    client: &Client,
    app: &str,
    params: Vec<String>,
    paths: Vec<PathBuf>,
) -> Result<(Vec<(String, String)>, Vec<AppInput>, (usize, usize)), ClientError> {
    let file_params: Vec<String> = match client.call(&Request::ShowApp { app: app.into() }).await {
        Ok(Response::App(a)) => a
            .state
            .versions
            .iter()
            .flat_map(|v| v.definition.parameters.iter())
            .filter(|p| p.kind == ParamKind::File)
            .map(|p| p.name.clone())
            .collect(),
        _ => vec![],
    };
    let mut pairs = vec![];
    let mut paths = paths;
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| refused(format!("--param {p:?}: expected NAME=VALUE")))?;
        let mut value = v.to_string();
        if file_params.iter().any(|f| f == k) && Path::new(v).is_file() {
            let path = PathBuf::from(v);
            value = file_name(&path)?;
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        pairs.push((k.to_string(), value));
    }
    let mut inputs: Vec<AppInput> = vec![];
    let mut counts = (0, 0);
    for path in paths {
        let file = &path;
        let (input, sent) = app_files::input(client, &path, &inputs, |sha| async move {
            let mut bar = Progress::new(file.display().to_string());
            let begin = Request::BeginUpload {
                container: INPUTS_CONTAINER.into(),
                name: sha,
            };
            let sent =
                lote::blob::transfer::upload_file(client, begin, file, |d, t| bar.update(d, t))
                    .await;
            bar.finish();
            sent.map(|_| ())
        })
        .await
        .map_err(from_transfer)?;
        if sent {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        inputs.push(input);
    }
    Ok((pairs, inputs, counts))
}

fn file_name(path: &Path) -> Result<String, ClientError> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| refused(format!("{} names no file", path.display())))
}

fn list_view(apps: &[lote::domain::Versioned<App>]) -> (Value, String) {
    let mut rows = vec![];
    let mut values = vec![];
    for a in apps {
        let Some(first) = a.state.versions.first() else {
            continue;
        };
        let versions: Vec<&str> = a
            .state
            .versions
            .iter()
            .map(|v| v.definition.version.as_str())
            .collect();
        let latest = a.state.versions.last().map_or(first, |v| v);
        rows.push(vec![
            first.definition.name.clone(),
            opt(&a.state.default_version),
            versions.join(", "),
            latest.definition.description.clone(),
        ]);
        values.push(json!({
            "name": first.definition.name,
            "default_version": a.state.default_version,
            "versions": versions,
            "description": latest.definition.description,
        }));
    }
    let text = if rows.is_empty() {
        "no apps yet: lote app publish DIR (a program with its app.toml)\n".to_string()
    } else {
        table(&["app", "default", "versions", "description"], rows)
    };
    (json!({ "apps": values }), text)
}

fn show_view(app: &App, def: &AppDefinition) -> (Value, String) {
    let mut text = format!("{} {}", def.name, def.version);
    if app.default_version.as_deref() == Some(def.version.as_str()) {
        text.push_str(" (default)");
    }
    text.push('\n');
    if !def.description.is_empty() {
        text.push_str(&format!("{}\n", def.description));
    }
    let rows = def
        .parameters
        .iter()
        .map(|p| {
            let kind = match &p.kind {
                ParamKind::Integer { min, max } => bounds("integer", min, max),
                ParamKind::Number { min, max } => bounds("number", min, max),
                ParamKind::String { max_len } => match max_len {
                    Some(m) => format!("string, at most {m} bytes"),
                    None => "string".into(),
                },
                ParamKind::Choice { choices } => format!("one of {}", choices.join(", ")),
                other => other.word().into(),
            };
            let default = match (&p.default, p.required) {
                (Some(d), _) => d.clone(),
                (None, true) => "(required)".into(),
                (None, false) => "-".into(),
            };
            vec![p.name.clone(), kind, default, p.description.clone()]
        })
        .collect();
    text.push_str("\nparameters:\n");
    text.push_str(&table(&["name", "type", "default", "description"], rows));
    let split = match &def.split {
        Split::Single => "one task".to_string(),
        Split::Range { from, to, chunk } => {
            format!("one task per {chunk} of {from}..{to}")
        }
        Split::Files { pattern } => format!("one task per input file matching {pattern}"),
        Split::Lines { parameter } => format!("one task per line of {parameter}"),
        Split::Splitter { command } => format!("its splitter adds the tasks: {command}"),
    };
    text.push_str(&format!("\nsplit: {split}\n"));
    for (i, s) in def.stages.iter().enumerate() {
        let outputs: Vec<String> = s
            .outputs
            .iter()
            .map(|o| format!("{} ({})", o.pattern, o.kind.word()))
            .collect();
        text.push_str(&format!(
            "stage {} {}: {}{}\n",
            i + 1,
            s.name,
            s.command,
            if outputs.is_empty() {
                String::new()
            } else {
                format!("\n  leaves {}", outputs.join(", "))
            }
        ));
    }
    if let Some(m) = &def.merge {
        text.push_str(&format!(
            "merge: {}\n  result {}{}\n",
            m.command,
            m.output,
            m.preview
                .as_ref()
                .map(|p| format!(", preview {p}"))
                .unwrap_or_default()
        ));
    }
    text.push_str(&format!(
        "outcomes: exit 0 succeeded; {} retryable (up to {} retries); any other code a permanent failure\n",
        if def.outcomes.retry_exit_codes.is_empty() {
            "no code".to_string()
        } else {
            def.outcomes
                .retry_exit_codes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        def.outcomes.max_retries
    ));
    let versions: Vec<&str> = app
        .versions
        .iter()
        .map(|v| v.definition.version.as_str())
        .collect();
    text.push_str(&format!("versions: {}\n", versions.join(", ")));
    (
        json!({
            "definition": def,
            "default_version": app.default_version,
            "versions": versions,
        }),
        text,
    )
}

fn bounds<T: std::fmt::Display>(word: &str, min: &Option<T>, max: &Option<T>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{word} {a}..{b}"),
        (Some(a), None) => format!("{word} >= {a}"),
        (None, Some(b)) => format!("{word} <= {b}"),
        (None, None) => word.to_string(),
    }
}
