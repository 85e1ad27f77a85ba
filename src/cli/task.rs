//! `lote task`: adding tasks (one, a range, a file of them), listing,
//! explaining, terminating them, and reading their output and files.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;

use super::files::{list_files, read_file, FileTarget};
use super::render::render;
use super::{Output, Rendered};
use lote::api::{ApiError, Request, Response};
use lote::client::{Client, ClientError};
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::domain::RejectionCode;
use lote::types::{JobId, NodeId, TaskId};

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Add one task. The words after `--` are its program and arguments,
    /// run as given (no shell); `--command 'LINE'` runs LINE through
    /// /bin/sh -c instead. Without ID the task gets a fresh one, printed.
    ///
    /// Examples:
    ///   lote task add frames frame-7 -- ./render --frame 7
    ///   lote task add frames -- sh -c 'env; id -u'
    ///   lote task add frames --command 'sha256sum input.bin > sum.txt'
    #[command(verbatim_doc_comment)]
    Add {
        job: JobId,
        id: Option<TaskId>,
        /// A shell line, run with /bin/sh -c (instead of words after `--`).
        #[arg(long, value_name = "LINE", conflicts_with = "argv")]
        command: Option<String>,
        /// The program and its arguments, each word as given.
        #[arg(
            last = true,
            value_name = "PROGRAM ARGS",
            required_unless_present = "command"
        )]
        argv: Vec<String>,
        #[command(flatten)]
        options: TaskOptions,
        #[command(flatten)]
        files: TaskFiles,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Add tasks FIRST..=LAST named PREFIXi, with {i} in the command
    /// replaced by the number; sent in durable batches.
    AddRange(AddRange),
    /// The job's tasks in natural id order (task-2 before task-10): id,
    /// state (queued, running, succeeded, failed: why), exit code, node,
    /// attempts.
    List {
        job: JobId,
        /// At most this many (after filtering).
        #[arg(long)]
        limit: Option<u64>,
        /// Only tasks in this state (repeatable).
        #[arg(long, value_enum)]
        state: Vec<StateFilter>,
    },
    /// One task in full, with its last result, as JSON.
    Show { job: JobId, id: TaskId },
    /// Why the task is not running yet: every reason at once, with the
    /// numbers behind each (job disabled, no nodes, nodes full, too few
    /// slots, start task failed, tasks ahead of it in the queue, parents
    /// it waits for, a failed parent that blocks it).
    ///
    /// Example:
    ///   lote task explain frames frame-7
    #[command(verbatim_doc_comment)]
    Explain { job: JobId, id: TaskId },
    /// End a task: killed if running, cancelled if queued.
    Terminate {
        job: JobId,
        id: TaskId,
        #[arg(long, default_value = "terminated by the user")]
        reason: String,
    },
    /// Delete a task (its history stays in the log).
    Delete { job: JobId, id: TaskId },
    /// Add many tasks from a JSON Lines file (`-` for stdin), one task per
    /// line, sent in durable batches. Each batch carries a request id
    /// derived from its content, so running the same command again after
    /// a failure does not add a batch twice.
    ///
    /// A line: {"id": "frame-1", "command": "./render 1"} with optional
    /// "argv": ["./render", "1"] instead of "command", "display_name",
    /// "env": {"NAME": "value"}, "required_slots", "max_wall_clock_secs",
    /// "max_task_retries", "retention_secs", "depends_on": ["a", "b"],
    /// "depends_on_range": ["1-100"], "on_exit": ["3=satisfy"]. Parents
    /// must come before their dependents in the file (or in one batch).
    /// Blank lines and lines starting with // are skipped.
    AddMany {
        job: JobId,
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
        /// Tasks per batch, 1 to 1000.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch: u16,
    },
    /// Print an attempt's stdout (or --stderr), read from its node.
    ///
    /// Examples:
    ///   lote task output frames frame-7
    ///   lote task output frames frame-7 --stderr --attempt 1
    ///   lote task output frames frame-7 --follow      # until it ends
    #[command(verbatim_doc_comment)]
    Output {
        job: JobId,
        id: TaskId,
        #[arg(long)]
        stderr: bool,
        /// Keep printing what the attempt writes until it ends.
        #[arg(long, short)]
        follow: bool,
        /// Which attempt (default: the latest).
        #[arg(long, default_value_t = 0)]
        attempt: u32,
    },
    /// List an attempt's files: its working directory (wd/), stdout.txt
    /// and stderr.txt; also while it runs.
    ///
    /// Examples:
    ///   lote task files frames frame-7
    ///   lote task files frames frame-7 wd/out --recursive
    #[command(verbatim_doc_comment)]
    Files {
        job: JobId,
        id: TaskId,
        /// A directory relative to the attempt's (default: all of it).
        #[arg(default_value = "")]
        path: String,
        #[arg(long, short)]
        recursive: bool,
        #[arg(long, default_value_t = 0)]
        attempt: u32,
    },
    /// Print one of an attempt's files (or save it with --dest).
    ///
    /// Examples:
    ///   lote task file frames frame-7 wd/out/frame-7.png --dest frame-7.png
    ///   lote task file frames frame-7 wd/progress.log --follow
    #[command(verbatim_doc_comment)]
    File {
        job: JobId,
        id: TaskId,
        path: String,
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Keep printing what is appended until the attempt ends.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value_t = 0)]
        attempt: u32,
    },
}

