//! `lote agent`: the process on each node that runs tasks.
//!
//! It joins a pool once (join token → node credential, kept in its root),
//! registers the machine's size, then long-polls the server for attempts
//! placed on its node. Each attempt runs as a real process in its own
//! process group, in `ROOT/tasks/JOB/TASK/ATTEMPT/wd` with `stdout.txt` and
//! `stderr.txt` beside it. Start and completion are reported; a completion
//! is re-sent until the server has recorded it, across reconnects and
//! server restarts.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod attempt;
mod beat;
pub mod cgroup;
pub mod files;
mod job_prep;
mod launch;
mod proc_tree;
mod process;
mod procfs;
mod reports;
mod retention;
mod secrets;
pub mod staging;
mod start_task;
pub mod usage;
pub mod user;

use crate::api::agent::NodeCredential;
use crate::api::{Assignment, AttemptRef, Completion, Credential, Request, Response};
use crate::client::{Client, ClientConfig, ClientError};
use crate::domain::node::AgentInfo;
use crate::domain::spec::{CommandLine, PackageRef};
use crate::domain::task::{FailureCategory, TaskResult};
use crate::domain::RejectionCode;
use crate::private_file::{write_owner_only, FileError};
use crate::types::{AccountName, PoolId};
use attempt::*;
use process::*;
use reports::{NotRecorded, Reporter};
use staging::Stager;
use start_task::*;

/// How long one poll may wait on the server for work: as long as the
/// server allows, which is what keeps the node's heartbeat within its
/// lost-node timeout. An idle node calls less often the longer that is.
const POLL_WAIT_MS: u32 = crate::api::AGENT_POLL_WAIT_MS_MAX;

/// Pause between attempts to reach an unreachable server.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What the agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server: String,
    pub root: PathBuf,
    pub account: AccountName,
    pub pool: PoolId,
    /// Used once, when the root holds no node credential yet.
    pub join_token: Option<String>,
    pub task_slots: u32,
    pub name: String,
    /// Run tasks as root even when the agent is root (`--run-tasks-as-root`).
    pub tasks_as_root: bool,
    /// Most processes of the pool's task user (`--task-processes-max`).
    pub task_processes_max: u64,
    /// What each attempt may use (`--task-memory-max`, `--task-cpu-weight`,
    /// and the process count above).
    pub limits: cgroup::Limits,
    /// The node's attempt groups, made before the runtime started (with
    /// the watchdog that kills them if the agent dies); None: rlimits only.
    pub groups: Option<Arc<cgroup::Groups>>,
    /// How the server's certificate is trusted (`--tls-fingerprint`,
    /// `--tls-ca`); None: the fingerprint the join token carried, kept in
    /// node.toml, or plaintext to a server on this machine.
    pub trust: Option<crate::api::tls::Trust>,
    /// `--insecure-plaintext`.
    pub insecure_plaintext: bool,
}

impl AgentConfig {
    /// The client settings for `credential` signed with `key`, trusting
    /// the server as the flags say, else as `pinned` (from node.toml or
    /// the join token) says.
    fn client_config(
        &self,
        credential: Credential,
        key: String,
        pinned: Option<&str>,
    ) -> Result<ClientConfig, AgentError> {
        let trust = match (&self.trust, pinned) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(fp)) => Some(crate::api::tls::Trust::Fingerprint(
                crate::api::tls::parse_fingerprint(fp).map_err(AgentError::Setup)?,
            )),
            (None, None) => None,
        };
        let mut config = ClientConfig::new(self.server.clone(), credential, key).with_trust(trust);
        config.insecure_plaintext = self.insecure_plaintext;
        Ok(config)
    }
}

/// The node's groups, for the kills that have no `TaskEnv` at hand (the
/// SIGTERM handler, the end of `run`).
static NODE_GROUPS: std::sync::OnceLock<Arc<cgroup::Groups>> = std::sync::OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    File(#[from] FileError),
    #[error("{0}")]
    Setup(String),
}

