//! One attempt of a task on this node: its directory, resource files,
//! process, time limit, outputs and report; the attempts running now and
//! the ones recently finished.

use super::*;

/// The attempts this agent ran most recently, oldest first out.
pub(super) struct Finished {
    order: std::collections::VecDeque<AttemptRef>,
    set: std::collections::HashSet<AttemptRef>,
}

/// How many ended attempts the agent remembers: far more than can be
/// listed between a completion and the server folding it.
pub(super) const FINISHED_REMEMBERED: usize = 4096;

impl Finished {
    /// Full size from the start: growing the list and the set while the
    /// first few thousand attempts ran (copies into freshly faulted pages)
    /// was 5% of an agent's CPU on the compute benchmark, whose job of
    /// 10,000 tasks ends before an agent's list is full.
    pub(super) fn new() -> Finished {
        Finished {
            order: std::collections::VecDeque::with_capacity(FINISHED_REMEMBERED + 1),
            set: std::collections::HashSet::with_capacity(FINISHED_REMEMBERED + 1),
        }
    }

    pub(super) fn contains(&self, a: &AttemptRef) -> bool {
        self.set.contains(a)
    }
    pub(super) fn insert(&mut self, a: AttemptRef) {
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

pub(super) static FINISHED: std::sync::OnceLock<std::sync::Mutex<Finished>> =
    std::sync::OnceLock::new();

pub(super) fn finished() -> std::sync::MutexGuard<'static, Finished> {
    FINISHED
        .get_or_init(|| std::sync::Mutex::new(Finished::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub(super) fn attempt_dir(root: &Path, a: &AttemptRef) -> PathBuf {
    files::attempt_dir(root, a)
}

pub(super) fn launch_failure(why: String) -> TaskResult {
    TaskResult {
        exit_code: None,
        signal: None,
        duration_ms: 0,
        failure: Some((FailureCategory::LaunchFailure, why)),
    }
}

/// An input (resource file or package) could not be put in place: the
/// process never started.
pub(super) fn resource_failure(why: String) -> TaskResult {
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
pub(super) struct RunningAttempt {
    process: Option<proc_tree::Tracked>,
    /// The server said to stop it before its process started.
    cancelled: bool,
    /// Wakes an attempt still waiting for a free slot when it is cancelled.
    cancel: Arc<tokio::sync::Notify>,
    /// Its process and uploads are done and its completion is on its way
    /// to the server: polls list it apart from the running ones, so that
    /// it is neither handed out again nor, once its completion is folded,
    /// answered as one to stop (an answer that only costs a round trip).
    pub(super) reporting: bool,
}

/// The attempts running now. A std mutex: held for a few map operations,
/// never across an await, and reachable from the SIGTERM handler.
pub(super) static ATTEMPTS: std::sync::OnceLock<
    std::sync::Mutex<HashMap<AttemptRef, RunningAttempt>>,
> = std::sync::OnceLock::new();

pub(super) fn attempts() -> std::sync::MutexGuard<'static, HashMap<AttemptRef, RunningAttempt>> {
    ATTEMPTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Kills an attempt the server no longer counts as running here.
pub(super) fn cancel_attempt(a: &AttemptRef) {
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

pub(super) fn kill_all_attempts() {
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
    // What the start task left running, and anything else in the node's
    // groups.
    if let Some(groups) = super::NODE_GROUPS.get() {
        groups.kill_all();
    }
}

pub(super) struct TaskEnv {
    pub(super) cred: NodeCredential,
    pub(super) root: PathBuf,
    pub(super) shared: PathBuf,
    /// The start task's directory (`ROOT/starttask`).
    pub(super) startup: PathBuf,
    /// Where the pool's secrets are (`ROOT/secrets`).
    pub(super) secrets: PathBuf,
    /// How a job manager task reaches the server: the agent's address and
    /// the certificate fingerprint it pins, if any.
    pub(super) server: String,
    pub(super) server_fingerprint: Option<String>,
    /// The node's task slots: the server may place more attempts here than
    /// slots (prefetch); they start as slots free.
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    pub(super) slot_count: u32,
    pub(super) stager: Stager,
    pub(super) reports: Reporter,
    /// The pool's packages, as registration said.
    pub(super) pool_packages: std::sync::Mutex<Vec<PackageRef>>,
    /// Who tasks run as (`None`: the agent's own user).
    pub(super) user: Option<super::user::TaskUser>,
    /// The node's attempt groups (`None`: no cgroups here; rlimits only).
    pub(super) groups: Option<Arc<cgroup::Groups>>,
    /// The agent's own limits (its flags): a pool may ask for less.
    pub(super) node_limits: cgroup::Limits,
    /// The pool's settings for its tasks, as registration said.
    pub(super) settings: std::sync::Mutex<crate::domain::pool::TaskSettings>,
}

impl TaskEnv {
    pub(super) fn settings(&self) -> crate::domain::pool::TaskSettings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits an attempt runs under: the pool's where it asks for
    /// less than the node gives, the pool's CPU weight where it sets one.
    pub(super) fn limits(&self) -> cgroup::Limits {
        effective_limits(self.node_limits, &self.settings())
    }

    /// Takes the pool's settings (at registration): new attempt groups get
    /// the limits they make.
    pub(super) fn apply_settings(&self, settings: crate::domain::pool::TaskSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
        if let Some(groups) = &self.groups {
            groups.set_limits(self.limits());
        }
    }

    /// Who a task (`Some((job, task))`) or the start task (`None`) runs
    /// as: the agent itself when it is not root or runs tasks as root, or
    /// when the pool elevates them; else the pool's user, or the task's
    /// own in the pool's group.
    pub(super) fn run_as(&self, task: Option<(&str, &str)>) -> Option<super::user::TaskUser> {
        use crate::domain::pool::{Elevation, UserScope};
        let pool_user = self.user?;
        let settings = self.settings();
        let elevation = match task {
            Some(_) => settings.elevation,
            None => settings.start_task_elevation,
        };
        match (elevation, settings.user_scope, task) {
            (Elevation::Admin, _, _) => None,
            (_, UserScope::Task, Some((job, task))) => Some(super::user::task_user(
                pool_user,
                &self.cred.account,
                &self.cred.pool,
                job,
                task,
            )),
            _ => Some(pool_user),
        }
    }

    /// A cgroup for one attempt, when the node has them.
    pub(super) fn attempt_group(&self) -> Result<Option<cgroup::Lease>, TaskResult> {
        self.groups
            .as_ref()
            .map(|g| g.take())
            .transpose()
            .map_err(|e| launch_failure(format!("cannot make the attempt's cgroup: {e}")))
    }
}

/// What lote tells an attempt: its ids, its tag, a manager's key, the
/// job's preparation directories.
fn attempt_vars(env: &TaskEnv, a: &Assignment, tag: &str) -> Vec<(String, String)> {
    let mut vars = vec![
        ("LOTE_JOB_ID".to_string(), a.job.to_string()),
        ("LOTE_TASK_ID".to_string(), a.task.to_string()),
        ("LOTE_TASK_ATTEMPT".to_string(), a.attempt.to_string()),
        (proc_tree::TAG_VAR.to_string(), tag.to_string()),
    ];
    vars.extend(manager_vars(env, a));
    if a.preparation.is_some() {
        vars.extend(super::job_prep::prep_vars(&env.root, &a.job));
    }
    vars
}

/// A job manager's variables: the key of its own job and the way to the
/// server, for `lote` run inside it (none for other tasks).
fn manager_vars(env: &TaskEnv, a: &Assignment) -> Vec<(String, String)> {
    let Some(key) = &a.job_key else {
        return Vec::new();
    };
    let mut vars = vec![
        ("LOTE_JOB_KEY".to_string(), key.expose().to_string()),
        ("LOTE_SERVER".to_string(), env.server.clone()),
    ];
    if let Some(fp) = &env.server_fingerprint {
        vars.push(("LOTE_TLS_FINGERPRINT".to_string(), fp.clone()));
    }
    vars
}

/// The node's limits, lowered (memory, processes) or set (CPU weight) by
/// the pool's settings.
pub(super) fn effective_limits(
    node: cgroup::Limits,
    pool: &crate::domain::pool::TaskSettings,
) -> cgroup::Limits {
    let lower = |node: Option<u64>, pool: Option<u64>| match (node, pool) {
        (Some(n), Some(p)) => Some(n.min(p)),
        (n, p) => n.or(p),
    };
    cgroup::Limits {
        memory_bytes: lower(node.memory_bytes, pool.memory_mib.map(|m| m << 20)),
        processes_max: node
            .processes_max
            .min(pool.processes_max.map_or(u64::MAX, u64::from)),
        cpu_weight: pool.cpu_weight.unwrap_or(node.cpu_weight),
    }
}

/// What the attempt's group says of a failed attempt: an out-of-memory
/// kill in it makes the failure its own category, whatever the first
/// process's end (a shell reports its killed child as exit code 137).
pub(super) fn out_of_memory(
    mut result: TaskResult,
    group: Option<&cgroup::Lease>,
    env: &TaskEnv,
) -> TaskResult {
    let Some(group) = group else {
        return result;
    };
    // Read after every attempt, failed or not: the group's counter only
    // grows, and a kill in an attempt that still succeeded must not be
    // blamed on the group's next one.
    let killed = group.group().oom_killed();
    let Some((category, _)) = &result.failure else {
        return result;
    };
    if matches!(
        category,
        FailureCategory::Timeout | FailureCategory::Terminated
    ) {
        return result;
    }
    if killed {
        let limit = env
            .limits()
            .memory_bytes
            .map(|b| format!("its memory limit of {} MiB", b >> 20))
            .unwrap_or_else(|| "the memory the node's agent may give".into());
        let how = match (result.exit_code, result.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => "no status".into(),
        };
        result.failure = Some((
            FailureCategory::OutOfMemory,
            format!("ran out of memory: its processes reached {limit} and the kernel killed one ({how})"),
        ));
    }
    result
}

impl TaskEnv {
    pub(super) fn pool_packages(&self) -> Vec<PackageRef> {
        self.pool_packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts an attempt's inputs in place: the pool's and the task's
    /// packages, then the job's and the task's resource files. The
    /// variables naming the packages.
    pub(super) async fn stage_inputs(
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

/// Whether the attempt's working directory gets files staged into it (a
/// directory that was there before is listed whatever this says).
fn inputs_in(a: &Assignment) -> bool {
    !a.job_resource_files.is_empty() || !a.spec.resource_files.is_empty()
}

/// Runs one attempt and reports it.
pub(super) async fn run_attempt(client: &Client, env: &TaskEnv, a: Assignment) {
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
    // The job's preparation first; where it failed (and the job waits for
    // it), the task does not run here and the server places it elsewhere.
    if let Some(prep) = &a.preparation {
        if !super::job_prep::prepared(client, env, &a.job, prep, &a.job_env).await {
            return;
        }
    }
    let dir = attempt_dir(&env.root, &key);
    let wd = dir.join("wd");
    let started = Instant::now();
    let tag = proc_tree::new_tag();
    let since = proc_tree::boot_ticks();
    let user = env.run_as(Some((a.job.as_str(), a.task.as_str())));
    let staged = match make_attempt_dirs(&dir) {
        Err(e) => Err(launch_failure(format!(
            "cannot create {}: {e}",
            wd.display()
        ))),
        Ok(fresh) => match env.stage_inputs(&a, &wd).await {
            // The attempt's directory and its inputs are the task's; the
            // rest of the node is not.
            Ok(apps) => super::user::give(&dir, user, 0o700)
                .and_then(|_| super::user::give_tree(&wd, user, inputs_in(&a) || !fresh))
                .map(|_| apps)
                .map_err(|e| {
                    launch_failure(format!("cannot hand {} to the task: {e}", dir.display()))
                }),
            Err(why) => Err(resource_failure(why)),
        },
    };
    let group = staged.and_then(|apps| env.attempt_group().map(|g| (apps, g)));
    let child = group.and_then(|(apps, lease)| {
        let mut vars = attempt_vars(env, &a, &tag);
        vars.extend(apps);
        let run = Run {
            command_line: &a.spec.command_line,
            job: &a.job_env,
            own: &a.spec.env,
            vars: &vars,
            dir: &dir,
            wd: &wd,
            group: lease.as_ref(),
            user,
        };
        spawn(env, run)
            .map(|child| (child, lease))
            .map_err(launch_failure)
    });
    let mut result = match child {
        Err(failed) => failed,
        Ok((mut child, lease)) => {
            let tracked = child
                .id()
                .map(|pid| proc_tree::Tracked::new(pid, tag.clone(), since, lease.as_ref()));
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
                Some(result) => out_of_memory(result, lease.as_ref(), env),
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
    reporting(&key);
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

/// The attempt's process and uploads are done; its report is next.
fn reporting(key: &AttemptRef) {
    if let Some(entry) = attempts().get_mut(key) {
        entry.reporting = true;
    }
}

/// Creates `tasks/JOB/TASK/ATTEMPT/wd`, parents first: the usual case (the
/// job's directory exists) costs three mkdir calls, not the five of
/// `create_dir_all` failing down from the leaf.
/// The job's and task's directories let a task through to its own
/// attempt (0711) but list nothing: no task learns another's ids.
/// Whether the working directory was made now (so it is empty).
pub(super) fn make_attempt_dirs(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    let made = |d: &Path| match std::fs::DirBuilder::new().mode(0o711).create(d) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        other => other.map(|_| true),
    };
    let mkdir = |d: &Path| made(d).map(|_| ());
    let task_dir = dir.parent().expect("an attempt directory has a parent");
    match mkdir(task_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(task_dir)?,
        other => other?,
    }
    mkdir(dir)?;
    made(&dir.join("wd"))
}

/// How long an attempt may run before its start is reported. One that
/// ends sooner is reported once, as completed (with its duration): for
/// short tasks that saves a durable round trip per task.
pub(super) const START_REPORT_AFTER: Duration = Duration::from_millis(20);

/// Reports the start (unless it ends first), then waits for the end; None
/// if the attempt was superseded meanwhile (it is killed).
pub(super) async fn started_and_waited(
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