/// Everyday options of a task (the same as in an `add-many` line).
#[derive(Args, Debug, Clone, Default)]
pub struct TaskOptions {
    /// An environment variable of the task: NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Longest one attempt may run, in seconds; it is killed after.
    #[arg(long, value_name = "SECS")]
    max_wall_clock_secs: Option<u64>,
    /// Retries after a failed attempt [default: the job's].
    #[arg(long, value_name = "N")]
    max_task_retries: Option<u32>,
    /// How long its node keeps its files after it completes, in seconds
    /// [default: 7 days].
    #[arg(long, value_name = "SECS")]
    retention_secs: Option<u64>,
    /// Task slots it occupies on its node.
    #[arg(long = "slots", value_name = "N", default_value_t = 1)]
    required_slots: u32,
    #[command(flatten)]
    dependencies: super::deps::TaskDependencyArgs,
}

impl TaskOptions {
    /// Puts the options on `spec`, with `{i}` replaced by `i` in values.
    fn apply(&self, spec: &mut TaskSpec, i: Option<u64>) -> Result<(), ClientError> {
        for pair in &self.env {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(ClientError::Api(ApiError::rejected(
                    RejectionCode::InvalidValue,
                    format!("--env {pair:?}: expected NAME=VALUE"),
                )));
            };
            let value = match i {
                Some(i) => value.replace("{i}", &i.to_string()),
                None => value.to_string(),
            };
            spec.env.push(lote::domain::EnvVar {
                name: name.to_string(),
                value,
            });
        }
        spec.constraints.max_wall_clock_secs = self.max_wall_clock_secs;
        spec.constraints.max_task_retries = self.max_task_retries;
        spec.constraints.retention_secs = self.retention_secs;
        spec.required_slots = self.required_slots;
        if !self.dependencies.is_empty() {
            let (deps, exit) = self.dependencies.parse(i).map_err(|e| {
                ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, e))
            })?;
            spec.depends_on = deps;
            spec.exit_conditions = exit;
        }
        Ok(())
    }
}