/// Reads the node credential from the root, or joins with the token and
/// writes it there (owner-only).
pub async fn credential(config: &AgentConfig) -> Result<NodeCredential, AgentError> {
    let path = config.root.join("node.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return toml::from_str(&text)
                .map_err(|e| AgentError::Setup(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::new("node credential", &path)(e).into()),
    }
    let token = config.join_token.clone().ok_or_else(|| {
        AgentError::Setup(format!(
            "{} holds no node credential; pass --join-token (the pool owner gets it with: lote pool join-token {})",
            config.root.display(),
            config.pool
        ))
    })?;
    let (token, pinned) = crate::api::tls::split_join_token(&token);
    let joiner = Client::new(config.client_config(
        Credential::Join {
            account: config.account.clone(),
            pool: config.pool.clone(),
        },
        token.to_string(),
        pinned,
    )?);
    let joined = joiner
        .call(&Request::JoinPool {
            name: config.name.clone(),
        })
        .await
        .map_err(|e| match e.api().map(|a| a.kind) {
            Some(crate::api::ErrorKind::BadSignature) => AgentError::Setup(format!(
                "the server refused the join token of pool {}/{}: the token is wrong (its owner gets it with: lote pool join-token {}), or the pool does not exist or is being deleted",
                config.account, config.pool, config.pool
            )),
            _ => e.into(),
        })?;
    let Response::Joined { node, credential } = joined else {
        return Err(AgentError::Setup("unexpected reply to JoinPool".into()));
    };
    let cred = NodeCredential {
        account: config.account.clone(),
        pool: config.pool.clone(),
        node,
        credential,
        tls_fingerprint: pinned.map(str::to_string),
    };
    std::fs::create_dir_all(&config.root).map_err(FileError::new("node root", &config.root))?;
    let text = toml::to_string(&cred).map_err(|e| AgentError::Setup(e.to_string()))?;
    write_owner_only(&path, &text, "node credential", true)?;
    Ok(cred)
}

/// Runs the agent until the process is stopped.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let (root, pool) = (config.root.clone(), config.pool.clone());
    let outcome = serve(config)
        .await
        .map_err(|e| refused_credential(e, &root, &pool));
    // However it ends, no task outlives the agent that watched it.
    kill_all_attempts();
    outcome
}

/// A node credential the server stopped accepting, said as what happened
/// (the server answers an unknown node as a bad signature, so that a
/// caller cannot tell which nodes exist).
fn refused_credential(e: AgentError, root: &Path, pool: &PoolId) -> AgentError {
    let AgentError::Client(client) = &e else {
        return e;
    };
    match client.api().map(|a| a.kind) {
        Some(crate::api::ErrorKind::BadSignature) => AgentError::Setup(format!(
            "the server no longer accepts this node's credential ({}): the node was removed from pool {pool}, or the pool was deleted. This agent stops; to join again, delete that file and start with --join-token",
            root.join("node.toml").display()
        )),
        _ => e,
    }
}

