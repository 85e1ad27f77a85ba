//! The client half of the `lote` command: talks to a server over the API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use lote::api::{ApiError, Credential, ErrorKind, EventView, Request, Response};
use lote::client::{Client, ClientConfig, ClientError};
use lote::domain::account::KeyKind;
use lote::domain::job::{DisableTasks, JobSpec, OnAllTasksComplete, OnTaskFailure};
use lote::domain::pool::{
    Deallocation, NodeProvider, NodeSize, PoolSpec, ScaleSettings, SchedulingPolicy,
};
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::domain::RejectionCode;
use lote::types::{AccountName, JobId, NodeId, PoolId, TaskId, Timestamp};

/// Where and as whom to connect. Each flag also reads an environment
/// variable, then the profile, then the default.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Server address. [default: 127.0.0.1:7070]
    #[arg(long, global = true, env = "LOTE_SERVER")]
    pub server: Option<String>,
    /// Account to act as.
    #[arg(long, global = true, env = "LOTE_ACCOUNT")]
    pub account: Option<String>,
    /// That account's key (primary or secondary).
    #[arg(long, global = true, env = "LOTE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The administrator key (needed by `account` commands).
    #[arg(long, global = true, env = "LOTE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// File holding the administrator key, e.g. DATA_DIR/admin.key.
    #[arg(long, global = true, env = "LOTE_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Sign with the administrator key even where an account key would do
    /// (e.g. `events tail` of every account).
    #[arg(long, global = true)]
    pub admin: bool,
    /// Profile to read defaults from, in $XDG_CONFIG_HOME/lote/profiles.toml
    /// (~/.config/lote/profiles.toml). [default: "default" if present]
    #[arg(long, global = true, env = "LOTE_PROFILE")]
    pub profile: Option<String>,
    /// table for people, json for scripts (exactly one JSON value on stdout,
    /// errors included).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "LOTE_OUTPUT"
    )]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A profile: any of the connection settings.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Profile {
    server: Option<String>,
    account: Option<String>,
    key: Option<String>,
    admin_key: Option<String>,
    admin_key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Accounts and their keys (administrator).
    ///
    /// Examples:
    ///   lote account create acme --admin-key-file lote-data/admin.key
    ///   lote account keys show acme
    ///   lote account keys regenerate acme secondary
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Account(AccountCmd),
    /// Pools of compute nodes.
    ///
    /// Examples:
    ///   lote pool create render --nodes 2 --slots 4
    ///   lote pool resize render 5
    ///   lote pool join-token render
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Pool(PoolCmd),
    /// A pool's nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Jobs: groups of tasks that run on one pool.
    ///
    /// Examples:
    ///   lote job create frames --pool render
    ///   lote job show frames
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Job(JobCmd),
    /// Tasks of a job.
    ///
    /// Examples:
    ///   lote task add frames frame-1 -- ./render --frame 1
    ///   lote task add-range frames 1 500 --command './render --frame {i}'
    ///   lote task list frames
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Task(TaskCmd),
    /// The event log, live.
    ///
    /// Example: lote events tail --from 1
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Events(EventsCmd),
    /// The blob store: containers of named files (inputs, programs,
    /// outputs), streamed in chunks with a SHA-256 checked end to end.
    ///
    /// Examples:
    ///   lote blob upload inputs ./frames --prefix scene-1/
    ///   lote blob list inputs --prefix scene-1/
    ///   lote blob download outputs --prefix scene-1/ --dest ./results
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Blob(crate::cli_files::BlobCmd),
    /// Application packages: versioned zips of a program, unpacked once on
    /// each node that uses them (LOTE_APP_<ID> names the directory).
    ///
    /// Examples:
    ///   lote app upload blender 4.2 ./blender-4.2.zip --default
    ///   lote task add frames --app blender -- '$LOTE_APP_BLENDER/blender -f 1'
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    App(crate::cli_files::AppCmd),
    /// Who the server takes you for (checks address and credentials).
    Whoami,
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create an account; prints its two keys.
    Create {
        name: AccountName,
        /// Client request id (a UUID): sending the same command again with
        /// it does not create twice.
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    List,
    Show {
        name: AccountName,
    },
    /// Refuse the account's changes until enabled again (it may still read).
    Disable {
        name: AccountName,
    },
    Enable {
        name: AccountName,
    },
    /// Delete the account; its keys stop working at once.
    Delete {
        name: AccountName,
    },
    #[command(subcommand)]
    Keys(KeysCmd),
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    Show {
        name: AccountName,
    },
    /// Replace one key; the other keeps working, so clients can move over
    /// without downtime.
    Regenerate {
        name: AccountName,
        /// primary or secondary.
        #[arg(value_enum, value_name = "WHICH")]
        which: KeyKind,
    },
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Create a pool with a fixed node count (or --autoscale FORMULA).
    Create {
        id: PoolId,
        /// Target node count.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Most nodes the pool may ever have.
        #[arg(long, default_value_t = 100)]
        max_nodes: u32,
        /// Cores per node.
        #[arg(long, default_value_t = 1)]
        cores: u32,
        /// Memory per node, MiB.
        #[arg(long, default_value_t = 1024)]
        memory_mib: u64,
        /// Tasks that may run at once on one node.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// OS or platform label.
        #[arg(long, default_value = "linux-x86_64")]
        os: String,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Autoscale formula instead of a fixed count.
        #[arg(long)]
        autoscale: Option<String>,
        /// Seconds between autoscale evaluations (Azure's default: 15
        /// minutes; the server's floor is 5 minutes unless lowered).
        #[arg(long, default_value_t = 900)]
        autoscale_interval: u64,
        #[arg(long, value_enum, default_value = "pack")]
        scheduling: SchedulingPolicy,
        /// local: nodes started by the server; remote: agents join by token.
        #[arg(long, value_enum, default_value = "local")]
        provider: NodeProvider,
        #[arg(long)]
        inter_node_communication: bool,
        /// An application package unpacked on every node as it joins:
        /// ID[:VERSION] (repeatable).
        #[arg(long = "app", value_name = "ID[:VERSION]")]
        apps: Vec<String>,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    List,
    Show {
        id: PoolId,
    },
    /// Set a new target node count.
    Resize {
        id: PoolId,
        nodes: u32,
        /// What removed nodes do with running tasks.
        #[arg(long, value_enum, default_value = "requeue")]
        deallocation: Deallocation,
    },
    StopResize {
        id: PoolId,
    },
    Delete {
        id: PoolId,
    },
    /// The token a remote agent needs to join this pool.
    JoinToken {
        id: PoolId,
    },
    /// Size the pool by formula (Azure Batch's language): enable, disable,
    /// evaluate without applying, see past runs, replay over history.
    #[command(subcommand)]
    Autoscale(AutoscaleCmd),
}

/// A formula given inline or from a file.
#[derive(clap::Args, Debug, Clone)]
#[group(required = false, multiple = false)]
pub struct FormulaArg {
    /// The formula text, e.g. '$TargetDedicatedNodes = min(10, $PendingTasks);'.
    #[arg(long)]
    formula: Option<String>,
    /// Read the formula from this file ('-' for standard input).
    #[arg(long, value_name = "PATH")]
    formula_file: Option<std::path::PathBuf>,
}

impl FormulaArg {
    fn read(&self) -> Result<Option<String>, ClientError> {
        let usage =
            |m: String| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m));
        match (&self.formula, &self.formula_file) {
            (Some(f), _) => Ok(Some(f.clone())),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                    usage(format!("cannot read the formula from standard input: {e}"))
                })?;
                Ok(Some(text))
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| usage(format!("cannot read formula file {}: {e}", path.display()))),
            (None, None) => Ok(None),
        }
    }
    fn required(&self) -> Result<String, ClientError> {
        self.read()?.ok_or_else(|| {
            ClientError::Api(ApiError::rejected(
                RejectionCode::InvalidValue,
                "give the formula with --formula TEXT or --formula-file PATH",
            ))
        })
    }
}