/// A task's files and packages, in short forms.
#[derive(Args, Debug, Clone, Default)]
pub struct TaskFiles {
    /// A blob fetched into the working directory before the task runs:
    /// CONTAINER/NAME[=PATH][@MODE] (repeatable; @755 for a program).
    #[arg(long = "input", value_name = "CONTAINER/NAME[=PATH][@MODE]", value_parser = super::files::input_arg)]
    inputs: Vec<String>,
    /// Every blob under a prefix, into a directory: CONTAINER/PREFIX=DIR.
    #[arg(long = "input-prefix", value_name = "CONTAINER/PREFIX=DIR", value_parser = super::files::input_prefix_arg)]
    input_prefixes: Vec<String>,
    /// An http(s) download: PATH=URL.
    #[arg(long = "input-url", value_name = "PATH=URL", value_parser = super::files::input_url_arg)]
    input_urls: Vec<String>,
    /// Files uploaded after the task: PATTERN=CONTAINER[/PREFIX], the
    /// pattern a glob relative to the working directory (`out/*.png`;
    /// `../stdout.txt` for the output beside it). Names are PREFIX + the
    /// path after the pattern's directory.
    #[arg(long = "upload", value_name = "PATTERN=CONTAINER[/PREFIX]", value_parser = super::files::output_arg)]
    outputs: Vec<String>,
    /// When outputs are uploaded.
    #[arg(long, value_enum, default_value = "success")]
    upload_when: UploadWhen,
    /// An application package the task uses: ID[:VERSION] (default version
    /// when none is named).
    #[arg(long = "app", value_name = "ID[:VERSION]", value_parser = super::files::app_arg)]
    apps: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadWhen {
    #[default]
    Success,
    Failure,
    Completion,
}

impl From<UploadWhen> for lote::domain::spec::UploadCondition {
    fn from(w: UploadWhen) -> Self {
        use lote::domain::spec::UploadCondition as U;
        match w {
            UploadWhen::Success => U::Success,
            UploadWhen::Failure => U::Failure,
            UploadWhen::Completion => U::Completion,
        }
    }
}

impl TaskFiles {
    /// Puts the files on `spec`, with `{i}` replaced by `i` when given.
    fn apply(&self, spec: &mut TaskSpec, i: Option<u64>) -> Result<(), ClientError> {
        use super::files as f;
        let sub = |t: &String| match i {
            Some(i) => t.replace("{i}", &i.to_string()),
            None => t.clone(),
        };
        let bad = |m: String| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m));
        for t in &self.inputs {
            spec.resource_files
                .push(f::parse_input(&sub(t)).map_err(bad)?);
        }
        for t in &self.input_prefixes {
            spec.resource_files
                .push(f::parse_input_prefix(&sub(t)).map_err(bad)?);
        }
        for t in &self.input_urls {
            spec.resource_files
                .push(f::parse_input_url(&sub(t)).map_err(bad)?);
        }
        for t in &self.outputs {
            spec.output_files
                .push(f::parse_output(&sub(t), self.upload_when.into()).map_err(bad)?);
        }
        for t in &self.apps {
            spec.application_packages
                .push(f::parse_app(t).map_err(bad)?);
        }
        Ok(())
    }
}

/// One line of a `task add-many` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskLine {
    id: TaskId,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    argv: Option<Vec<String>>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    required_slots: Option<u32>,
    #[serde(default)]
    max_wall_clock_secs: Option<u64>,
    #[serde(default)]
    max_task_retries: Option<u32>,
    #[serde(default)]
    retention_secs: Option<u64>,
    /// Short forms, as the flags of `task add` take them.
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    input_prefixes: Vec<String>,
    #[serde(default)]
    input_urls: Vec<String>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    upload_when: UploadWhen,
    #[serde(default)]
    apps: Vec<String>,
    /// As `--depends-on`, `--depends-on-range` and `--on-exit` take them.
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    depends_on_range: Vec<String>,
    #[serde(default)]
    on_exit: Vec<String>,
}

impl TaskLine {
    fn into_spec(self) -> Result<TaskSpec, String> {
        let command_line = match (self.command, self.argv) {
            (Some(c), None) => CommandLine::Shell(c),
            (None, Some(a)) if !a.is_empty() => CommandLine::Argv(a),
            (None, Some(_)) => return Err("\"argv\" is empty".into()),
            (None, None) => {
                return Err("a task needs \"command\" (a shell line) or \"argv\"".into())
            }
            (Some(_), Some(_)) => return Err("give \"command\" or \"argv\", not both".into()),
        };
        let mut spec = TaskSpec::simple(self.id, command_line);
        spec.display_name = self.display_name;
        spec.env = self
            .env
            .into_iter()
            .map(|(name, value)| lote::domain::EnvVar { name, value })
            .collect();
        spec.required_slots = self.required_slots.unwrap_or(1);
        spec.constraints.max_wall_clock_secs = self.max_wall_clock_secs;
        spec.constraints.max_task_retries = self.max_task_retries;
        spec.constraints.retention_secs = self.retention_secs;
        let files = TaskFiles {
            inputs: self.inputs,
            input_prefixes: self.input_prefixes,
            input_urls: self.input_urls,
            outputs: self.outputs,
            upload_when: self.upload_when,
            apps: self.apps,
        };
        files.apply(&mut spec, None).map_err(|e| e.to_string())?;
        let (deps, exit) = super::deps::parse(
            &self.depends_on,
            &self.depends_on_range,
            &self.on_exit,
            None,
        )?;
        spec.depends_on = deps;
        spec.exit_conditions = exit;
        spec.validate().map_err(|r| r.detail)?;
        Ok(spec)
    }
}