async fn serve(config: AgentConfig) -> Result<(), AgentError> {
    let cred = credential(&config).await?;
    let client = Arc::new(Client::new(config.client_config(
        Credential::Node {
            account: cred.account.clone(),
            pool: cred.pool.clone(),
            node: cred.node.clone(),
        },
        cred.credential.clone(),
        cred.tls_fingerprint.as_deref(),
    )?));
    let shared_dir = config.root.join("shared");
    std::fs::create_dir_all(&shared_dir)
        .map_err(FileError::new("shared directory", &shared_dir))?;
    // The directories on the way to a task's own (tasks/JOB/TASK) must
    // let its user through whatever mask the agent was started with (a
    // local agent inherits the server's 077); what is private is made so
    // by its own mode (the credential, the cache, each attempt's 0700).
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o022) };
    let task_user = user::decide(
        &cred.account,
        &cred.pool,
        config.tasks_as_root,
        config.task_processes_max,
    );
    close_node_root(&config.root, task_user)?;
    if let Some(groups) = &config.groups {
        let _ = NODE_GROUPS.set(groups.clone());
    }
    let info = AgentInfo {
        hostname: host_name().unwrap_or_else(|| config.name.clone()),
        address: local_address(&config.server),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_mib: memory_mib(),
        task_slots: config.task_slots.max(1),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let env = Arc::new(TaskEnv {
        cred: cred.clone(),
        root: config.root.clone(),
        shared: shared_dir.clone(),
        startup: config.root.join("starttask"),
        secrets: config.root.join(secrets::SECRETS_DIR),
        server: config.server.clone(),
        server_fingerprint: match &config.trust {
            Some(crate::api::tls::Trust::Fingerprint(fp)) => Some(format!(
                "{}{}",
                crate::api::tls::FINGERPRINT_PREFIX,
                crate::api::auth::hex(fp)
            )),
            _ => cred.tls_fingerprint.clone(),
        },
        stager: Stager::new(client.clone(), config.root.clone()),
        pool_packages: std::sync::Mutex::default(),
        user: task_user,
        groups: config.groups.clone(),
        node_limits: config.limits,
        settings: std::sync::Mutex::default(),
        slots: Arc::new(tokio::sync::Semaphore::new(info.task_slots as usize)),
        slot_count: info.task_slots,
        reports: Reporter::start(client.clone(), RETRY_PAUSE),
    });
    // What attempts leave behind comes back to the agent, not to init.
    proc_tree::adopt_orphans();
    // Files whose retention ran out while the agent was down.
    retention::start(&config.root);
    // On SIGTERM (the local provider removing this node, or an operator):
    // take the running tasks down with the agent, since they run in
    // process groups of their own.
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::spawn(async move {
            term.recv().await;
            kill_all_attempts();
            std::process::exit(0);
        });
    }
    // Machine figures for autoscale formulas, riding on the polls, and a
    // heartbeat while the poll loop is away.
    beat::start(client.clone(), config.root.clone());
    loop {
        register(&client, &env, &info).await?;
        tracing::info!(node = %cred.node, "agent registered");
        let reimage = work(&client, &env, &config).await?;
        // Rebooting: everything stops, then the node registers afresh and
        // runs its start task again.
        tracing::info!(node = %cred.node, reimage, "rebooting");
        kill_all_attempts();
        job_prep::forget_all();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !attempts().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if reimage {
            let (root, task_user) = (config.root.clone(), env.user);
            tokio::task::spawn_blocking(move || {
                wipe(&root).and_then(|_| node_dirs(&root, task_user))
            })
            .await
            .map_err(|e| AgentError::Setup(format!("the reimage failed: {e}")))??;
        }
    }
}

/// What a reimage wipes: everything of the node's but its credential
/// (`node.toml`) and its log.
const WIPED_BY_REIMAGE: &[&str] = &["tasks", "starttask", "shared", "apps", "cache"];

/// Wipes the node's directories (`node_dirs` makes them anew).
fn wipe(root: &Path) -> Result<(), AgentError> {
    for name in WIPED_BY_REIMAGE {
        let dir = root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileError::new("a directory to reimage", &dir)(e).into()),
        }
    }
    Ok(())
}

/// The node's directory as tasks may see it: the root traversable only,
/// the shared directory the task user's, the cache root's alone.
fn node_dirs(root: &Path, task_user: Option<user::TaskUser>) -> Result<(), AgentError> {
    let shared = root.join("shared");
    let cache = root.join("cache");
    let tasks = root.join("tasks");
    for dir in [&shared, &cache, &tasks] {
        std::fs::create_dir_all(dir).map_err(FileError::new("node directory", dir))?;
    }
    user::close(root, 0o711).map_err(FileError::new("node root", root))?;
    user::close(&tasks, 0o711).map_err(FileError::new("tasks directory", &tasks))?;
    user::close(&cache, 0o700).map_err(FileError::new("cache directory", &cache))?;
    user::give(&shared, task_user, 0o770).map_err(FileError::new("shared directory", &shared))?;
    Ok(())
}

