//! `lote pool`: pools of compute nodes, and their autoscale formulas.

use clap::Subcommand;

use super::files::{parse_app, parse_input};
use super::pool_tasks::{SecretArgs, SecretCmd, TaskSettingsArgs};
use super::render::render;
use super::{placeholder_account, Rendered};
use lote::api::{ApiError, Request};
use lote::client::{Client, ClientError};
use lote::domain::pool::{
    Deallocation, NodeProvider, NodeSize, PoolSpec, ScaleSettings, SchedulingPolicy,
    StartTaskUpdate,
};
use lote::domain::spec::{CommandLine, StartTask};
use lote::domain::RejectionCode;
use lote::types::{PoolId, Timestamp};

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
        /// Not available yet (no multi-node tasks): refused by the server.
        #[arg(long)]
        inter_node_communication: bool,
        /// An application package unpacked on every node as it joins:
        /// ID[:VERSION] (repeatable).
        #[arg(long = "app", value_name = "ID[:VERSION]", value_parser = super::files::app_arg)]
        apps: Vec<String>,
        #[command(flatten)]
        start_task: StartTaskArgs,
        #[command(flatten)]
        tasks: TaskSettingsArgs,
        #[command(flatten)]
        secrets: SecretArgs,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Change the start task or the application packages. Nodes take them
    /// as they join and after a reboot or reimage; running nodes keep
    /// what they have until then (lote node reboot POOL NODE).
    ///
    /// Examples:
    ///   lote pool update render --start-task 'apt-get install -y ffmpeg' --start-task-retries 2
    ///   lote pool update render --no-start-task
    ///   lote pool update render --app blender:4.1 --app scenes
    ///   lote pool update render --no-apps
    #[command(verbatim_doc_comment)]
    #[command(group(
        clap::ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["line", "no_start_task", "apps", "no_apps"])
    ))]
    Update {
        id: PoolId,
        #[command(flatten)]
        start_task: StartTaskArgs,
        /// Remove the start task.
        #[arg(long, conflicts_with = "line")]
        no_start_task: bool,
        /// Replace the application packages with these: ID[:VERSION]
        /// (repeatable).
        #[arg(long = "app", value_name = "ID[:VERSION]", value_parser = super::files::app_arg)]
        apps: Vec<String>,
        /// Remove every application package.
        #[arg(long, conflicts_with = "apps")]
        no_apps: bool,
    },
    /// The account's pools: status, target, slots, resize.
    List,
    /// One pool in full, as JSON.
    Show { id: PoolId },
    /// Set a new target node count.
    Resize {
        id: PoolId,
        nodes: u32,
        /// What removed nodes do with running tasks.
        #[arg(long, value_enum, default_value = "requeue")]
        deallocation: Deallocation,
    },
    /// Stop a resize where it is.
    StopResize { id: PoolId },
    /// Delete a pool: its nodes are removed and their agents stopped.
    /// Refused while jobs on it have queued or running tasks, unless
    /// --force.
    Delete {
        id: PoolId,
        /// Terminate the jobs that still have tasks on it ("pool deleted"),
        /// then delete it.
        #[arg(long)]
        force: bool,
    },
    /// The token a remote agent needs to join this pool.
    ///
    /// With --rotate, a new token replaces it: the old one joins no more
    /// nodes (a leaked token is revoked), while nodes already in keep
    /// their own credentials.
    JoinToken {
        id: PoolId,
        /// Replace the token with a new one and print it.
        #[arg(long)]
        rotate: bool,
    },
    /// Size the pool by formula (Azure Batch's language): enable, disable,
    /// evaluate without applying, see past runs, replay over history.
    #[command(subcommand)]
    Autoscale(AutoscaleCmd),
    /// The pool's secrets: set (add or replace) and remove. Their names
    /// show in `lote pool show`; their values never leave the server but
    /// to the pool's nodes, and are stored sealed.
    #[command(subcommand)]
    Secret(SecretCmd),
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