/// Bytes of task specs per batch, well inside the 4 MiB frame limit.
const ADD_MANY_BATCH_BYTES_MAX: usize = 2 << 20;

/// `task add-many`: the whole file is checked before anything is sent, so
/// a bad line adds nothing.
/// Tasks from a JSON Lines file (`-` for stdin), one per line (see
/// `task add-many`), checked whole: a bad line or a repeated id is an
/// error naming its line.
pub(super) fn read_task_lines(path: &std::path::Path) -> Result<Vec<TaskSpec>, ClientError> {
    use std::io::BufRead;
    let usage = |m: String| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m));
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut specs = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| usage(format!("{}: line {}: {e}", path.display(), n + 1)))?;
        let text = line.trim();
        if text.is_empty() || text.starts_with("//") {
            continue;
        }
        let spec = serde_json::from_str::<TaskLine>(text)
            .map_err(|e| e.to_string())
            .and_then(TaskLine::into_spec)
            .map_err(|e| usage(format!("{}: line {}: {e}", path.display(), n + 1)))?;
        if !ids.insert(spec.id.clone()) {
            return Err(usage(format!(
                "{}: line {}: task {} appears twice",
                path.display(),
                n + 1,
                spec.id
            )));
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(usage(format!("{} holds no task", path.display())));
    }
    Ok(specs)
}

