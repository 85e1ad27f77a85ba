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

use serde::{Deserialize, Serialize};

use super::reports::{NotRecorded, Reporter};
use super::staging::Stager;
use super::{files, launch, proc_tree, retention};
use crate::api::{Assignment, AttemptRef, Completion, Credential, Request, Response};
use crate::client::{Client, ClientConfig, ClientError};
use crate::domain::node::AgentInfo;
use crate::domain::spec::{CommandLine, PackageRef};
use crate::domain::task::{FailureCategory, TaskResult};
use crate::domain::RejectionCode;
use crate::private_file::{write_owner_only, FileError};
use crate::types::{AccountName, NodeId, PoolId};

/// How long one poll waits on the server for work.
const POLL_WAIT_MS: u32 = 1_000;
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
}

/// The node identity kept in `ROOT/node.toml` after joining.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeCredential {
    pub account: AccountName,
    pub pool: PoolId,
    pub node: NodeId,
    pub credential: String,
}

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
    let joiner = Client::new(ClientConfig::new(
        config.server.clone(),
        Credential::Join {
            account: config.account.clone(),
            pool: config.pool.clone(),
        },
        token,
    ));
    let Response::Joined { node, credential } = joiner
        .call(&Request::JoinPool {
            name: config.name.clone(),
        })
        .await?
    else {
        return Err(AgentError::Setup("unexpected reply to JoinPool".into()));
    };
    let cred = NodeCredential {
        account: config.account.clone(),
        pool: config.pool.clone(),
        node,
        credential,
    };
    std::fs::create_dir_all(&config.root).map_err(FileError::new("node root", &config.root))?;
    let text = toml::to_string(&cred).map_err(|e| AgentError::Setup(e.to_string()))?;
    write_owner_only(&path, &text, "node credential", true)?;
    Ok(cred)
}

/// Runs the agent until the process is stopped.
/// How often the agent reports its machine's figures. The report is also
/// its heartbeat while it is busy elsewhere (a long start task, a
/// reboot), so it is well inside the server's lost-node timeout.
const USAGE_REPORT_EVERY: Duration = Duration::from_secs(1);

pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let outcome = serve(config).await;
    // However it ends, no task outlives the agent that watched it.
    kill_all_attempts();
    outcome
}

async fn serve(config: AgentConfig) -> Result<(), AgentError> {
    let cred = credential(&config).await?;
    let client = Arc::new(Client::new(ClientConfig::new(
        config.server.clone(),
        Credential::Node {
            account: cred.account.clone(),
            pool: cred.pool.clone(),
            node: cred.node.clone(),
        },
        cred.credential.clone(),
    )));
    let shared_dir = config.root.join("shared");
    std::fs::create_dir_all(&shared_dir)
        .map_err(FileError::new("shared directory", &shared_dir))?;
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
        stager: Stager::new(client.clone(), config.root.clone()),
        pool_packages: std::sync::Mutex::default(),
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
    // Machine figures for autoscale formulas, and a heartbeat, beside the
    // work.
    {
        let client = client.clone();
        let root = config.root.clone();
        tokio::spawn(async move {
            let mut probe = super::usage::UsageProbe::default();
            let mut every = tokio::time::interval(USAGE_REPORT_EVERY);
            loop {
                every.tick().await;
                let usage = probe.sample(&root);
                if let Err(e) = client.call(&Request::AgentUsage { usage }).await {
                    tracing::debug!(error = %e, "usage report not sent");
                }
            }
        });
    }
    loop {
        register(&client, &env, &info).await?;
        tracing::info!(node = %cred.node, "agent registered");
        work(&client, &env, &config).await?;
        // Rebooting: everything stops, then the node registers afresh and
        // runs its start task again.
        tracing::info!(node = %cred.node, "rebooting");
        kill_all_attempts();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !attempts().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The machine's memory, from the kernel (0 when it cannot be read).
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
            }) => {
                *env.pool_packages.lock().unwrap_or_else(|p| p.into_inner()) = application_packages;
                break start_task;
            }
            Ok(_) => break None,
            Err(e) if e.is_transient() => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => return Err(e.into()),
        }
    };
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