/// A pool's start task: run on every node as it joins and after each
/// reboot, before the node gets tasks (unless told not to wait).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StartTaskArgs {
    /// A shell line each node runs as it joins (and after a reboot), in
    /// its `starttask` directory, with /bin/sh -c.
    #[arg(long = "start-task", value_name = "LINE")]
    line: Option<String>,
    /// Retries of the start task after its first failure.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "line")]
    start_task_retries: u32,
    /// Give nodes tasks while their start task still runs (by default a
    /// node waits for its start task to succeed).
    #[arg(long, requires = "line")]
    start_task_no_wait: bool,
    /// An environment variable of the start task: NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE", requires = "line")]
    start_task_env: Vec<String>,
    /// A blob fetched for the start task: CONTAINER/NAME[=PATH][@MODE]
    /// (repeatable).
    #[arg(
        long,
        value_name = "CONTAINER/NAME[=PATH][@MODE]",
        requires = "line",
        value_parser = super::files::input_arg
    )]
    start_task_input: Vec<String>,
}

impl StartTaskArgs {
    /// The start task these flags describe, if any.
    fn spec(&self) -> Result<Option<StartTask>, ClientError> {
        let Some(line) = &self.line else {
            return Ok(None);
        };
        let bad = |m: String| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m));
        let mut env = Vec::new();
        for pair in &self.start_task_env {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("--start-task-env {pair:?}: expected NAME=VALUE")))?;
            env.push(lote::domain::EnvVar {
                name: name.to_string(),
                value: value.to_string(),
            });
        }
        let resource_files = self
            .start_task_input
            .iter()
            .map(|t| parse_input(t).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(StartTask {
            command_line: CommandLine::Shell(line.clone()),
            env,
            resource_files,
            wait_for_success: !self.start_task_no_wait,
            retry_count_max: self.start_task_retries,
        }))
    }
}

/// `--app` values as package references.
fn app_refs(apps: &[String]) -> Result<Vec<lote::domain::spec::PackageRef>, ClientError> {
    apps.iter()
        .map(|a| parse_app(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m)))
}

/// Runs one `lote pool` command.
pub(super) async fn run(cmd: PoolCmd, client: &Client) -> Result<Rendered, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    let response = match cmd {
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
            start_task,
            tasks,
            secrets,
            request_id,
        } => {
            let start_task = start_task.spec()?;
            let secrets = secrets.secrets()?;
            let application_packages = app_refs(&apps)?;
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
                start_task,
                secrets,
                task_settings: tasks.settings(),
                // The server puts the caller's account in.
                ..PoolSpec::fixed(id, placeholder_account(), nodes, slots)
            };
            call(Request::CreatePool { spec, request_id }).await?
        }
        PoolCmd::Update {
            id,
            start_task,
            no_start_task,
            apps,
            no_apps,
        } => {
            let start_task = match (start_task.spec()?, no_start_task) {
                (Some(task), _) => Some(StartTaskUpdate::Set(task)),
                (None, true) => Some(StartTaskUpdate::Remove),
                (None, false) => None,
            };
            let application_packages = match (apps.is_empty(), no_apps) {
                (false, _) => Some(app_refs(&apps)?),
                (true, true) => Some(Vec::new()),
                (true, false) => None,
            };
            call(Request::UpdatePool {
                pool: id,
                start_task,
                application_packages,
            })
            .await?
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
        PoolCmd::Delete { id, force } => call(Request::DeletePool { pool: id, force }).await?,
        PoolCmd::JoinToken { id, rotate: false } => {
            call(Request::ShowJoinToken { pool: id }).await?
        }
        PoolCmd::JoinToken { id, rotate: true } => {
            call(Request::RotateJoinToken { pool: id }).await?
        }
        PoolCmd::Secret(cmd) => call(cmd.request()?).await?,
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
    };
    Ok(Some(render(response)))
}