async fn add_many(
    client: &Client,
    job: JobId,
    path: &std::path::Path,
    batch: usize,
) -> Result<Response, ClientError> {
    use sha2::Digest;
    let specs = read_task_lines(path)?;
    let batch = batch.clamp(1, lote::api::ADD_TASKS_BATCH_MAX);
    let mut added = 0u32;
    let mut rest = specs.as_slice();
    while !rest.is_empty() {
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len() && take < batch {
            let size = serde_json::to_vec(&rest[take])
                .map(|v| v.len())
                .unwrap_or(0);
            if take > 0 && bytes + size > ADD_MANY_BATCH_BYTES_MAX {
                break;
            }
            bytes += size;
            take += 1;
        }
        let (now, later) = rest.split_at(take);
        // The same batch of the same job always gets the same request id.
        let mut hash = sha2::Sha256::new();
        hash.update(job.as_str().as_bytes());
        hash.update(serde_json::to_vec(now).unwrap_or_default());
        let digest = hash.finalize();
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&digest[..16]);
        let request_id = uuid::Builder::from_random_bytes(raw).into_uuid();
        let request = Request::AddTasks {
            job: job.clone(),
            tasks: now.to_vec(),
            request_id: Some(request_id),
        };
        let mut tries = 0;
        loop {
            match client.call(&request).await {
                Ok(_) => break,
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200 << tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
        added += now.len() as u32;
        rest = later;
    }
    Ok(Response::TasksAdded { job, count: added })
}

/// `task output`: prints the bytes as they are on the node (table output)
/// or one JSON object with them as text.
async fn task_output(
    client: &Client,
    output: Output,
    job: JobId,
    task: TaskId,
    stderr: bool,
    follow: bool,
    attempt: u32,
) -> Result<Rendered, ClientError> {
    use std::io::Write;
    let stream = if stderr {
        lote::api::OutputStream::Stderr
    } else {
        lote::api::OutputStream::Stdout
    };
    let mut offset = 0u64;
    let mut attempt = attempt;
    let mut collected = Vec::new();
    let mut node: Option<NodeId>;
    loop {
        let Response::TaskOutput {
            node: on,
            attempt: a,
            chunk,
            completed,
        } = client
            .call(&Request::ReadTaskOutput {
                job: job.clone(),
                task: task.clone(),
                attempt,
                stream,
                offset,
                max_bytes: lote::api::OUTPUT_CHUNK_MAX,
            })
            .await?
        else {
            return Err(ClientError::Protocol("expected task output".into()));
        };
        // Follow the attempt first read, even if a retry starts meanwhile.
        attempt = a;
        node = Some(on);
        let got = chunk.data.len() as u64;
        offset = chunk.offset + got;
        match output {
            Output::Table => {
                let mut out = std::io::stdout().lock();
                out.write_all(&chunk.data)
                    .and_then(|_| out.flush())
                    .map_err(|e| ClientError::Protocol(format!("cannot write output: {e}")))?;
            }
            Output::Json => collected.extend_from_slice(&chunk.data),
        }
        let at_end = offset >= chunk.size;
        if at_end && (!follow || completed) {
            break;
        }
        if at_end {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    Ok(match output {
        Output::Table => None,
        Output::Json => Some((
            json!({
                "job": job,
                "task": task,
                "attempt": attempt,
                "node": node,
                "stream": if stderr { "stderr" } else { "stdout" },
                "bytes": collected.len(),
                "text": String::from_utf8_lossy(&collected),
            }),
            String::new(),
        )),
    })
}

/// Runs one `lote task` command.
pub(super) async fn run(
    cmd: TaskCmd,
    client: &Client,
    output: Output,
) -> Result<Rendered, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    let response = match cmd {
        TaskCmd::Add {
            job,
            id,
            command,
            argv,
            options,
            files,
            request_id,
        } => {
            let id = match id {
                Some(id) => id,
                None => TaskId::new(format!("task-{}", lote::clock::new_uuid().simple()))
                    .map_err(|e| ClientError::Protocol(e.to_string()))?,
            };
            let command_line = match command {
                Some(line) => CommandLine::Shell(line),
                None => CommandLine::Argv(argv),
            };
            let mut spec = TaskSpec::simple(id.clone(), command_line);
            options.apply(&mut spec, None)?;
            files.apply(&mut spec, None)?;
            call(Request::AddTasks {
                job: job.clone(),
                tasks: vec![spec],
                request_id,
            })
            .await?;
            // The new task, so that a generated id is shown.
            call(Request::ShowTask { job, task: id }).await?
        }
        TaskCmd::AddRange(range) => add_range(client, range).await?,
        TaskCmd::List { job, limit, state } => list(client, job, limit, state).await?,
        TaskCmd::Show { job, id } => call(Request::ShowTask { job, task: id }).await?,
        TaskCmd::Explain { job, id } => call(Request::ExplainTask { job, task: id }).await?,
        TaskCmd::Terminate { job, id, reason } => {
            call(Request::TerminateTask {
                job,
                task: id,
                reason,
            })
            .await?
        }
        TaskCmd::Delete { job, id } => call(Request::DeleteTask { job, task: id }).await?,
        TaskCmd::AddMany {
            job,
            from_file,
            batch,
        } => add_many(client, job, &from_file, batch as usize).await?,
        TaskCmd::Output {
            job,
            id,
            stderr,
            follow,
            attempt,
        } => return task_output(client, output, job, id, stderr, follow, attempt).await,
        TaskCmd::Files {
            job,
            id,
            path,
            recursive,
            attempt,
        } => {
            let target = FileTarget::Task {
                job,
                task: id,
                attempt,
            };
            list_files(client, target, path, recursive).await?
        }
        TaskCmd::File {
            job,
            id,
            path,
            dest,
            follow,
            attempt,
        } => {
            let target = FileTarget::Task {
                job,
                task: id,
                attempt,
            };
            let done = read_file(client, target, path, dest, follow).await?;
            return Ok(Some(done));
        }
    };
    Ok(Some(render(response)))
}

/// What `task add-range` is given.
#[derive(Args, Debug)]
pub struct AddRange {
    job: JobId,
    first: u64,
    last: u64,
    #[arg(long)]
    command: String,
    #[arg(long, default_value = "task-")]
    prefix: String,
    /// Tasks per request (each a durable batch), 1 to 1000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch: u16,
    /// Options as on `task add`; {i} is replaced in --env values.
    #[command(flatten)]
    options: TaskOptions,
    /// Files as on `task add`; {i} is replaced in each.
    #[command(flatten)]
    files: TaskFiles,
}

/// `task add-range`: FIRST..=LAST in durable batches, each with a fresh
/// request id.
async fn add_range(client: &Client, range: AddRange) -> Result<Response, ClientError> {
    let AddRange {
        job,
        first,
        last,
        command,
        prefix,
        batch,
        options,
        files,
    } = range;
    let call = |r: Request| async move { client.call(&r).await };
    if first > last {
        return Err(ClientError::Api(ApiError::rejected(
            RejectionCode::InvalidValue,
            format!("the range {first}..={last} is empty: FIRST must not be above LAST"),
        )));
    }
    let batch = batch as usize;
    let mut added = 0u64;
    let mut specs = Vec::with_capacity(batch);
    for i in first..=last {
        let id = TaskId::new(format!("{prefix}{i}"))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let line = command.replace("{i}", &i.to_string());
        let mut spec = TaskSpec::simple(id, CommandLine::Shell(line));
        options.apply(&mut spec, Some(i))?;
        files.apply(&mut spec, Some(i))?;
        specs.push(spec);
        if specs.len() == batch || i == last {
            // A fresh id per batch: a resend of a batch after a
            // lost reply would not add it twice.
            call(Request::AddTasks {
                job: job.clone(),
                tasks: std::mem::take(&mut specs),
                request_id: Some(lote::clock::new_uuid()),
            })
            .await?;
            added = i - first + 1;
        }
    }
    Ok(Response::TasksAdded {
        job,
        count: added as u32,
    })
}

/// `task list`: every page (or up to `limit` shown), filtered by state, in
/// natural id order.
async fn list(
    client: &Client,
    job: JobId,
    limit: Option<u64>,
    state: Vec<StateFilter>,
) -> Result<Response, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    // Page through everything (or up to --limit of those shown).
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let want = limit.map(|l| l.saturating_sub(items.len() as u64));
        if want == Some(0) {
            break;
        }
        let page = if state.is_empty() {
            want.unwrap_or(1000).min(1000) as u32
        } else {
            1000
        };
        let Response::Tasks { items: got, next } = call(Request::ListTasks {
            job: job.clone(),
            after: after.take(),
            limit: page,
        })
        .await?
        else {
            return Err(ClientError::Protocol("expected a page of tasks".into()));
        };
        items.extend(
            got.into_iter()
                .filter(|t| state.is_empty() || state.iter().any(|f| f.holds(&t.state))),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if let Some(limit) = limit {
        items.truncate(limit as usize);
    }
    items.sort_by(|a, b| {
        let id = |t: &lote::domain::Versioned<lote::domain::task::Task>| {
            t.state
                .spec
                .as_ref()
                .map(|s| s.id.to_string())
                .unwrap_or_default()
        };
        natural_order(&id(a), &id(b))
    });
    Ok(Response::Tasks { items, next: None })
}

/// A state `task list --state` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Succeeded or failed.
    Completed,
}

impl StateFilter {
    fn holds(self, task: &lote::domain::task::Task) -> bool {
        use lote::domain::task::TaskStatus as S;
        let failed = task
            .last_result
            .as_ref()
            .is_some_and(|r| r.failure.is_some());
        match self {
            StateFilter::Queued => task.status == S::Active,
            StateFilter::Running => matches!(task.status, S::Assigned | S::Running),
            StateFilter::Succeeded => task.status == S::Completed && !failed,
            StateFilter::Failed => task.status == S::Completed && failed,
            StateFilter::Completed => task.status == S::Completed,
        }
    }
}

/// Ids as people order them: runs of digits by value (task-2 before
/// task-10), the rest as text.
pub(super) fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, ta), (db, tb)) in ca.iter().zip(cb.iter()) {
        let order = if *da && *db {
            let (na, nb) = (ta.trim_start_matches('0'), tb.trim_start_matches('0'));
            na.len()
                .cmp(&nb.len())
                .then(na.cmp(nb))
                .then(ta.len().cmp(&tb.len()))
        } else {
            ta.cmp(tb)
        };
        if order != std::cmp::Ordering::Equal {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::natural_order;

    #[test]
    fn ids_sort_as_people_read_them() {
        let mut ids = vec![
            "task-100", "task-10", "task-2", "task-1", "b", "a-9", "a-10", "",
        ];
        ids.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            ids,
            ["", "a-9", "a-10", "b", "task-1", "task-2", "task-10", "task-100"]
        );
    }
}