/// Prepares the node's directories and says who tasks run as.
fn close_node_root(root: &Path, task_user: Option<user::TaskUser>) -> Result<(), AgentError> {
    node_dirs(root, task_user)?;
    match task_user {
        Some(u) => tracing::info!(
            uid = u.uid,
            gid = u.gid,
            "tasks run as the pool's unprivileged user"
        ),
        None if user::is_root() => tracing::warn!(
            "tasks run as root (--run-tasks-as-root): every task can read this node's credential and anything else on the machine"
        ),
        // SAFETY: geteuid takes nothing and cannot fail.
        None => tracing::info!(
            uid = unsafe { libc::geteuid() },
            "the agent is not root: tasks run as the agent's own user and can read what it can"
        ),
    }
    Ok(())
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The machine's memory, from the kernel (0 when it cannot be read).
/// Share of the machine's memory one attempt may take unless
/// `--task-memory-max` says otherwise: the rest keeps the agent and the
/// machine answering while a task runs out.
pub const TASK_MEMORY_SHARE_PERCENT: u64 = 90;

/// The limits an attempt runs under, from the agent's flags.
pub fn attempt_limits(
    memory_max_mib: Option<u64>,
    cpu_weight: u32,
    processes_max: u64,
) -> cgroup::Limits {
    let default_mib = memory_mib() * TASK_MEMORY_SHARE_PERCENT / 100;
    let mib = memory_max_mib.unwrap_or(default_mib);
    cgroup::Limits {
        memory_bytes: (mib > 0).then_some(mib << 20),
        processes_max,
        cpu_weight,
    }
}

/// The node's attempt groups and their watchdog, made while the process
/// has one thread (the watchdog is forked). Without cgroups, says what
/// is lost and returns none.
pub fn attempt_groups(
    root: &Path,
    limits: cgroup::Limits,
) -> (Option<Arc<cgroup::Groups>>, Option<cgroup::Watchdog>) {
    if let Err(e) = std::fs::create_dir_all(root) {
        tracing::warn!(root = %root.display(), error = %e, "cannot create the node's root");
    }
    match cgroup::Groups::open(root, limits) {
        Ok(groups) => match cgroup::Watchdog::start(groups.bases()) {
            Ok(watchdog) => {
                // The agent's own child, never taken for what an attempt left.
                proc_tree::owned().push(watchdog.pid);
                tracing::info!(
                    groups = %groups.describe(),
                    memory_mib = limits.memory_bytes.map(|b| b >> 20),
                    processes_max = limits.processes_max,
                    cpu_weight = limits.cpu_weight,
                    "each attempt runs in a cgroup of its own"
                );
                (Some(groups), Some(watchdog))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the cgroup watchdog; tasks run with rlimits only");
                (None, None)
            }
        },
        Err(why) => {
            tracing::warn!(
                why = %why,
                "tasks run without cgroups: memory is limited per process (address space), not per attempt; there is no CPU weight and no out-of-memory report; a process that leaves the attempt's session and clears its environment escapes the kill at the attempt's end"
            );
            (None, None)
        }
    }
}

fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// The address this machine reaches the server from: what people and
/// other nodes would use to reach it. A UDP "connect" picks the route and
/// sends nothing.
fn local_address(server: &str) -> String {
    let bind = if server.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(server).map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Registers the node, then runs the pool's start task as the pool asks:
/// before any work (reported, with retries) or beside it.
async fn register(
    client: &Arc<Client>,
    env: &Arc<TaskEnv>,
    info: &AgentInfo,
) -> Result<(), AgentError> {
    let start_task = loop {
        match client
            .call(&Request::AgentRegister {
                agent: info.clone(),
            })
            .await
        {
            Ok(Response::Registered {
                start_task,
                application_packages,
                task_settings,
                heartbeat_ms,
            }) => {
                beat::set_period(heartbeat_ms);
                *env.pool_packages.lock().unwrap_or_else(|p| p.into_inner()) = application_packages;
                env.apply_settings(task_settings);
                break start_task;
            }
            Ok(_) => break None,
            Err(e) if e.is_transient() => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => return Err(e.into()),
        }
    };
    // The secrets are in place before the start task or any task runs.
    loop {
        match secrets::refresh(client, env).await {
            Ok(()) => break,
            Err(AgentError::Client(e)) if e.is_transient() => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => return Err(e),
        }
    }
    // The pool's packages are unpacked as the node joins; a start task
    // that is waited for unpacks them itself before it runs. (The stager
    // unpacks a version once, whoever asks first.)
    let packages = env.pool_packages();
    if !packages.is_empty() && start_task.as_ref().is_none_or(|s| !s.wait_for_success) {
        let env = env.clone();
        tokio::spawn(async move {
            if let Err(e) = env.stager.packages(&packages).await {
                tracing::warn!(error = %e, "the pool's packages were not unpacked as the node joined; each task tries again");
            }
        });
    }
    match start_task {
        Some(start_task) if start_task.wait_for_success => {
            run_start_task(client, env, &start_task).await?
        }
        Some(start_task) => {
            // Not waited for: the node works meanwhile, and the outcome is
            // kept beside the start task's output for people to read.
            let env = env.clone();
            tokio::spawn(async move {
                let result = run_start_task_once(&env, &start_task, 0).await;
                let text = match &result.failure {
                    None => "succeeded\n".to_string(),
                    Some((_, why)) => format!("failed: {why}\n"),
                };
                let path = env.root.join("starttask").join("result.txt");
                if let Err(e) = std::fs::write(&path, text) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot record the start task's result");
                }
            });
        }
        None => {}
    }
    Ok(())
}

/// Polls for work and runs it until the server asks for a reboot; true
/// when it asks for a reimage (directories wiped).
async fn work(
    client: &Arc<Client>,
    env: &Arc<TaskEnv>,
    config: &AgentConfig,
) -> Result<bool, AgentError> {
    // The pool's secrets epoch this loop last saw: none at first, so the
    // first poll is answered at once and the secrets are checked again.
    let mut secrets_seen = None;
    loop {
        let (mut running, mut reporting) = (Vec::new(), Vec::new());
        for (attempt, a) in attempts().iter() {
            match a.reporting {
                true => reporting.push(attempt.clone()),
                false => running.push(attempt.clone()),
            }
        }
        let (assignments, cancel, reads, reboot, reimage) = match client
            .call(&Request::AgentPoll {
                running,
                reporting,
                wait_ms: POLL_WAIT_MS,
                releases_running: job_prep::releases_running(),
                usage: beat::polling(),
                secrets_seen,
            })
            .await
        {
            Ok(Response::Work {
                assignments,
                cancel,
                reads,
                reboot,
                reimage,
                releases,
                secrets_epoch,
            }) => {
                for (job, release, job_env) in releases {
                    job_prep::start_release(client, env, job, release, job_env);
                }
                if secrets_seen != Some(secrets_epoch) {
                    secrets_seen = secrets::changed(client, env, secrets_epoch).await;
                }
                (assignments, cancel, reads, reboot, reimage)
            }
            Ok(_) => Default::default(),
            Err(e) if e.is_transient() => {
                // A node whose directory is gone was removed while the
                // server was away: nothing is left to serve.
                if !config.root.join("node.toml").exists() {
                    return Err(AgentError::Setup(format!(
                        "{} was removed; this node is gone",
                        config.root.display()
                    )));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let cancel_or_reads = !cancel.is_empty() || !reads.is_empty();
        for a in &cancel {
            cancel_attempt(a);
        }
        for read in reads {
            let client = client.clone();
            let root = env.root.clone();
            tokio::spawn(async move {
                let id = read.read;
                let result = tokio::task::spawn_blocking(move || files::answer(&root, &read))
                    .await
                    .unwrap_or_else(|e| Err(format!("the read failed: {e}")));
                let answer = Request::AgentFileData { read: id, result };
                if let Err(e) = client.call(&answer).await {
                    tracing::debug!(error = %e, "an output read was not delivered");
                }
            });
        }
        if reboot {
            return Ok(reimage);
        }
        let mut started = 0;
        for a in assignments {
            let key = AttemptRef {
                job: a.job.clone(),
                task: a.task.clone(),
                attempt: a.attempt,
            };
            {
                // An attempt that just ended is still listed until the
                // server has folded its completion: never run it twice.
                if finished().contains(&key) {
                    continue;
                }
                let mut running = attempts();
                if running.contains_key(&key) {
                    continue;
                }
                running.insert(key.clone(), RunningAttempt::default());
            }
            started += 1;
            let client = client.clone();
            let env = env.clone();
            tokio::spawn(async move {
                run_attempt(&client, &env, a).await;
                finished().insert(key.clone());
                attempts().remove(&key);
            });
        }
        if started == 0 && !cancel_or_reads {
            // Nothing new (the long poll timed out, or only attempts this
            // agent already ran came back): never poll in a tight loop.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Sends a report until the server records it. A refusal that says the
/// attempt is no longer current ends it with an error.
async fn report_until_recorded(client: &Client, report: &Request) -> Result<(), ClientError> {
    loop {
        match client.call(report).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => tokio::time::sleep(RETRY_PAUSE).await,
            Err(ClientError::Api(a))
                if matches!(
                    a.rejection,
                    Some(RejectionCode::StaleAttempt | RejectionCode::TaskNotFound)
                ) =>
            {
                return Err(ClientError::Api(a))
            }
            Err(e) => return Err(e),
        }
    }
}