/// A time: RFC 3339 (`2026-12-01T10:00:00Z`), `now`, or a span back from
/// now (`-90m`, `-2h`, `-1d`).
fn parse_when(text: &str) -> Result<Timestamp, String> {
    use lote::clock::Clock;
    let now = lote::clock::SystemClock.now();
    if text == "now" {
        return Ok(now);
    }
    if let Some(span) = text.strip_prefix('-') {
        let (n, unit) = span.split_at(span.len().saturating_sub(1));
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{text:?}: a span is like -90m, -2h or -1d"))?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
        };
        return Ok(Timestamp::from_micros(
            now.as_micros() - (secs as i64).saturating_mul(1_000_000),
        ));
    }
    Timestamp::parse(text)
        .map_err(|e| format!("{text:?}: not a time ({e}); use RFC 3339, now, or -2h"))
}

#[derive(Subcommand, Debug)]
pub enum AutoscaleCmd {
    /// Turn autoscale on (or change the formula or interval). The formula
    /// is checked first and runs at once, then every interval.
    ///
    /// Examples:
    ///   lote pool autoscale enable render --formula '$TargetDedicatedNodes = min(8, $PendingTasks);'
    ///   lote pool autoscale enable render --formula-file scale.formula --interval-secs 600
    #[command(verbatim_doc_comment)]
    Enable {
        pool: PoolId,
        #[command(flatten)]
        formula: FormulaArg,
        /// Seconds between evaluations (Azure's default: 15 minutes).
        #[arg(long, default_value_t = 900)]
        interval_secs: u64,
    },
    /// Turn autoscale off; the pool keeps its current target.
    Disable { pool: PoolId },
    /// Run a formula against the pool's data now and show the results and
    /// a trace (every variable read, every sample asked for) without
    /// changing the pool. Exit 1 when the formula fails.
    ///
    /// Examples:
    ///   lote pool autoscale evaluate render --formula '$TargetDedicatedNodes = $PendingTasks / $TaskSlotsPerNode;'
    ///   lote pool autoscale evaluate render       # the pool's own formula
    #[command(verbatim_doc_comment)]
    Evaluate {
        pool: PoolId,
        #[command(flatten)]
        formula: FormulaArg,
    },
    /// The pool's past autoscale runs: when, what was read, what was set,
    /// and any error.
    History {
        pool: PoolId,
        /// Show the newest N runs.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Evaluate a formula at each step over the pool's recorded history and
    /// show what it would have set beside what really happened: test a
    /// formula before trusting it with a pool.
    ///
    /// Examples:
    ///   lote pool autoscale replay render --formula-file scale.formula --from -6h
    ///   lote pool autoscale replay render --formula '...' --from 2026-12-01T08:00:00Z --to 2026-12-01T18:00:00Z --every 60
    #[command(verbatim_doc_comment)]
    Replay {
        pool: PoolId,
        #[command(flatten)]
        formula: FormulaArg,
        /// Start: RFC 3339, or a span back from now such as -2h.
        #[arg(long, value_parser = parse_when, allow_hyphen_values = true)]
        from: Timestamp,
        /// End (default: now).
        #[arg(long, value_parser = parse_when, default_value = "now", allow_hyphen_values = true)]
        to: Timestamp,
        /// Seconds between steps.
        #[arg(long, default_value_t = 300)]
        every: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    List {
        pool: PoolId,
    },
    Show {
        pool: PoolId,
        node: NodeId,
    },
    /// Place no new tasks on the node; running ones finish.
    Disable {
        pool: PoolId,
        node: NodeId,
    },
    /// Place tasks on the node again.
    Enable {
        pool: PoolId,
        node: NodeId,
    },
    /// Restart the node's agent: its tasks are requeued (no retry used),
    /// the pool's start task runs again, then the node takes work.
    Reboot {
        pool: PoolId,
        node: NodeId,
    },
    /// Take the node out of its pool; it loses its files, name and
    /// address. A local node's agent is stopped.
    ///
    /// Examples:
    ///   lote node remove render node-3                      # requeue its tasks
    ///   lote node remove render node-3 --deallocation taskcompletion
    #[command(verbatim_doc_comment)]
    Remove {
        pool: PoolId,
        node: NodeId,
        /// requeue: kill its tasks and queue them again (no retry used);
        /// terminate: kill and fail them; taskcompletion: give it no new
        /// work and remove it when its tasks end.
        #[arg(long, value_enum, default_value = "requeue")]
        deallocation: Deallocation,
    },
    /// List a node's files: shared/, starttask/, tasks/, apps/.
    ///
    /// Example: lote node files render node-1 starttask --recursive
    #[command(verbatim_doc_comment)]
    Files {
        pool: PoolId,
        node: NodeId,
        #[arg(default_value = "")]
        path: String,
        #[arg(long, short)]
        recursive: bool,
    },
    /// Print one of a node's files (or save it with --dest).
    ///
    /// Example: lote node file render node-1 starttask/stdout.txt
    #[command(verbatim_doc_comment)]
    File {
        pool: PoolId,
        node: NodeId,
        path: String,
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    Create {
        id: JobId,
        #[arg(long)]
        pool: PoolId,
        #[arg(long, default_value = "")]
        display_name: String,
        /// -1000 (lowest) to 1000 (highest).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Retries of a failed task before it fails for good.
        #[arg(long, default_value_t = 0)]
        max_task_retries: u32,
        /// Longest the job may run, seconds.
        #[arg(long)]
        max_wall_clock_secs: Option<u64>,
        #[arg(long, value_enum, default_value = "no-action")]
        on_all_tasks_complete: OnAllTasksComplete,
        #[arg(long, value_enum, default_value = "no-action")]
        on_task_failure: OnTaskFailure,
        /// A blob every task of the job gets: CONTAINER/NAME[=PATH][@MODE].
        #[arg(long = "input", value_name = "CONTAINER/NAME[=PATH][@MODE]")]
        inputs: Vec<String>,
        /// Every blob under a prefix, for every task: CONTAINER/PREFIX=DIR.
        #[arg(long = "input-prefix", value_name = "CONTAINER/PREFIX=DIR")]
        input_prefixes: Vec<String>,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    List,
    Show {
        id: JobId,
    },
    Disable {
        id: JobId,
        #[arg(long, value_enum, default_value = "requeue")]
        disable_tasks: DisableTasks,
    },
    Enable {
        id: JobId,
    },
    Terminate {
        id: JobId,
        #[arg(long, default_value = "terminated by the user")]
        reason: String,
    },
    Delete {
        id: JobId,
    },
    /// Wait until no task of the job is queued or running; with --progress
    /// a live bar on stderr. Exits 1 if any task failed.
    Wait {
        id: JobId,
        #[arg(long)]
        progress: bool,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Add one task; everything after `--` is its command, run through
    /// /bin/sh -c. Without ID the task gets a fresh one, printed.
    ///
    /// Examples:
    ///   lote task add frames frame-7 -- ./render --frame 7
    ///   lote task add frames -- sha256sum input.bin
    #[command(verbatim_doc_comment)]
    Add {
        job: JobId,
        id: Option<TaskId>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        files: TaskFiles,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Add tasks FIRST..=LAST named PREFIXi, with {i} in the command
    /// replaced by the number; sent in durable batches.
    AddRange {
        job: JobId,
        first: u64,
        last: u64,
        #[arg(long)]
        command: String,
        #[arg(long, default_value = "task-")]
        prefix: String,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Files as on `task add`; {i} is replaced in each.
        #[command(flatten)]
        files: TaskFiles,
    },
    /// The job's tasks, in id order (all of them unless --limit).
    List {
        job: JobId,
        #[arg(long)]
        limit: Option<u64>,
    },
    Show {
        job: JobId,
        id: TaskId,
    },
    /// Why the task is not running yet: every reason at once, with the
    /// numbers behind each (job disabled, no nodes, nodes full, too few
    /// slots, start task failed, tasks ahead of it in the queue).
    ///
    /// Example:
    ///   lote task explain frames frame-7
    #[command(verbatim_doc_comment)]
    Explain {
        job: JobId,
        id: TaskId,
    },
    Terminate {
        job: JobId,
        id: TaskId,
        #[arg(long, default_value = "terminated by the user")]
        reason: String,
    },
    Delete {
        job: JobId,
        id: TaskId,
    },
    /// Add many tasks from a JSON Lines file (`-` for stdin), one task per
    /// line, sent in durable batches. Each batch carries a request id
    /// derived from its content, so running the same command again after
    /// a failure does not add a batch twice.
    ///
    /// A line: {"id": "frame-1", "command": "./render 1"} with optional
    /// "argv": ["./render", "1"] instead of "command", "display_name",
    /// "env": {"NAME": "value"}, "required_slots", "max_wall_clock_secs",
    /// "max_task_retries", "retention_secs". Blank lines and lines starting
    /// with // are skipped.
    AddMany {
        job: JobId,
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
        /// Tasks per batch (at most 1000).
        #[arg(long, default_value_t = 500)]
        batch: usize,
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

/// A task's files and packages, in short forms.
#[derive(Args, Debug, Clone, Default)]
pub struct TaskFiles {
    /// A blob fetched into the working directory before the task runs:
    /// CONTAINER/NAME[=PATH][@MODE] (repeatable; @755 for a program).
    #[arg(long = "input", value_name = "CONTAINER/NAME[=PATH][@MODE]")]
    inputs: Vec<String>,
    /// Every blob under a prefix, into a directory: CONTAINER/PREFIX=DIR.
    #[arg(long = "input-prefix", value_name = "CONTAINER/PREFIX=DIR")]
    input_prefixes: Vec<String>,
    /// An http(s) download: PATH=URL.
    #[arg(long = "input-url", value_name = "PATH=URL")]
    input_urls: Vec<String>,
    /// Files uploaded after the task: PATTERN=CONTAINER[/PREFIX], the
    /// pattern a glob relative to the working directory (`out/*.png`;
    /// `../stdout.txt` for the output beside it). Names are PREFIX + the
    /// path after the pattern's directory.
    #[arg(long = "upload", value_name = "PATTERN=CONTAINER[/PREFIX]")]
    outputs: Vec<String>,
    /// When outputs are uploaded.
    #[arg(long, value_enum, default_value = "success")]
    upload_when: UploadWhen,
    /// An application package the task uses: ID[:VERSION] (default version
    /// when none is named).
    #[arg(long = "app", value_name = "ID[:VERSION]")]
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
        use crate::cli_files as f;
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

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Print events as they are recorded (Ctrl-C to stop). Accounts see
    /// their own; with --admin, every account's.
    Tail {
        /// Start at this log position (1: from the beginning); default:
        /// only new events.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// A failure with the next thing to try.
struct Failure {
    error: String,
    kind: Option<ErrorKind>,
    code: Option<RejectionCode>,
    hint: Option<String>,
    /// 2 for usage errors (missing credentials, bad profile), else 1.
    exit: u8,
}

fn usage(error: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure {
        error: error.into(),
        kind: None,
        code: None,
        hint: Some(hint.into()),
        exit: 2,
    }
}

fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("lote"))
}

fn load_profile(name: Option<&str>) -> Result<Profile, Failure> {
    let Some(path) = config_dir().map(|d| d.join("profiles.toml")) else {
        return Ok(Profile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match name {
                Some(n) => Err(usage(
                    format!(
                        "profile {n:?} asked for, but {} does not exist",
                        path.display()
                    ),
                    "create it with a [NAME] table of server, account, key, admin_key_file",
                )),
                None => Ok(Profile::default()),
            }
        }
        Err(e) => {
            return Err(usage(
                format!("cannot read {}: {e}", path.display()),
                "check its permissions",
            ))
        }
    };
    let mut all: std::collections::BTreeMap<String, Profile> =
        toml::from_str(&text).map_err(|e| {
            usage(
                format!("{}: {e}", path.display()),
                "fix the file: one [NAME] table per profile",
            )
        })?;
    match name {
        Some(n) => all.remove(n).ok_or_else(|| {
            usage(
                format!("no profile {n:?} in {}", path.display()),
                format!(
                    "profiles there: {}",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        }),
        None => Ok(all.remove("default").unwrap_or_default()),
    }
}

fn needs_admin(command: &ClientCommand, conn: &Connection) -> bool {
    matches!(command, ClientCommand::Account(_)) || conn.admin
}

fn credentials(command: &ClientCommand, conn: &Connection) -> Result<ClientConfig, Failure> {
    let profile = load_profile(conn.profile.as_deref())?;
    let server = conn
        .server
        .clone()
        .or(profile.server)
        .unwrap_or_else(|| "127.0.0.1:7070".to_string());
    let admin_key = || -> Result<Option<String>, Failure> {
        if let Some(k) = conn.admin_key.clone().or(profile.admin_key.clone()) {
            return Ok(Some(k));
        }
        match conn
            .admin_key_file
            .clone()
            .or(profile.admin_key_file.clone())
        {
            Some(path) => std::fs::read_to_string(&path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| {
                    usage(
                        format!("cannot read the admin key file {}: {e}", path.display()),
                        "the server writes it to DATA_DIR/admin.key at first start",
                    )
                }),
            None => Ok(None),
        }
    };
    let account_key = || match (
        conn.account.clone().or(profile.account.clone()),
        conn.key.clone().or(profile.key.clone()),
    ) {
        (Some(a), Some(k)) => AccountName::new(a)
            .map(|account| Some((account, k)))
            .map_err(|e| {
                usage(
                    e.to_string(),
                    "account names are letters, digits, '-' and '_'",
                )
            }),
        _ => Ok(None),
    };
    let (credential, key) = if needs_admin(command, conn) {
        match admin_key()? {
            Some(k) => (Credential::Admin, k),
            None => {
                return Err(usage(
                    "this command needs the administrator key",
                    "pass --admin-key-file DATA_DIR/admin.key (the server prints where it is at start) or set LOTE_ADMIN_KEY",
                ))
            }
        }
    } else if let Some((account, k)) = account_key()? {
        (Credential::Account { account }, k)
    } else if let (ClientCommand::Whoami, Some(k)) = (command, admin_key()?) {
        (Credential::Admin, k)
    } else {
        return Err(usage(
            "no account credentials",
            "pass --account NAME --key KEY (or LOTE_ACCOUNT / LOTE_KEY, or a profile); an administrator gets the keys with: lote account keys show NAME",
        ));
    };
    Ok(ClientConfig::new(server, credential, key))
}

fn hint_for(e: &ClientError, addr: &str) -> Option<String> {
    match e {
        ClientError::Connect { .. } => Some(format!(
            "is a server listening on {addr}? Start one with: lote server --listen {addr} (or pass --server)"
        )),
        ClientError::Disconnected(_) => Some(
            "run the command again; creates with --request-id are never done twice".into(),
        ),
        ClientError::Timeout(_) => Some("the server is busy or stuck; check its log".into()),
        ClientError::Protocol(_) => Some("client and server versions may differ: lote --version".into()),
        ClientError::Api(a) | ClientError::Refused(a) => api_hint(a),
    }
}

fn api_hint(e: &ApiError) -> Option<String> {
    use RejectionCode as R;
    let text = match (e.kind, e.rejection) {
        (ErrorKind::BadSignature, _) => "check --account and --key (LOTE_ACCOUNT / LOTE_KEY); an administrator shows current keys with: lote account keys show NAME",
        (ErrorKind::ClockSkew, _) => "set this machine's clock right (NTP), then retry",
        (ErrorKind::UnsupportedVersion, _) => "use a lote client of the server's version: lote --version",
        (ErrorKind::Overloaded | ErrorKind::ShuttingDown | ErrorKind::Timeout, _) => "retry in a moment",
        (_, Some(R::AccountNotFound)) => "list accounts with: lote account list",
        (_, Some(R::AccountExists)) => "see it with: lote account show NAME",
        (_, Some(R::AccountDisabled)) => "an administrator can enable it: lote account enable NAME",
        (_, Some(R::PoolNotFound)) => "list pools with: lote pool list",
        (_, Some(R::PoolExists)) => "see it with: lote pool show ID",
        (_, Some(R::NodeNotFound)) => "list nodes with: lote node list POOL",
        (_, Some(R::JobNotFound)) => "list jobs with: lote job list",
        (_, Some(R::JobExists)) => "see it with: lote job show ID",
        (_, Some(R::TaskNotFound)) => "list tasks with: lote task list JOB",
        (_, Some(R::TaskExists)) => "list the job's tasks with: lote task list JOB",
        (_, Some(R::TooBusy)) => "run the same command again",
        (_, Some(R::RequestIdReused)) => "use a new --request-id for a different request",
        (_, Some(R::PermissionDenied)) => "account commands need --admin-key-file; pool, job and task commands need --account and --key",
        _ => return None,
    };
    Some(text.to_string())
}

fn from_client_error(e: ClientError, addr: &str) -> Failure {
    let hint = hint_for(&e, addr);
    let (kind, code) = match e.api() {
        Some(a) => (Some(a.kind), a.rejection),
        None => (None, None),
    };
    Failure {
        error: e.to_string(),
        kind,
        code,
        hint,
        exit: 1,
    }
}

/// Runs a client command; prints its result; returns the exit code.
pub fn run(command: ClientCommand, conn: Connection) -> ExitCode {
    let output = conn.output;
    // `job wait` succeeds as a call but exits 1 when a task failed.
    let waiting = matches!(command, ClientCommand::Job(JobCmd::Wait { .. }));
    let result = credentials(&command, &conn).and_then(|config| {
        let addr = config.addr.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                usage(
                    format!("cannot start the runtime: {e}"),
                    "out of resources?",
                )
            })?;
        runtime
            .block_on(execute(command, Client::new(config), output))
            .map_err(|e| from_client_error(e, &addr))
    });
    match result {
        Ok(Some((json_value, table))) => {
            match output {
                Output::Json => println!("{json_value}"),
                Output::Table => print!("{table}"),
            }
            if let Some(error) = json_value["run"]["error"]["message"].as_str() {
                if output == Output::Table {
                    eprintln!("lote: the formula failed: {error}");
                }
                return ExitCode::FAILURE;
            }
            let failed = json_value["task_counts"]["failed"].as_u64().unwrap_or(0);
            if waiting && failed > 0 {
                if output == Output::Table {
                    eprintln!("lote: {failed} task(s) failed; see them with: lote task list JOB");
                }
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            match output {
                Output::Json => println!(
                    "{}",
                    json!({ "error": {
                        "message": f.error,
                        "kind": f.kind,
                        "code": f.code.map(|c| c.code()),
                        "name": f.code.map(|c| c.name()),
                        "hint": f.hint,
                    }})
                ),
                Output::Table => {
                    eprintln!("lote: error: {}", f.error);
                    if let Some(h) = f.hint {
                        eprintln!("hint: {h}");
                    }
                }
            }
            ExitCode::from(f.exit)
        }
    }
}

type Rendered = Option<(Value, String)>;

/// Specs carry an account, but the server always replaces it with the
/// caller's: a client cannot create in another account.
fn placeholder_account() -> AccountName {
    AccountName::new("self").expect("a valid name")
}

async fn execute(
    command: ClientCommand,
    client: Client,
    output: Output,
) -> Result<Rendered, ClientError> {
    let call = |r: Request| {
        let client = &client;
        async move { client.call(&r).await }
    };
    let response = match command {
        ClientCommand::Whoami => call(Request::Whoami).await?,
        ClientCommand::Account(cmd) => match cmd {
            AccountCmd::Create { name, request_id } => {
                call(Request::CreateAccount {
                    name: name.clone(),
                    request_id,
                })
                .await?;
                call(Request::ShowKeys { name }).await?
            }
            AccountCmd::List => call(Request::ListAccounts).await?,
            AccountCmd::Show { name } => call(Request::ShowAccount { name }).await?,
            AccountCmd::Disable { name } => call(Request::DisableAccount { name }).await?,
            AccountCmd::Enable { name } => call(Request::EnableAccount { name }).await?,
            AccountCmd::Delete { name } => call(Request::DeleteAccount { name }).await?,
            AccountCmd::Keys(KeysCmd::Show { name }) => call(Request::ShowKeys { name }).await?,
            AccountCmd::Keys(KeysCmd::Regenerate { name, which }) => {
                call(Request::RegenerateKey {
                    name: name.clone(),
                    key: which,
                })
                .await?;
                call(Request::ShowKeys { name }).await?
            }
        },
        ClientCommand::Pool(cmd) => match cmd {
            PoolCmd::Create {
                id,
                nodes,
                max_nodes,
                cores,
                memory_mib,
                slots,
                os,
                display_name,
                autoscale,
                autoscale_interval,
                scheduling,
                provider,
                inter_node_communication,
                apps,
                request_id,
            } => {
                let application_packages = apps
                    .iter()
                    .map(|a| crate::cli_files::parse_app(a))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| {
                        ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m))
                    })?;
                let scale = match autoscale {
                    Some(formula) => ScaleSettings::Autoscale {
                        formula,
                        evaluation_interval_secs: autoscale_interval,
                    },
                    None => ScaleSettings::Fixed {
                        target_nodes: nodes,
                    },
                };
                let spec = PoolSpec {
                    display_name,
                    node_size: NodeSize {
                        cores,
                        memory_mib,
                        task_slots: slots,
                    },
                    os,
                    scale,
                    node_count_max: max_nodes,
                    inter_node_communication,
                    scheduling,
                    provider,
                    application_packages,
                    // The server puts the caller's account in.
                    ..PoolSpec::fixed(id, placeholder_account(), nodes, slots)
                };
                call(Request::CreatePool { spec, request_id }).await?
            }
            PoolCmd::List => call(Request::ListPools).await?,
            PoolCmd::Show { id } => call(Request::ShowPool { pool: id }).await?,
            PoolCmd::Resize {
                id,
                nodes,
                deallocation,
            } => {
                call(Request::ResizePool {
                    pool: id,
                    target_nodes: nodes,
                    deallocation,
                })
                .await?
            }
            PoolCmd::StopResize { id } => call(Request::StopResize { pool: id }).await?,
            PoolCmd::Delete { id } => call(Request::DeletePool { pool: id }).await?,
            PoolCmd::JoinToken { id } => call(Request::ShowJoinToken { pool: id }).await?,
            PoolCmd::Autoscale(cmd) => match cmd {
                AutoscaleCmd::Enable {
                    pool,
                    formula,
                    interval_secs,
                } => {
                    call(Request::EnableAutoscale {
                        pool,
                        formula: formula.required()?,
                        evaluation_interval_secs: interval_secs,
                    })
                    .await?
                }
                AutoscaleCmd::Disable { pool } => call(Request::DisableAutoscale { pool }).await?,
                AutoscaleCmd::Evaluate { pool, formula } => {
                    call(Request::EvaluateAutoscale {
                        pool,
                        formula: formula.read()?,
                    })
                    .await?
                }
                AutoscaleCmd::History { pool, limit } => {
                    call(Request::AutoscaleHistory { pool, limit }).await?
                }
                AutoscaleCmd::Replay {
                    pool,
                    formula,
                    from,
                    to,
                    every,
                } => {
                    call(Request::ReplayAutoscale {
                        pool,
                        formula: formula.required()?,
                        from,
                        to,
                        every_secs: every,
                    })
                    .await?
                }
            },
        },
        ClientCommand::Node(cmd) => match cmd {
            NodeCmd::List { pool } => call(Request::ListNodes { pool }).await?,
            NodeCmd::Show { pool, node } => call(Request::ShowNode { pool, node }).await?,
            NodeCmd::Disable { pool, node } => call(Request::DisableNode { pool, node }).await?,
            NodeCmd::Enable { pool, node } => call(Request::EnableNode { pool, node }).await?,
            NodeCmd::Reboot { pool, node } => call(Request::RebootNode { pool, node }).await?,
            NodeCmd::Remove {
                pool,
                node,
                deallocation,
            } => {
                call(Request::RemoveNode {
                    pool,
                    node,
                    deallocation,
                })
                .await?
            }
            NodeCmd::Files {
                pool,
                node,
                path,
                recursive,
            } => {
                let target = crate::cli_files::FileTarget::Node { pool, node };
                crate::cli_files::list_files(&client, target, path, recursive).await?
            }
            NodeCmd::File {
                pool,
                node,
                path,
                dest,
            } => {
                let target = crate::cli_files::FileTarget::Node { pool, node };
                let done = crate::cli_files::read_file(&client, target, path, dest, false).await?;
                return Ok(Some(done));
            }
        },
        ClientCommand::Job(cmd) => match cmd {
            JobCmd::Create {
                id,
                pool,
                display_name,
                priority,
                max_task_retries,
                max_wall_clock_secs,
                on_all_tasks_complete,
                on_task_failure,
                inputs,
                input_prefixes,
                request_id,
            } => {
                let bad = |m: String| {
                    ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m))
                };
                let mut common_resource_files = Vec::new();
                for t in &inputs {
                    common_resource_files.push(crate::cli_files::parse_input(t).map_err(bad)?);
                }
                for t in &input_prefixes {
                    common_resource_files
                        .push(crate::cli_files::parse_input_prefix(t).map_err(bad)?);
                }
                let spec = JobSpec {
                    display_name,
                    priority,
                    max_wall_clock_secs,
                    max_task_retries,
                    on_all_tasks_complete,
                    on_task_failure,
                    common_resource_files,
                    ..JobSpec::on_pool(id, placeholder_account(), pool)
                };
                call(Request::CreateJob { spec, request_id }).await?
            }
            JobCmd::List => call(Request::ListJobs).await?,
            JobCmd::Show { id } => {
                // The job, then why its queued tasks wait, in one view.
                let (mut value, mut text) =
                    render(call(Request::ShowJob { job: id.clone() }).await?);
                let (waits, lines) = render(call(Request::ExplainJob { job: id }).await?);
                if let Value::Object(map) = &mut value {
                    map.insert("waiting".into(), waits["summary"].clone());
                }
                text.push_str(&lines);
                return Ok(Some((value, text)));
            }
            JobCmd::Disable { id, disable_tasks } => {
                call(Request::DisableJob {
                    job: id,
                    disable_tasks,
                })
                .await?
            }
            JobCmd::Enable { id } => call(Request::EnableJob { job: id }).await?,
            JobCmd::Terminate { id, reason } => {
                call(Request::TerminateJob { job: id, reason }).await?
            }
            JobCmd::Delete { id } => call(Request::DeleteJob { job: id }).await?,
            JobCmd::Wait {
                id,
                progress,
                timeout_secs,
            } => {
                use lote::domain::task::TaskBucket;
                let started = std::time::Instant::now();
                let job = loop {
                    let Response::Job(job) = call(Request::ShowJob { job: id.clone() }).await?
                    else {
                        return Err(ClientError::Protocol("expected a job".into()));
                    };
                    let s = &job.state;
                    if progress {
                        let done = s.count(TaskBucket::Succeeded) + s.count(TaskBucket::Failed);
                        eprint!(
                            "\r{done}/{} done: {} succeeded, {} failed, {} running, {} queued   ",
                            s.tasks_added,
                            s.count(TaskBucket::Succeeded),
                            s.count(TaskBucket::Failed),
                            s.count(TaskBucket::Running),
                            s.count(TaskBucket::Active)
                        );
                    }
                    if s.unfinished() == 0 {
                        if progress {
                            eprintln!();
                        }
                        break job;
                    }
                    if timeout_secs.is_some_and(|t| started.elapsed().as_secs() >= t) {
                        return Err(ClientError::Timeout(started.elapsed()));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                };
                Response::Job(job)
            }
        },
        ClientCommand::Task(cmd) => match cmd {
            TaskCmd::Add {
                job,
                id,
                command,
                files,
                request_id,
            } => {
                let id = match id {
                    Some(id) => id,
                    None => TaskId::new(format!("task-{}", lote::clock::new_uuid().simple()))
                        .map_err(|e| ClientError::Protocol(e.to_string()))?,
                };
                let mut spec = TaskSpec::simple(id.clone(), CommandLine::Shell(command.join(" ")));
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
            TaskCmd::AddRange {
                job,
                first,
                last,
                command,
                prefix,
                batch,
                files,
            } => {
                let batch = batch.clamp(1, lote::api::ADD_TASKS_BATCH_MAX);
                let mut added = 0u64;
                let mut specs = Vec::with_capacity(batch);
                for i in first..=last {
                    let id = TaskId::new(format!("{prefix}{i}"))
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let line = command.replace("{i}", &i.to_string());
                    let mut spec = TaskSpec::simple(id, CommandLine::Shell(line));
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
                Response::TasksAdded {
                    job,
                    count: added as u32,
                }
            }
            TaskCmd::List { job, limit } => {
                // Page through everything (or up to --limit).
                let mut items = Vec::new();
                let mut after = None;
                loop {
                    let want = limit.map(|l| l.saturating_sub(items.len() as u64));
                    if want == Some(0) {
                        break;
                    }
                    let page = want.unwrap_or(1000).min(1000) as u32;
                    let Response::Tasks { items: got, next } = call(Request::ListTasks {
                        job: job.clone(),
                        after: after.take(),
                        limit: page,
                    })
                    .await?
                    else {
                        return Err(ClientError::Protocol("expected a page of tasks".into()));
                    };
                    items.extend(got);
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                Response::Tasks { items, next: None }
            }
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
            } => add_many(&client, job, &from_file, batch).await?,
            TaskCmd::Output {
                job,
                id,
                stderr,
                follow,
                attempt,
            } => return task_output(&client, output, job, id, stderr, follow, attempt).await,
            TaskCmd::Files {
                job,
                id,
                path,
                recursive,
                attempt,
            } => {
                let target = crate::cli_files::FileTarget::Task {
                    job,
                    task: id,
                    attempt,
                };
                crate::cli_files::list_files(&client, target, path, recursive).await?
            }
            TaskCmd::File {
                job,
                id,
                path,
                dest,
                follow,
                attempt,
            } => {
                let target = crate::cli_files::FileTarget::Task {
                    job,
                    task: id,
                    attempt,
                };
                let done = crate::cli_files::read_file(&client, target, path, dest, follow).await?;
                return Ok(Some(done));
            }
        },
        ClientCommand::Blob(cmd) => return Ok(Some(crate::cli_files::blob(&client, cmd).await?)),
        ClientCommand::App(cmd) => crate::cli_files::app(&client, cmd).await?,
        ClientCommand::Events(EventsCmd::Tail { from, count }) => {
            let mut events = client.tail(from).await?;
            let mut seen = 0u64;
            let mut all = Vec::new();
            while count.is_none_or(|c| seen < c) {
                let Some(item) = events.recv().await else {
                    break;
                };
                let event = item?;
                seen += 1;
                match (output, count) {
                    // JSON with a count: one array at the end (one value).
                    (Output::Json, Some(_)) => all.push(event_json(&event)),
                    // JSON without end: one object per line, as it comes.
                    (Output::Json, None) => println!("{}", event_json(&event)),
                    (Output::Table, _) => println!("{}", event_line(&event)),
                }
            }
            return Ok(match (output, count) {
                (Output::Json, Some(_)) => Some((Value::Array(all), String::new())),
                _ => None,
            });
        }
    };
    Ok(Some(render(response)))
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
        spec.validate().map_err(|r| r.detail)?;
        Ok(spec)
    }
}

/// Bytes of task specs per batch, well inside the 4 MiB frame limit.
const ADD_MANY_BATCH_BYTES_MAX: usize = 2 << 20;

/// `task add-many`: the whole file is checked before anything is sent, so
/// a bad line adds nothing.
async fn add_many(
    client: &Client,
    job: JobId,
    path: &std::path::Path,
    batch: usize,
) -> Result<Response, ClientError> {
    use sha2::Digest;
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

fn event_json(e: &EventView) -> Value {
    json!({
        "position": e.position,
        "entity": e.entity,
        "version": e.version,
        "recorded_at": e.recorded_at,
        "event_type": e.event_type,
        "principal": e.principal,
        "request_id": e.request_id,
        "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
    })
}

fn event_line(e: &EventView) -> String {
    format!(
        "#{:<7} {}  {:<40} {:<24} by {}  {}",
        e.position, e.recorded_at, e.entity, e.event_type, e.principal, e.data
    )
}

/// Aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => "?".into(),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn with_version<T: serde::Serialize>(v: &lote::domain::Versioned<T>) -> Value {
    let mut value = serde_json::to_value(&v.state).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("version".into(), json!(v.version));
    }
    value
}

fn trace_line(t: &lote::autoscale::TraceEntry) -> String {
    use lote::autoscale::TraceEntry as T;
    match t {
        T::Read {
            line,
            col,
            name,
            value,
        } => format!("{line}:{col}  read   {name} = {value}"),
        T::Assign {
            line,
            col,
            name,
            value,
        } => format!("{line}:{col}  set    {name} = {value}"),
        T::Stop { line, col } => format!("{line}:{col}  stop()"),
        T::Sample {
            line,
            col,
            metric,
            method,
            from,
            to,
            samples,
            percent,
            required_percent,
        } => {
            let window = if from.is_empty() {
                String::new()
            } else {
                format!(" over ({from}, {to}]")
            };
            let need = required_percent.map_or(String::new(), |p| format!(", {p}% required"));
            format!("{line}:{col}  sample {metric}.{method}{window}: {samples} sample(s), {percent:.0}% present{need}")
        }
    }
}

fn render(response: Response) -> (Value, String) {
    match response {
        Response::Pong { server_time } => (json!({ "server_time": server_time }), format!("pong {server_time}\n")),
        Response::Whoami { principal } => (json!({ "principal": principal }), format!("{principal}\n")),
        Response::Done { entity, version } => (
            json!({ "entity": entity, "version": version }),
            format!("ok: {entity} is at version {version}\n"),
        ),
        Response::Created { entity } => (json!({ "created": entity }), format!("created {entity}\n")),
        Response::TasksAdded { job, count } => (
            json!({ "job": job, "tasks_added": count }),
            format!("added {count} task(s) to job {job}\n"),
        ),
        Response::Account(a) => {
            let value = serde_json::to_value(&a).unwrap_or(Value::Null);
            let text = format!(
                "account {}\n  status: {}\n  created: {}\n  keys rotated: {}\n",
                a.name,
                word(&a.status),
                opt(&a.created_at),
                opt(&a.keys_rotated_at)
            );
            (value, text)
        }
        Response::Accounts(list) => {
            let value = serde_json::to_value(&list).unwrap_or(Value::Null);
            let rows = list
                .iter()
                .map(|a| vec![a.name.to_string(), word(&a.status), opt(&a.created_at)])
                .collect();
            (value, table(&["name", "status", "created"], rows))
        }
        Response::Keys {
            account,
            primary,
            secondary,
        } => (
            json!({ "account": account, "primary": primary, "secondary": secondary }),
            format!(
                "account {account}\n  primary:   {primary}\n  secondary: {secondary}\nUse one with: lote --account {account} --key KEY ...\n"
            ),
        ),
        Response::Pool(p) => {
            let value = with_version(&p);
            (value.clone(), pretty(&value))
        }
        Response::Pools(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|p| {
                    let spec = p.state.spec.as_ref();
                    vec![
                        spec.map(|s| s.id.to_string()).unwrap_or_default(),
                        word(&p.state.status),
                        p.state.target_nodes.to_string(),
                        spec.map(|s| s.node_size.task_slots.to_string()).unwrap_or_default(),
                        word(&p.state.resize),
                    ]
                })
                .collect();
            (value, table(&["id", "status", "target", "slots", "resize"], rows))
        }
        Response::JoinToken { pool, token } => (
            json!({ "pool": pool, "token": token }),
            format!("{token}\n"),
        ),
        Response::Node(n) => {
            let value = with_version(&n);
            (value.clone(), pretty(&value))
        }
        Response::Nodes(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|n| {
                    vec![
                        opt(&n.state.id),
                        word(&n.state.state),
                        n.state.name.clone(),
                    ]
                })
                .collect();
            (value, table(&["id", "state", "name"], rows))
        }
        Response::Job(j) => {
            let value = with_version(&j);
            (value.clone(), pretty(&value))
        }
        Response::Jobs(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|j| {
                    let spec = j.state.spec.as_ref();
                    vec![
                        spec.map(|s| s.id.to_string()).unwrap_or_default(),
                        word(&j.state.status),
                        spec.map(|s| s.pool.to_string()).unwrap_or_default(),
                        j.state.tasks_added.to_string(),
                        j.state.unfinished().to_string(),
                    ]
                })
                .collect();
            (value, table(&["id", "status", "pool", "tasks", "unfinished"], rows))
        }
        Response::Task(t) => {
            let value = with_version(&t);
            (value.clone(), pretty(&value))
        }
        Response::Tasks { items: list, .. } => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|t| {
                    vec![
                        t.state.spec.as_ref().map(|s| s.id.to_string()).unwrap_or_default(),
                        word(&t.state.status),
                        t.version.to_string(),
                    ]
                })
                .collect();
            (value, table(&["id", "status", "version"], rows))
        }
        Response::Subscribed { from } => (json!({ "subscribed_from": from }), format!("subscribed from {from}\n")),
        Response::TaskOutput { chunk, .. } => (
            json!({ "offset": chunk.offset, "bytes": chunk.data.len(), "size": chunk.size }),
            String::from_utf8_lossy(&chunk.data).into_owned(),
        ),
        Response::Work { assignments, .. } => (
            json!({ "assignments": assignments.len() }),
            format!("{} assignment(s)\n", assignments.len()),
        ),
        Response::Recorded | Response::Registered { .. } => {
            (json!({ "recorded": true }), "recorded\n".into())
        }
        Response::Reported { results } => {
            let refused = results.iter().filter(|r| r.is_err()).count();
            (
                json!({ "recorded": results.len() - refused, "refused": refused }),
                format!("{} recorded, {refused} refused\n", results.len() - refused),
            )
        }
        Response::TaskExplanation {
            job,
            task,
            status,
            waiting,
        } => {
            let value = json!({
                "job": job,
                "task": task,
                "status": status,
                "waiting": waiting.as_ref().map(|w| json!({
                    "slots": w.slots,
                    "reasons": w.reasons,
                    "in_words": w.reasons.iter().map(|r| r.words(&w.pool, job.as_str())).collect::<Vec<_>>(),
                })),
            });
            let text = match &waiting {
                None => format!(
                    "task {task} of job {job} is {}: it is not waiting (lote task show {job} {task})\n",
                    word(&status)
                ),
                Some(w) if w.reasons.is_empty() => format!(
                    "task {task} of job {job} waits for placement: a node has room and it is next\n"
                ),
                Some(w) => {
                    let mut t = format!(
                        "task {task} of job {job} waits (needs {} slot(s) in pool {}):\n",
                        w.slots, w.pool.pool
                    );
                    for r in &w.reasons {
                        t.push_str(&format!("  - {}\n", r.words(&w.pool, job.as_str())));
                    }
                    t
                }
            };
            (value, text)
        }
        Response::JobWaits { job, groups, pool } => {
            let lines: Vec<String> = groups
                .iter()
                .map(|g| lote::compute::explain::summary(g, &pool, job.as_str()))
                .collect();
            let mut text = String::new();
            for l in &lines {
                text.push_str(&format!("waiting: {l}\n"));
            }
            (json!({ "job": job, "groups": groups, "summary": lines }), text)
        }
        Response::AutoscaleEvaluation(e) => {
            let value = serde_json::to_value(&e).unwrap_or(Value::Null);
            let run = &e.run;
            let mut text = format!("results: {}\n", run.results);
            match (&run.error, run.target_after) {
                (Some(err), _) => text.push_str(&format!(
                    "error: {} ({}); the pool would be left as it is\n",
                    err.message, err.code
                )),
                (None, Some(t)) => text.push_str(&format!(
                    "would set: {t} node(s) (target now {}), deallocation {}\n",
                    run.target_before,
                    word(&run.deallocation)
                )),
                (None, None) => text.push_str("would set: nothing (the formula sets no target)\n"),
            }
            if e.stopped {
                text.push_str("stopped by stop()\n");
            }
            text.push_str(&format!("inputs: {}\ntrace:\n", run.inputs));
            for t in &e.trace {
                text.push_str(&format!("  {}\n", trace_line(t)));
            }
            if e.trace_dropped > 0 {
                text.push_str(&format!("  ... and {} more\n", e.trace_dropped));
            }
            (json!({ "run": value["run"], "stopped": e.stopped, "trace": value["trace"], "trace_dropped": e.trace_dropped }), text)
        }
        Response::AutoscaleRuns(runs) => {
            let value = serde_json::to_value(&runs).unwrap_or(Value::Null);
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.at.to_string(),
                        r.target_before.to_string(),
                        r.target_after.map_or("-".into(), |t| t.to_string()),
                        match &r.error {
                            Some(e) => format!("error: {}", e.message),
                            None => r.results.clone(),
                        },
                    ]
                })
                .collect();
            let mut text = table(&["at", "before", "after", "results"], rows);
            if runs.is_empty() {
                text = "no autoscale runs yet (enable with: lote pool autoscale enable POOL --formula ...)\n".into();
            }
            (value, text)
        }
        Response::AutoscaleReplay(steps) => {
            let value = serde_json::to_value(&steps).unwrap_or(Value::Null);
            let rows = steps
                .iter()
                .map(|s| {
                    vec![
                        s.at.to_string(),
                        s.would_target.map_or("-".into(), |t| t.to_string()),
                        s.actual_target.to_string(),
                        s.actual_nodes.to_string(),
                        s.samples.to_string(),
                        s.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            (
                value,
                table(&["at", "would set", "real target", "real nodes", "samples", "error"], rows),
            )
        }
        Response::Joined { node, credential } => (
            json!({ "node": node, "credential": credential }),
            format!("joined as node {node}\n"),
        ),
        other => crate::cli_files::render(&other).unwrap_or_else(|| {
            (
                json!({ "answer": format!("{other:?}") }),
                format!("{other:?}\n"),
            )
        }),
    }
}