/// Polls for work and runs it until the server asks for a reboot.
async fn work(
    client: &Arc<Client>,
    env: &Arc<TaskEnv>,
    config: &AgentConfig,
) -> Result<(), AgentError> {
    loop {
        let running: Vec<AttemptRef> = attempts().keys().cloned().collect();
        let (assignments, cancel, reads, reboot) = match client
            .call(&Request::AgentPoll {
                running,
                wait_ms: POLL_WAIT_MS,
            })
            .await
        {
            Ok(Response::Work {
                assignments,
                cancel,
                reads,
                reboot,
            }) => (assignments, cancel, reads, reboot),
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
            return Ok(());
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

/// The attempts this agent ran most recently, oldest first out.
struct Finished {
    order: std::collections::VecDeque<AttemptRef>,
    set: std::collections::HashSet<AttemptRef>,
}

/// How many ended attempts the agent remembers: far more than can be
/// listed between a completion and the server folding it.
const FINISHED_REMEMBERED: usize = 4096;

impl Finished {
    /// Full size from the start: growing the list and the set while the
    /// first few thousand attempts ran (copies into freshly faulted pages)
    /// was 5% of an agent's CPU on the compute benchmark, whose job of
    /// 10,000 tasks ends before an agent's list is full.
    fn new() -> Finished {
        Finished {
            order: std::collections::VecDeque::with_capacity(FINISHED_REMEMBERED + 1),
            set: std::collections::HashSet::with_capacity(FINISHED_REMEMBERED + 1),
        }
    }

    fn contains(&self, a: &AttemptRef) -> bool {
        self.set.contains(a)
    }
    fn insert(&mut self, a: AttemptRef) {
        if self.set.insert(a.clone()) {
            self.order.push_back(a);
        }
        while self.order.len() > FINISHED_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

static FINISHED: std::sync::OnceLock<std::sync::Mutex<Finished>> = std::sync::OnceLock::new();

fn finished() -> std::sync::MutexGuard<'static, Finished> {
    FINISHED
        .get_or_init(|| std::sync::Mutex::new(Finished::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn attempt_dir(root: &Path, a: &AttemptRef) -> PathBuf {
    files::attempt_dir(root, a)
}

/// Runs the pool's start task (with its retries) and reports each try; the
/// server keeps the node out of placement unless it succeeds.
async fn run_start_task(
    client: &Client,
    env: &TaskEnv,
    start_task: &crate::domain::spec::StartTask,
) -> Result<(), AgentError> {
    for attempt in 0..=start_task.retry_count_max {
        report_until_recorded(client, &Request::AgentStartTaskBegin).await?;
        let result = run_start_task_once(env, start_task, attempt).await;
        let success = result.succeeded();
        let report = Request::AgentStartTaskFinished {
            success,
            exit_code: result.exit_code,
            message: result
                .failure
                .map(|(_, why)| why)
                .unwrap_or_else(|| "succeeded".into()),
        };
        report_until_recorded(client, &report).await?;
        if success {
            return Ok(());
        }
    }
    tracing::warn!("the start task failed; this node gets no tasks");
    Ok(())
}

async fn run_start_task_once(
    env: &TaskEnv,
    start_task: &crate::domain::spec::StartTask,
    attempt: u32,
) -> TaskResult {
    let dir = env.root.join("starttask");
    let wd = dir.join("wd");
    let started = Instant::now();
    if let Err(e) = std::fs::create_dir_all(&wd) {
        return launch_failure(format!("cannot create {}: {e}", wd.display()));
    }
    let packages = env.pool_packages();
    let staged = match env.stager.packages(&packages).await {
        Ok(apps) => env
            .stager
            .fetch_resources(&start_task.resource_files, &wd)
            .await
            .map(|_| apps),
        Err(why) => Err(why),
    };
    let apps = match staged {
        Ok(apps) => apps,
        Err(why) => return resource_failure(why),
    };
    let spawned = {
        let mut vars = vec![(
            "LOTE_START_TASK_ATTEMPT".to_string(),
            (attempt + 1).to_string(),
        )];
        vars.extend(apps);
        spawn(
            env,
            &start_task.command_line,
            &start_task.env,
            &vars,
            &dir,
            &wd,
        )
    };
    match spawned {
        Ok(mut child) => wait(&mut child, None, started).await,
        Err(why) => launch_failure(why),
    }
}

fn launch_failure(why: String) -> TaskResult {
    TaskResult {
        exit_code: None,
        signal: None,
        duration_ms: 0,
        failure: Some((FailureCategory::LaunchFailure, why)),
    }
}

/// An input (resource file or package) could not be put in place: the
/// process never started.
fn resource_failure(why: String) -> TaskResult {
    TaskResult {
        exit_code: None,
        signal: None,
        duration_ms: 0,
        failure: Some((FailureCategory::ResourceFile, why)),
    }
}

/// An attempt this agent runs: its process group leader and the tag its
/// descendants inherit, once started.
#[derive(Debug, Default, Clone)]
struct RunningAttempt {
    process: Option<proc_tree::Tracked>,
    /// The server said to stop it before its process started.
    cancelled: bool,
    /// Wakes an attempt still waiting for a free slot when it is cancelled.
    cancel: Arc<tokio::sync::Notify>,
}

/// The attempts running now. A std mutex: held for a few map operations,
/// never across an await, and reachable from the SIGTERM handler.
static ATTEMPTS: std::sync::OnceLock<std::sync::Mutex<HashMap<AttemptRef, RunningAttempt>>> =
    std::sync::OnceLock::new();

fn attempts() -> std::sync::MutexGuard<'static, HashMap<AttemptRef, RunningAttempt>> {
    ATTEMPTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Kills an attempt the server no longer counts as running here.
fn cancel_attempt(a: &AttemptRef) {
    let process = {
        let mut running = attempts();
        let Some(entry) = running.get_mut(a) else {
            return;
        };
        entry.cancelled = true;
        entry.cancel.notify_one();
        entry.process.clone()
    };
    if let Some(process) = process {
        tracing::info!(task = %a.task, attempt = a.attempt, "stopping a superseded attempt");
        process.kill();
    }
}

fn kill_all_attempts() {
    let all: Vec<_> = {
        let mut running = attempts();
        for a in running.values_mut() {
            a.cancelled = true;
            a.cancel.notify_one();
        }
        running.values().filter_map(|a| a.process.clone()).collect()
    };
    for process in all {
        process.kill();
    }
}

struct TaskEnv {
    cred: NodeCredential,
    root: PathBuf,
    shared: PathBuf,
    /// The node's task slots: the server may place more attempts here than
    /// slots (prefetch); they start as slots free.
    slots: Arc<tokio::sync::Semaphore>,
    slot_count: u32,
    stager: Stager,
    reports: Reporter,
    /// The pool's packages, as registration said.
    pool_packages: std::sync::Mutex<Vec<PackageRef>>,
}

impl TaskEnv {
    fn pool_packages(&self) -> Vec<PackageRef> {
        self.pool_packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts an attempt's inputs in place: the pool's and the task's
    /// packages, then the job's and the task's resource files. The
    /// variables naming the packages.
    async fn stage_inputs(
        &self,
        a: &Assignment,
        wd: &Path,
    ) -> Result<Vec<(String, String)>, String> {
        let mut refs = self.pool_packages();
        refs.extend(a.spec.application_packages.iter().cloned());
        if refs.is_empty() && a.job_resource_files.is_empty() && a.spec.resource_files.is_empty() {
            return Ok(Vec::new());
        }
        let apps = self.stager.packages(&refs).await?;
        self.stager
            .fetch_resources(&a.job_resource_files, wd)
            .await?;
        self.stager
            .fetch_resources(&a.spec.resource_files, wd)
            .await?;
        Ok(apps)
    }
}

/// Runs one attempt and reports it.
async fn run_attempt(client: &Client, env: &TaskEnv, a: Assignment) {
    let key = AttemptRef {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
    };
    // Prefetched work waits here for its slots, or for being moved away.
    let need = a.spec.required_slots.clamp(1, env.slot_count);
    let cancel = attempts().entry(key.clone()).or_default().cancel.clone();
    let slots = tokio::select! {
        permit = env.slots.clone().acquire_many_owned(need) => match permit {
            Ok(p) => p,
            Err(_) => return,
        },
        _ = cancel.notified() => return,
    };
    if attempts().get(&key).is_some_and(|e| e.cancelled) {
        return;
    }
    let dir = attempt_dir(&env.root, &key);
    let wd = dir.join("wd");
    let started = Instant::now();
    let tag = proc_tree::new_tag();
    let since = proc_tree::boot_ticks();
    let staged = match make_attempt_dirs(&dir) {
        Err(e) => Err(launch_failure(format!(
            "cannot create {}: {e}",
            wd.display()
        ))),
        Ok(()) => env.stage_inputs(&a, &wd).await.map_err(resource_failure),
    };
    let child = staged.and_then(|apps| {
        let mut vars = vec![
            ("LOTE_JOB_ID".to_string(), a.job.to_string()),
            ("LOTE_TASK_ID".to_string(), a.task.to_string()),
            ("LOTE_TASK_ATTEMPT".to_string(), a.attempt.to_string()),
            (proc_tree::TAG_VAR.to_string(), tag.clone()),
        ];
        vars.extend(apps);
        spawn(env, &a.spec.command_line, &a.spec.env, &vars, &dir, &wd).map_err(launch_failure)
    });
    let mut result = match child {
        Err(failed) => failed,
        Ok(mut child) => {
            let tracked = child
                .id()
                .map(|pid| proc_tree::Tracked::new(pid, tag.clone(), since));
            let cancelled = {
                let mut running = attempts();
                let entry = running.entry(key.clone()).or_default();
                entry.process = tracked.clone();
                entry.cancelled
            };
            if cancelled {
                if let Some(t) = &tracked {
                    t.kill();
                }
            }
            let result = started_and_waited(client, &a, &mut child, started).await;
            // Whatever it left behind, in its group or detached from it.
            if let Some(t) = tracked.clone() {
                // A short task leaves a few pids to probe: cheaper done here
                // than handed to another thread and back.
                if !t.kill_if_cheap() {
                    let _ = tokio::task::spawn_blocking(move || t.kill()).await;
                }
            }
            // Gone: nothing of it is left to kill (its pid may be reused).
            if let Some(entry) = attempts().get_mut(&key) {
                entry.process = None;
            }
            match result {
                Some(result) => result,
                None => return,
            }
        }
    };
    // Outputs go while the slots are held: the node's disk and network
    // are the task's until its files are out.
    let mut outputs = Vec::new();
    let ran = !matches!(
        result.failure,
        Some((
            FailureCategory::LaunchFailure | FailureCategory::ResourceFile,
            _
        ))
    );
    if ran && !a.spec.output_files.is_empty() && !attempts().get(&key).is_some_and(|e| e.cancelled)
    {
        match env
            .stager
            .upload_outputs(&a.spec.output_files, &dir, result.succeeded())
            .await
        {
            Ok(manifest) => outputs = manifest,
            Err(why) => result.failure = Some((FailureCategory::OutputFile, why)),
        }
    }
    // The slots are free once the process and its uploads are done,
    // before the report.
    drop(slots);
    let completion = Completion {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
        result,
        outputs,
    };
    match env.reports.report(completion).await {
        Ok(()) => {}
        Err(e @ NotRecorded::Superseded(_)) => {
            tracing::info!(task = %a.task, error = %e, "completion not recorded")
        }
        Err(e) => tracing::warn!(task = %a.task, error = %e, "completion not recorded"),
    }
    let retention = a
        .spec
        .constraints
        .retention_secs
        .unwrap_or(retention::DEFAULT_SECS);
    retention::schedule(&dir, retention);
}

/// Creates `tasks/JOB/TASK/ATTEMPT/wd`, parents first: the usual case (the
/// job's directory exists) costs three mkdir calls, not the five of
/// `create_dir_all` failing down from the leaf.
fn make_attempt_dirs(dir: &Path) -> std::io::Result<()> {
    let mkdir = |d: &Path| match std::fs::create_dir(d) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    };
    let task_dir = dir.parent().expect("an attempt directory has a parent");
    match mkdir(task_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(task_dir)?,
        other => other?,
    }
    mkdir(dir)?;
    mkdir(&dir.join("wd"))
}

/// How long an attempt may run before its start is reported. One that
/// ends sooner is reported once, as completed (with its duration): for
/// short tasks that saves a durable round trip per task.
const START_REPORT_AFTER: Duration = Duration::from_millis(20);

/// Reports the start (unless it ends first), then waits for the end; None
/// if the attempt was superseded meanwhile (it is killed).
async fn started_and_waited(
    client: &Client,
    a: &Assignment,
    child: &mut Proc,
    started: Instant,
) -> Option<TaskResult> {
    if let Ok(status) = tokio::time::timeout(START_REPORT_AFTER, child.wait()).await {
        return Some(classify(status, started));
    }
    let report = Request::AgentStarted {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
    };
    if let Err(e) = report_until_recorded(client, &report).await {
        // Superseded (requeued, terminated): stop it.
        tracing::info!(task = %a.task, error = %e, "attempt superseded; killing it");
        kill_group(child);
        let _ = child.wait().await;
        return None;
    }
    let limit = a
        .spec
        .constraints
        .max_wall_clock_secs
        .map(Duration::from_secs);
    Some(wait(child, limit, started).await)
}

/// A task's running process, started by [`launch`] or, where that defers,
/// by tokio's `Command`.
enum Proc {
    Launched(launch::Launched),
    /// The guard marks it as the agent's own while it is kept.
    Command {
        child: tokio::process::Child,
        _owned: proc_tree::Owned,
    },
}

impl Proc {
    /// Its pid until it has been waited for (then it may be reused).
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Launched(p) => Some(p.id()).filter(|_| !p.ended()),
            Proc::Command { child, .. } => child.id(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Launched(p) => p.wait().await,
            Proc::Command { child, .. } => child.wait().await,
        }
    }
}

/// Starts a command in `wd` with its output beside it, in a process group
/// of its own, with the node's `LOTE_*` variables, `vars` and `own` (the
/// task's or start task's variables), marked as the agent's own while it
/// is kept.
fn spawn(
    env: &TaskEnv,
    command_line: &CommandLine,
    own: &[crate::domain::EnvVar],
    vars: &[(String, String)],
    dir: &Path,
    wd: &Path,
) -> Result<Proc, String> {
    let open = |name: &str| {
        std::fs::File::create(dir.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
    };
    let (program, args): (&OsStr, Vec<&OsStr>) = match command_line {
        CommandLine::Shell(line) => ("/bin/sh".as_ref(), vec!["-c".as_ref(), line.as_ref()]),
        CommandLine::Argv(argv) => (
            argv[0].as_ref(),
            argv[1..].iter().map(|a| a.as_ref()).collect(),
        ),
    };
    let fixed: [(&OsStr, &OsStr); 5] = [
        ("LOTE_ACCOUNT".as_ref(), env.cred.account.as_str().as_ref()),
        ("LOTE_POOL_ID".as_ref(), env.cred.pool.as_str().as_ref()),
        ("LOTE_NODE_ID".as_ref(), env.cred.node.as_str().as_ref()),
        ("LOTE_TASK_WORKING_DIR".as_ref(), wd.as_os_str()),
        ("LOTE_NODE_SHARED_DIR".as_ref(), env.shared.as_os_str()),
    ];
    // Later entries win: the task's own, then the attempt's, then the node's.
    let vars: Vec<(&OsStr, &OsStr)> = own
        .iter()
        .map(|v| (v.name.as_ref(), v.value.as_ref()))
        .chain(vars.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
        .chain(fixed)
        .collect();
    let cannot = |e: std::io::Error| match command_line {
        CommandLine::Argv(argv) => format!("cannot start {:?}: {e}", argv[0]),
        CommandLine::Shell(_) => format!("cannot start /bin/sh: {e}"),
    };
    let stdin = dev_null_file();
    if let Some(stdin) = stdin {
        let (stdout, stderr) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        let spec = launch::Launch {
            program,
            args: &args,
            dir: wd,
            stdin,
            stdout: &stdout,
            stderr: &stderr,
            env: &vars,
        };
        if let Some(started) = launch::launch(&spec) {
            // The child creates its output files; when the launch fails,
            // creating them here tells whether they were the cause.
            return started.map(Proc::Launched).map_err(|e| {
                match open("stdout.txt").and_then(|_| open("stderr.txt")) {
                    Err(why) => why,
                    Ok(_) => cannot(e),
                }
            });
        }
    }
    let (stdout, stderr) = (open("stdout.txt")?, open("stderr.txt")?);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&args)
        .current_dir(wd)
        .stdin(
            stdin
                .and_then(|f| f.try_clone().ok())
                .map_or_else(std::process::Stdio::null, std::process::Stdio::from),
        )
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a timeout or a kill takes every child.
        .process_group(0)
        .kill_on_drop(false)
        .envs(vars);
    proc_tree::spawn_owned(&mut cmd)
        .map(|(child, _owned)| Proc::Command { child, _owned })
        .map_err(cannot)
}

/// /dev/null for a task's stdin, opened once: posix_spawn duplicates it
/// into the child, `Command` gets a copy.
fn dev_null_file() -> Option<&'static std::fs::File> {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
}

fn kill_group(child: &Proc) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads (it was started with process_group(0)).
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

async fn wait(child: &mut Proc, limit: Option<Duration>, started: Instant) -> TaskResult {
    let status = match limit {
        Some(limit) => {
            match tokio::time::timeout(limit.saturating_sub(started.elapsed()), child.wait()).await
            {
                Ok(status) => status,
                Err(_) => {
                    kill_group(child);
                    let _ = child.wait().await;
                    return TaskResult {
                        exit_code: None,
                        signal: Some(libc::SIGKILL),
                        duration_ms: started.elapsed().as_millis() as u64,
                        failure: Some((
                            FailureCategory::Timeout,
                            format!(
                                "ran past its limit of {}s; killed with its process group",
                                limit.as_secs()
                            ),
                        )),
                    };
                }
            }
        }
        None => child.wait().await,
    };
    // What it left behind is the caller's: a task's attempt is swept by
    // its `proc_tree::Tracked`. (The process has no pid here any more: a
    // group kill by it could reach a stranger that took the pid.)
    classify(status, started)
}

/// What an attempt's exit status means.
fn classify(status: std::io::Result<std::process::ExitStatus>, started: Instant) -> TaskResult {
    let duration_ms = started.elapsed().as_millis() as u64;
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.success() => TaskResult {
            exit_code: Some(0),
            signal: None,
            duration_ms,
            failure: None,
        },
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => TaskResult {
                exit_code: Some(code),
                signal: None,
                duration_ms,
                failure: Some((FailureCategory::NonZeroExit, format!("exit code {code}"))),
            },
            (None, signal) => TaskResult {
                exit_code: None,
                signal,
                duration_ms,
                failure: Some((
                    FailureCategory::Signal,
                    format!("killed by signal {}", signal.unwrap_or(0)),
                )),
            },
        },
        Err(e) => TaskResult {
            exit_code: None,
            signal: None,
            duration_ms,
            failure: Some((
                FailureCategory::LaunchFailure,
                format!("lost the process: {e}"),
            )),
        },
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
