//! The client half of the `lote` command: one file per noun (`account`,
//! `pool`, `node`, `job`, `task`, `blob`, `app`, `events`), each with its
//! subcommands and what they send; `connect` finds the server and the
//! credentials; `render`, `views` and `output` print replies for people
//! (tables, one object's view) or scripts (one JSON value); `files` reads file arguments and the
//! files API.

mod account;
mod app;
mod app_jobs;
mod blob;
mod connect;
mod deps;
mod events;
mod files;
mod job;
mod job_prep;
mod job_wait;
mod node;
mod output;
mod package;
mod pool;
mod pool_tasks;
mod render;
mod schedule;
mod task;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use account::AccountCmd;
use app::AppCmd;
use blob::BlobCmd;
use connect::{credentials, from_client_error, usage};
use events::EventsCmd;
use job::JobCmd;
use lote::api::Request;
use lote::client::{Client, ClientError};
use lote::types::AccountName;
use node::NodeCmd;
use package::PackageCmd;
use pool::PoolCmd;
use schedule::ScheduleCmd;
use task::TaskCmd;

/// Where and as whom to connect. Each flag also reads an environment
/// variable, then the profile, then the default.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Server address. [default: 127.0.0.1:7070]
    #[arg(long, global = true, help_heading = "Connection", env = "LOTE_SERVER")]
    pub server: Option<String>,
    /// Account to act as.
    #[arg(long, global = true, help_heading = "Connection", env = "LOTE_ACCOUNT")]
    pub account: Option<String>,
    /// That account's key (primary or secondary).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LOTE_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// The administrator key (needed by `account` commands).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LOTE_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,
    /// File holding the administrator key, e.g. DATA_DIR/admin.key.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LOTE_ADMIN_KEY_FILE"
    )]
    pub admin_key_file: Option<PathBuf>,
    /// Sign with the administrator key even where an account key would do
    /// (e.g. `events tail` of every account).
    #[arg(long, global = true, help_heading = "Connection")]
    pub admin: bool,
    /// Profile to read defaults from, in $XDG_CONFIG_HOME/lote/profiles.toml
    /// (~/.config/lote/profiles.toml). [default: "default" if present]
    #[arg(long, global = true, help_heading = "Connection", env = "LOTE_PROFILE")]
    pub profile: Option<String>,
    /// Reach the server over TLS and trust exactly the certificate with
    /// this SHA-256 fingerprint (sha256:HEX, printed by the server at
    /// start). Needed for a server on another machine, unless --tls-ca.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LOTE_TLS_FINGERPRINT",
        conflicts_with = "tls_ca"
    )]
    pub tls_fingerprint: Option<String>,
    /// Reach the server over TLS and trust certificates this CA (PEM
    /// file) signed for the server's host name.
    #[arg(long, global = true, help_heading = "Connection", env = "LOTE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A job manager's key (set for a job manager task in LOTE_JOB_KEY):
    /// signs as that job, which may add and read its own tasks only.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LOTE_JOB_KEY",
        hide_env_values = true
    )]
    pub job_key: Option<String>,
    /// The job --job-key belongs to (in a job manager task: LOTE_JOB_ID).
    #[arg(long, global = true, help_heading = "Connection", env = "LOTE_JOB_ID")]
    pub job_key_job: Option<String>,
    /// Talk to a server on another machine without TLS: keys and data
    /// cross the network in clear. (A server on this machine is reached
    /// in plaintext without it.)
    #[arg(long, global = true, help_heading = "Connection")]
    pub insecure_plaintext: bool,
    /// table for people, json for scripts (exactly one JSON value on stdout,
    /// errors included).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
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
    ///   lote pool create render --start-task 'apt-get install -y blender' --start-task-retries 2
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
    /// Job schedules (work items): a job template run once, every so
    /// often, or by cron in a time zone.
    ///
    /// Examples:
    ///   lote schedule create nightly --pool render --cron '0 2 * * *' --time-zone Europe/Madrid --tasks-file frames.jsonl
    ///   lote schedule show nightly
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Schedule(ScheduleCmd),
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
    Blob(BlobCmd),
    /// Apps: a program published with its definition (app.toml: typed
    /// parameters, how a run splits into tasks, stages, outputs, merge),
    /// run with parameters and files; each run is one job.
    ///
    /// Examples:
    ///   lote app publish ./mandelzoom --default
    ///   lote app show mandelzoom
    ///   lote app run mandelzoom --param frames=60 --auto-pool nodes=2,slots=2 --wait --progress
    ///   lote app job download mandelzoom-1a2b3c4d --dest ./out
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    App(AppCmd),
    /// Application packages: versioned zips of a program, unpacked once on
    /// each node that uses them (LOTE_APP_<ID> names the directory).
    ///
    /// Examples:
    ///   lote package upload blender 4.2 ./blender-4.2.zip --default
    ///   lote task add frames --app blender --command '$LOTE_APP_BLENDER/blender -f 1'
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Package(PackageCmd),
    /// Who the server takes you for (checks address and credentials).
    Whoami,
}

/// Runs a client command; prints its result; returns the exit code.
pub fn run(command: ClientCommand, conn: Connection) -> ExitCode {
    let output = conn.output;
    // `job wait` succeeds as a call but exits 1 when a task failed.
    let waiting = match &command {
        ClientCommand::Job(JobCmd::Wait { id, .. }) => Some(id.to_string()),
        // An app run's wait names its job in its answer.
        ClientCommand::App(AppCmd::Run { wait: true, .. })
        | ClientCommand::App(AppCmd::Job(app_jobs::AppJobCmd::Wait { .. })) => Some(String::new()),
        _ => None,
    };
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
            if let (Some(job), true) = (&waiting, failed > 0) {
                if output == Output::Table {
                    if job.is_empty() {
                        // An app's run: its own words.
                        let job = json_value["job"].as_str().unwrap_or_default();
                        let status = json_value["status"].as_str().unwrap_or("failed");
                        eprintln!(
                            "lote: the run is {status} ({failed} task(s) failed or stopped); see it with: lote app job show {job}; run those tasks again: lote app job reprocess {job}"
                        );
                    } else {
                        eprintln!(
                            "lote: {failed} task(s) failed; see them with: lote task list {job} --state failed"
                        );
                    }
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

/// Runs one command against the server: each noun's file sends its
/// requests and shapes the reply.
async fn execute(
    command: ClientCommand,
    client: Client,
    output: Output,
) -> Result<Rendered, ClientError> {
    match command {
        ClientCommand::Whoami => Ok(Some(render::render(client.call(&Request::Whoami).await?))),
        ClientCommand::Account(cmd) => account::run(cmd, &client).await,
        ClientCommand::Pool(cmd) => pool::run(cmd, &client).await,
        ClientCommand::Node(cmd) => node::run(cmd, &client).await,
        ClientCommand::Job(cmd) => job::run(cmd, &client).await,
        ClientCommand::Schedule(cmd) => schedule::run(cmd, &client).await,
        ClientCommand::Task(cmd) => task::run(cmd, &client, output).await,
        ClientCommand::Blob(cmd) => Ok(Some(blob::blob(&client, cmd).await?)),
        ClientCommand::App(cmd) => app::run(cmd, &client).await,
        ClientCommand::Package(cmd) => {
            Ok(Some(render::render(package::package(&client, cmd).await?)))
        }
        ClientCommand::Events(cmd) => events::run(cmd, &client, output).await,
    }
}
