//! The `lote` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lote::replay::{audit, replay, Audit, ReplayReport};
use lote::store::{Durability, EventStore, StreamId, WalRecovery};
use lote::types::{AccountName, PoolId, Timestamp};

// Agents and the server allocate and free many small, short-lived buffers
// per task (frames, envelopes, paths); glibc's malloc spent about a seventh
// of their CPU on it (consolidating free lists, mostly). See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// lote: batch computing on machines you own.
///
/// Every change lote makes is an event in an append-only log in the data
/// directory; `replay` and `audit` read that log directly. `server` serves
/// the message API; the other commands are its clients.
///
/// Quick start:
///   lote server --data-dir lote-data &
///   lote account create acme --admin-key-file lote-data/admin.key
///   export LOTE_ACCOUNT=acme LOTE_KEY=<primary key printed above>
///   lote pool create render --nodes 2
///   lote job create frames --pool render
///   lote task add frames frame-1 -- echo hello
///
/// Exit codes: 0 success, 1 runtime error (refused, unreachable, failed),
/// 2 usage error (bad flags or arguments).
#[derive(Parser)]
#[command(name = "lote", version, propagate_version = true, verbatim_doc_comment)]
struct Cli {
    /// Log format: human text or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "LOTE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(flatten)]
    connection: cli::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the message API: host the actors on a data directory.
    ///
    /// On first start it creates DATA_DIR/admin.key (owner-only) and prints
    /// where it is. Settings: flag > LOTE_* environment > --config file >
    /// default. SIGTERM or Ctrl-C drains calls in flight and flushes the log.
    ///
    /// Examples:
    ///   lote server --data-dir /var/lib/lote --listen 0.0.0.0:7070
    ///   lote server --config /etc/lote/server.toml
    #[command(verbatim_doc_comment)]
    Server(lote::server::ServerFlags),
    /// Run a node agent: join a pool (once, with its join token), then run
    /// the tasks placed on this node.
    ///
    /// Example:
    ///   lote agent --server 10.0.0.5:7070 --pool-account acme --pool farm \
    ///       --join-token $(lote pool join-token farm) --root /var/lib/lote-agent
    #[command(verbatim_doc_comment)]
    Agent {
        /// The pool's owner account.
        #[arg(long = "pool-account", env = "LOTE_AGENT_ACCOUNT")]
        pool_account: AccountName,
        /// The pool to join.
        #[arg(long, env = "LOTE_AGENT_POOL")]
        pool: PoolId,
        /// The pool's join token; needed only until ROOT/node.toml exists.
        #[arg(long, env = "LOTE_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
        /// The node's directory: its credential, task directories, shared dir.
        #[arg(long, env = "LOTE_AGENT_ROOT")]
        root: PathBuf,
        /// Tasks this node runs at once.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Name shown for this node [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// Run tasks and the start task as root, as the agent. By default an
        /// agent running as root runs them as an unprivileged user of the
        /// pool, which cannot read the agent's credential, its cache or
        /// other nodes' files. Only for pools whose every task is trusted
        /// with the whole machine.
        #[arg(long)]
        run_tasks_as_root: bool,
        /// Most processes the pool's task user may have at once on this
        /// machine (all its tasks and their children): a fork bomb stops
        /// there. Applies when tasks run as the pool's user.
        #[arg(long, default_value_t = lote::agent::user::TASK_PROCESSES_MAX, value_parser = clap::value_parser!(u64).range(1..))]
        task_processes_max: u64,
        /// MiB of memory (and swap) one attempt's processes may hold
        /// together; past it the kernel kills one of them and the attempt
        /// fails as out_of_memory. 0: no limit of the attempt's own.
        /// [default: 90% of the machine's memory]
        #[arg(long, value_name = "MIB")]
        task_memory_max: Option<u64>,
        /// An attempt's share of CPU against the node's other attempts when
        /// they compete, 1..=10000 (a task of weight 200 gets twice the CPU
        /// of one of 100).
        #[arg(long, default_value_t = lote::agent::cgroup::CPU_WEIGHT_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        task_cpu_weight: u32,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Print a completion script for a shell.
    ///
    /// Examples:
    ///   lote completion bash > /etc/bash_completion.d/lote
    ///   lote completion zsh > "${fpath[1]}/_lote"
    ///   lote completion fish > ~/.config/fish/completions/lote.fish
    #[command(verbatim_doc_comment)]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the demo workload in-process on a local data directory: an
    /// account, a pool of two nodes, a job of frames, retries; then the
    /// example app (mandelzoom) published and run on a pool of its own;
    /// then replay the log and audit one task.
    ///
    /// Example: lote demo --data-dir /tmp/lote-demo --tasks 500
    Demo {
        /// Data directory (created if missing; reused logs are appended to).
        #[arg(long, env = "LOTE_DATA_DIR", default_value = "lote-demo-data")]
        data_dir: PathBuf,
        /// Number of tasks in the demo job.
        #[arg(long, default_value_t = 200)]
        tasks: u32,
        /// When appends are acknowledged.
        #[arg(long, value_enum, default_value = "sync")]
        durability: Durability,
        /// Keep the server and its console up after the job, until Ctrl-C,
        /// to look around (http://127.0.0.1:7071/ui/ unless that port is
        /// taken; the address is printed).
        #[arg(long)]
        stay: bool,
    },
    /// Rebuild every entity from the log alone and check it against the
    /// snapshots, the aggregates' invariants and the jobs' task counts.
    /// Exits 1 on any mismatch. Works read-only, on a stopped server's data
    /// directory or a copy of it.
    ///
    /// Example: lote replay --data-dir /var/lib/lote --json
    Replay {
        #[arg(long, env = "LOTE_DATA_DIR")]
        data_dir: PathBuf,
        /// On a damaged write-ahead log: refuse (strict), or read what
        /// precedes the damage (point-in-time). Nothing is written either way.
        #[arg(long, value_enum, default_value = "strict")]
        wal_recovery: WalRecovery,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print an entity's history (when, who, which request, what changed),
    /// or with --at its state as of a time.
    ///
    /// ENTITY is account/NAME, pool/ACCOUNT/POOL, node/ACCOUNT/POOL/NODE,
    /// job/ACCOUNT/JOB or task/ACCOUNT/JOB/TASK.
    ///
    /// Example: lote audit --data-dir /var/lib/lote task/acme/render/frame-7 --at 2026-11-27T10:00:00Z
    Audit {
        #[arg(long, env = "LOTE_DATA_DIR")]
        data_dir: PathBuf,
        /// As for replay.
        #[arg(long, value_enum, default_value = "strict")]
        wal_recovery: WalRecovery,
        entity: String,
        /// RFC 3339 time; print the state as of then.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LOTE_LOG").unwrap_or_else(|_| "warn".into());
    // Colour codes only for a terminal: a local agent's log is a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let command = match cli.command {
        Command::Client(command) => return cli::run(command, cli.connection),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "lote", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Server(flags) => return serve(flags),
        Command::Agent {
            pool_account,
            pool,
            join_token,
            root,
            slots,
            name,
            run_tasks_as_root,
            task_processes_max,
            task_memory_max,
            task_cpu_weight,
        } => {
            let limits =
                lote::agent::attempt_limits(task_memory_max, task_cpu_weight, task_processes_max);
            // Before the runtime: the watchdog is forked.
            let (groups, _watchdog) = lote::agent::attempt_groups(&root, limits);
            let trust = match lote::api::tls::Trust::from_flags(
                cli.connection.tls_fingerprint.as_deref(),
                cli.connection.tls_ca.clone(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("lote agent: --tls-fingerprint: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = lote::agent::AgentConfig {
                trust,
                insecure_plaintext: cli.connection.insecure_plaintext,
                server: cli
                    .connection
                    .server
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:7070".into()),
                root,
                account: pool_account,
                pool,
                join_token,
                task_slots: slots,
                tasks_as_root: run_tasks_as_root,
                task_processes_max,
                limits,
                groups,
                name: name.unwrap_or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or_else(|_| "agent".into())
                }),
            };
            // One thread: an agent waits on processes, sockets and files;
            // with two workers most of its CPU went to waking one thread
            // from the other. Slow work (file scans, process sweeps) goes
            // to the blocking pool as before.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lote agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            return match runtime.block_on(lote::agent::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lote agent: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        other => other,
    };
    match run(command) {
        Ok(code) => code,
        Err(Fail::Runtime(message)) => {
            eprintln!("lote: {message}");
            ExitCode::FAILURE
        }
        Err(Fail::Usage(message)) => {
            eprintln!("lote: {message}");
            ExitCode::from(2)
        }
    }
}

/// A failed command: bad arguments (exit 2) or a failure while running
/// (exit 1).
enum Fail {
    Usage(String),
    Runtime(String),
}

impl From<String> for Fail {
    fn from(message: String) -> Self {
        Fail::Runtime(message)
    }
}

fn serve(flags: lote::server::ServerFlags) -> ExitCode {
    use lote::server::{self, AdminKeySource, ServerConfig};
    use std::io::Write;
    let config = match ServerConfig::load(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lote server: {e}");
            return ExitCode::from(2);
        }
    };
    let started = |s: &server::Started| {
        // Tests and scripts read this first line to learn the port.
        println!("lote server listening on {}", s.addr);
        match &s.admin_key {
            AdminKeySource::Created(path) => println!(
                "admin key created in {} (owner-only); use it with: lote account create NAME --admin-key-file {}",
                path.display(),
                path.display()
            ),
            AdminKeySource::Existing(path) => println!("admin key in {}", path.display()),
            AdminKeySource::Configured => println!("admin key taken from the configuration"),
        }
        println!(
            "TLS certificate {} ({}); clients off this machine pin it with --tls-fingerprint {}",
            s.tls_fingerprint,
            s.tls_certificate.display(),
            s.tls_fingerprint
        );
        if let Some(addr) = s.azure {
            println!(
                "azure batch api on http://{addr} (api-version {}; SharedKey with an account's key as lote account keys shows it)",
                server::AZURE_API_VERSION
            );
        }
        match s.console {
            Some(addr) => println!(
                "console on http://{addr}/ui/ (sign in with an account's key, or the admin key); /metrics, /healthz, /readyz beside it"
            ),
            None => println!("no console (--no-http)"),
        }
        if s.plaintext == server::tls::Plaintext::InsecureAny {
            println!("warning: plaintext is accepted from any address (--plaintext insecure-any): keys and data may cross the network in clear");
        }
        let _ = std::io::stdout().flush();
    };
    let result =
        actix::System::new().block_on(server::run(config, started, server::termination_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lote server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Fail> {
    match command {
        Command::Server(_)
        | Command::Client(_)
        | Command::Agent { .. }
        | Command::Completion { .. } => {
            unreachable!("dispatched in main")
        }
        Command::Demo {
            data_dir,
            tasks,
            durability,
            stay,
        } => {
            println!(
                "lote demo: data directory {}; an in-process server, a local pool of 2 nodes (2 agent processes), a job of {tasks} frames, then an app",
                data_dir.display()
            );
            let summary = lote::demo::run(&data_dir, tasks, durability, stay)?;
            println!(
                "{}: {} tasks, {} succeeded, {} failed, {} attempts retried; job is {} ({:.1}s)",
                summary.job,
                summary.tasks,
                summary.succeeded,
                summary.failed,
                summary.retried,
                summary.job_status,
                summary.elapsed_secs
            );
            println!(
                "inputs and program uploaded to the blob store: {} bytes; {} outputs in the tasks' manifests, {} downloaded (one SHA-256 digest per frame) to {}",
                summary.uploaded_bytes,
                summary.manifest_entries,
                summary.outputs_downloaded,
                summary.outputs.display()
            );
            if let Some(app) = &summary.app_run {
                println!(
                    "figure 5: the app {} ({}) was published; a user ran it with frames=48 palette=fire on a pool of its own",
                    app.app, app.description
                );
                println!(
                    "job/{}/{}: app {} run {}: {} tasks (one per 8 frames, then the merge) on a pool made for it and deleted after ({:.1}s); the animation {} ({} bytes) and its preview {} downloaded",
                    summary.account,
                    app.job,
                    app.app,
                    app.status,
                    app.tasks,
                    app.elapsed_secs,
                    app.result.display(),
                    app.result_bytes,
                    app.preview.display()
                );
            }
            let store = EventStore::open_read_only(&data_dir).map_err(|e| e.to_string())?;
            let report = replay(&store).map_err(|e| e.to_string())?;
            print_replay(&report);
            let entity = StreamId::parse(&summary.sample_task).map_err(|e| e.to_string())?;
            let trail = audit(&store, &entity, None).map_err(|e| e.to_string())?;
            print_audit(&trail);
            println!(
                "\nTry: lote audit --data-dir {} {}",
                data_dir.display(),
                summary.job
            );
            Ok(if report.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Replay {
            data_dir,
            wal_recovery,
            json,
        } => {
            let store = EventStore::open_read_only_with(&data_dir, wal_recovery)
                .map_err(|e| e.to_string())?;
            let report = replay(&store).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
            } else {
                print_replay(&report);
            }
            Ok(if report.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Audit {
            data_dir,
            wal_recovery,
            entity,
            at,
            json,
        } => {
            let stream = StreamId::parse(&entity).map_err(|e| Fail::Usage(e.to_string()))?;
            let at = at
                .map(|t| {
                    Timestamp::parse(&t).map_err(|e| {
                        Fail::Usage(format!(
                            "--at {t:?} is not an RFC 3339 time (e.g. 2026-11-27T10:00:00Z): {e}"
                        ))
                    })
                })
                .transpose()?;
            let store = EventStore::open_read_only_with(&data_dir, wal_recovery)
                .map_err(|e| e.to_string())?;
            let trail = audit(&store, &stream, at).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&trail).map_err(|e| e.to_string())?
                );
            } else {
                print_audit(&trail);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_replay(report: &ReplayReport) {
    println!(
        "replay: {} events in {} streams (log head {}), {:.3}s, {:.0} events/s, {} snapshots checked",
        report.events, report.streams, report.log_head, report.elapsed_secs, report.events_per_sec, report.snapshots_checked
    );
    for (kind, statuses) in &report.entities {
        let parts: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("  {kind}: {}", parts.join(", "));
    }
    if report.mismatches.is_empty() {
        println!("  no mismatch");
    } else {
        println!("  {} MISMATCHES:", report.mismatches.len());
        for m in &report.mismatches {
            println!("    {}: {}", m.entity, m.problem);
        }
    }
}

fn print_audit(trail: &Audit) {
    match trail.at {
        Some(at) => println!("\n{} as of {at} (version {}):", trail.entity, trail.version),
        None => println!("\n{} (version {}):", trail.entity, trail.version),
    }
    for e in &trail.history {
        println!(
            "  #{:<3} {}  {:<24} by {} (request {})",
            e.version, e.recorded_at, e.event_type, e.principal, e.request_id
        );
        for (field, (before, after)) in &e.changed {
            println!("        {field}: {} -> {}", compact(before), compact(after));
        }
        // An event that records history without changing the entity's
        // state (samples, autoscale runs, wait reasons): show what it says.
        if e.changed.is_empty() {
            println!("        {}", compact(&e.event));
        }
    }
    if trail.at.is_some() {
        println!(
            "  state: {}",
            serde_json::to_string_pretty(&trail.state).unwrap_or_default()
        );
    }
}

fn compact(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(100).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
