//! What a client may ask: the one request enum, and the family each
//! request belongs to (the server routes by family, one file each).

use serde::{Deserialize, Serialize};

use super::agent::{AttemptRef, Completion, FileAnswer, OutputStream};
use crate::domain::account::KeyKind;
use crate::domain::job::{DisableTasks, JobSpec};
use crate::domain::node::AgentInfo;
use crate::domain::pool::{Deallocation, PoolSpec};
use crate::domain::task::TaskSpec;
use crate::types::{AccountName, JobId, NodeId, PoolId, TaskId, Timestamp};

/// Most tasks in one [`Request::AddTasks`].
pub const ADD_TASKS_BATCH_MAX: usize = 1000;

/// Longest a [`Request::WaitJob`] waits, milliseconds (within every
/// client's call timeout).
pub const WAIT_JOB_MS_MAX: u32 = 20_000;

/// Longest an agent may ask its poll to wait, milliseconds (within every
/// client's call timeout). The server parks it for less: see
/// `supervisors::poll_wait_max`.
pub const AGENT_POLL_WAIT_MS_MAX: u32 = 20_000;

/// Most bytes of a reason given to terminate a job or a task.
pub const REASON_BYTES_MAX: usize = 4096;

/// Most bytes of a host name, address or version an agent reports.
pub const AGENT_LABEL_BYTES_MAX: usize = 256;

/// Most bytes of a message an agent reports (a start task's failure, a
/// task's failure); longer ones are cut, since the agent cannot do better.
pub const AGENT_MESSAGE_BYTES_MAX: usize = 8 * 1024;

/// `field is N bytes; at most MAX` when `value` is over `max`.
fn within(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is {} bytes; at most {max}", value.len()));
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    const MARK: &str = " [cut]";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

/// What a client may ask. Which credential may ask what is checked by the
/// server: account management needs the admin key, everything about pools,
/// jobs and tasks an account key, joining a pool its join token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// Who the server thinks you are.
    Whoami,

    // The administrator's: accounts and their keys.
    CreateAccount {
        name: AccountName,
        request_id: Option<uuid::Uuid>,
    },
    ListAccounts,
    ShowAccount {
        name: AccountName,
    },
    DisableAccount {
        name: AccountName,
    },
    EnableAccount {
        name: AccountName,
    },
    DeleteAccount {
        name: AccountName,
    },
    ShowKeys {
        name: AccountName,
    },
    RegenerateKey {
        name: AccountName,
        key: KeyKind,
    },

    // An account's: pools, nodes, jobs, tasks, events. `spec.account` is
    // ignored: everything is in the caller's own account.
    CreatePool {
        spec: PoolSpec,
        request_id: Option<uuid::Uuid>,
    },
    ListPools,
    ShowPool {
        pool: PoolId,
    },
    ResizePool {
        pool: PoolId,
        target_nodes: u32,
        deallocation: Deallocation,
    },
    StopResize {
        pool: PoolId,
    },
    EnableAutoscale {
        pool: PoolId,
        formula: String,
        evaluation_interval_secs: u64,
    },
    DisableAutoscale {
        pool: PoolId,
    },
    /// Refused while jobs on the pool have queued or running tasks,
    /// unless `force`: then those jobs are terminated ("pool deleted").
    /// Change the pool's start task and application packages. Nodes take
    /// them as they join and after a reboot or reimage; running nodes keep
    /// what they have until then.
    UpdatePool {
        pool: PoolId,
        start_task: Option<crate::domain::pool::StartTaskUpdate>,
        /// The new list, replacing the old; `None` keeps it.
        application_packages: Option<Vec<crate::domain::spec::PackageRef>>,
    },
    DeletePool {
        pool: PoolId,
        force: bool,
    },
    /// The token agents use to join this pool.
    /// A new join token for the pool: the old one joins no more nodes;
    /// nodes already in keep working. Answers with the new token.
    RotateJoinToken {
        pool: PoolId,
    },
    ShowJoinToken {
        pool: PoolId,
    },
    ListNodes {
        pool: PoolId,
    },
    ShowNode {
        pool: PoolId,
        node: NodeId,
    },
    /// Stop placing tasks on the node (running ones finish).
    DisableNode {
        pool: PoolId,
        node: NodeId,
    },
    EnableNode {
        pool: PoolId,
        node: NodeId,
    },
    /// Restart the node's agent: its tasks are requeued, the start task
    /// runs again, then it takes work.
    RebootNode {
        pool: PoolId,
        node: NodeId,
    },
    /// A reboot that also wipes the node's directories (tasks, start task,
    /// shared, packages, download cache): it comes back as a fresh node.
    ReimageNode {
        pool: PoolId,
        node: NodeId,
    },
    /// Take the node out of its pool. `deallocation` says what happens to
    /// its tasks: requeue (killed, queued again), terminate (killed,
    /// failed) or taskcompletion (no new work; removed once they end).
    RemoveNode {
        pool: PoolId,
        node: NodeId,
        deallocation: Deallocation,
    },
    CreateJob {
        spec: JobSpec,
        request_id: Option<uuid::Uuid>,
    },
    ListJobs,
    ShowJob {
        job: JobId,
    },
    /// Answers the job as soon as none of its tasks is unfinished, else
    /// after `wait_ms` (at most [`WAIT_JOB_MS_MAX`]) as it is then: a
    /// client waits for a job without polling, and learns of its end
    /// within a log round.
    WaitJob {
        job: JobId,
        wait_ms: u32,
    },
    DisableJob {
        job: JobId,
        disable_tasks: DisableTasks,
    },
    EnableJob {
        job: JobId,
    },
    TerminateJob {
        job: JobId,
        reason: String,
    },
    DeleteJob {
        job: JobId,
    },
    /// New settings for a job: the whole spec, of which only priority,
    /// the wall-clock limit, task retries, `on_all_tasks_complete`,
    /// `on_task_failure` and metadata may differ.
    UpdateJob {
        spec: crate::domain::job::JobSpec,
    },
    /// Adds up to [`ADD_TASKS_BATCH_MAX`] tasks in one atomic, durable step.
    AddTasks {
        job: JobId,
        tasks: Vec<TaskSpec>,
        request_id: Option<uuid::Uuid>,
    },
    /// One page of a job's tasks in id order: at most `limit` (capped at
    /// 1000; 0 means 1000) after task `after`. The reply's `next` is the
    /// `after` of the next page.
    ListTasks {
        job: JobId,
        after: Option<TaskId>,
        limit: u32,
    },
    ShowTask {
        job: JobId,
        task: TaskId,
    },
    TerminateTask {
        job: JobId,
        task: TaskId,
        reason: String,
    },
    DeleteTask {
        job: JobId,
        task: TaskId,
    },
    /// Up to `max_bytes` (capped at [`OUTPUT_CHUNK_MAX`]) of an attempt's
    /// stdout or stderr from `offset`, read from its node by the agent.
    /// `attempt` 0 means the task's latest attempt.
    ReadTaskOutput {
        job: JobId,
        task: TaskId,
        attempt: u32,
        stream: OutputStream,
        offset: u64,
        max_bytes: u32,
    },
    /// Streams the caller's events from log position `from` (0: only new
    /// ones) as [`ServerFrame::Event`]s until cancelled or disconnected.
    TailEvents {
        from: u64,
    },

    /// A node agent, signed with the pool's join token, asks to join.
    JoinPool {
        /// The agent's host name, for people.
        name: String,
    },

    // A node agent's, signed with its node credential.
    /// The agent is up: its machine's size. Idempotent for an agent that
    /// restarts on a node that is already up.
    AgentRegister {
        agent: AgentInfo,
    },
    /// The attempts placed on this node and not started yet; waits up to
    /// `wait_ms` for one when there are none (long poll), and never longer
    /// than a third of the server's lost-node timeout (the next poll is
    /// the node's heartbeat). `running` lists
    /// the attempts the agent runs now, so the server can say which of
    /// them to stop.
    AgentPoll {
        running: Vec<AttemptRef>,
        /// Attempts that ended here whose completion report is on its way:
        /// not handed out again, and not answered as ones to stop.
        reporting: Vec<AttemptRef>,
        wait_ms: u32,
        /// Jobs whose release this agent runs now (not handed out again).
        releases_running: Vec<JobId>,
        /// The machine's figures, when a report is due: an idle agent's
        /// poll is its only call.
        usage: Option<crate::api::agent::NodeUsage>,
        /// The pool's secrets epoch the agent last saw in a [`Response::Work`]
        /// (None before its first poll): a poll whose epoch is not the
        /// pool's is answered at once, and the agent fetches the secrets.
        secrets_seen: Option<u64>,
    },
    /// A job's preparation ended on this node (for good: after its tries).
    AgentJobPreparationEnded {
        job: JobId,
        status: crate::domain::job_prep::NodeTaskStatus,
    },
    /// A job's release ended on this node.
    AgentJobReleaseEnded {
        job: JobId,
        status: crate::domain::job_prep::NodeTaskStatus,
    },
    /// The pool's start task begins on this node (again, after a failure).
    AgentStartTaskBegin,
    /// The start task ended; the node takes tasks only after a success.
    AgentStartTaskFinished {
        success: bool,
        exit_code: Option<i32>,
        message: String,
    },
    /// The attempt's process started.
    AgentStarted {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    /// Attempts that ended (1 to [`AGENT_COMPLETIONS_MAX`]), answered by
    /// [`Response::Reported`], one result each. Sending one again is
    /// harmless: (task, attempt) is recorded once.
    AgentCompleted {
        completions: Vec<Completion>,
    },
    /// The answer to a [`FileRead`] the server handed out in `Work`.
    AgentFileData {
        read: u64,
        result: Result<FileAnswer, String>,
    },
    /// Why a task is not running yet: every reason, with its numbers.
    ExplainTask {
        job: JobId,
        task: TaskId,
    },
    /// Why a job's queued tasks wait, grouped by the reasons they share.
    ExplainJob {
        job: JobId,
    },
    /// The agent's machine figures for autoscale (`$CPUPercent`, ...).
    AgentUsage {
        usage: crate::api::agent::NodeUsage,
    },
    /// Evaluates a formula (or the pool's own, when `None`) against the
    /// pool's data now, with a trace; changes nothing.
    EvaluateAutoscale {
        pool: PoolId,
        formula: Option<String>,
    },
    /// The pool's recorded autoscale runs, the newest `limit`.
    AutoscaleHistory {
        pool: PoolId,
        limit: u32,
    },
    /// What a formula would have set at each step over the pool's
    /// recorded history, beside what really happened.
    ReplayAutoscale {
        pool: PoolId,
        formula: String,
        from: Timestamp,
        to: Timestamp,
        every_secs: u64,
    },

    // The blob store: an account's, or a node's for its account.
    /// The account's containers that hold at least one blob.
    ListContainers,
    /// Blobs whose names start with `prefix`, in name order, after `after`.
    ListBlobs {
        container: String,
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    ShowBlob {
        container: String,
        name: String,
    },
    DeleteBlob {
        container: String,
        name: String,
    },
    /// Starts writing a blob; chunks follow, then [`Request::FinishUpload`].
    /// Nothing is visible under the name until then.
    BeginUpload {
        container: String,
        name: String,
    },
    /// Bytes at `offset` of an upload. Chunks may arrive out of order
    /// within the blob window (`BLOB_WINDOW_CHUNKS`) of the next expected one.
    UploadChunk {
        upload: u64,
        offset: u64,
        /// Travels as the call's [`Call::bulk`], not in its body.
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// Ends an upload: the store checks `size` and the SHA-256 the
    /// uploader computed, then makes the blob visible.
    FinishUpload {
        upload: u64,
        size: u64,
        sha256: String,
    },
    AbortUpload {
        upload: u64,
    },
    /// Part of the blob whose content has checksum `sha256` (from
    /// [`Request::ShowBlob`]), so a download never mixes two versions.
    ReadBlob {
        container: String,
        name: String,
        sha256: String,
        offset: u64,
        max_bytes: u32,
    },

    // Application packages (zips unpacked on the nodes that use them).
    /// Starts uploading a package version; then chunks and
    /// [`Request::FinishUpload`], which checks the archive before storing.
    BeginPackageUpload {
        id: String,
        version: String,
    },
    ListPackages,
    /// Makes `version` the one used by references that name no version.
    SetDefaultPackageVersion {
        id: String,
        version: String,
    },
    DeletePackageVersion {
        id: String,
        version: String,
    },
    /// Which blob a package reference means now (the default version when
    /// `version` is None).
    ResolvePackage {
        id: String,
        version: Option<String>,
    },

    // The files API: a task's or a node's files, read through its agent.
    /// Lists `path` (a directory, relative to the attempt's directory:
    /// `wd/…`, `stdout.txt`, `stderr.txt`). `attempt` 0: the latest.
    ListTaskFiles {
        job: JobId,
        task: TaskId,
        attempt: u32,
        path: String,
        recursive: bool,
    },
    ReadTaskFile {
        job: JobId,
        task: TaskId,
        attempt: u32,
        path: String,
        offset: u64,
        max_bytes: u32,
    },
    /// Lists `path` under the node's directory (`shared`, `starttask`,
    /// `tasks`, `apps`).
    ListNodeFiles {
        pool: PoolId,
        node: NodeId,
        path: String,
        recursive: bool,
    },
    ReadNodeFile {
        pool: PoolId,
        node: NodeId,
        path: String,
        offset: u64,
        max_bytes: u32,
    },
    /// Adds a secret to a pool or replaces the one of its name; the
    /// pool's nodes get it within seconds.
    SetPoolSecret {
        pool: PoolId,
        secret: crate::domain::pool::PoolSecret,
    },
    RemovePoolSecret {
        pool: PoolId,
        name: String,
    },
    /// An agent asking for its pool's secrets when they changed since
    /// `generation` (and at registration, with `None`).
    AgentSecrets {
        generation: Option<u32>,
    },

    // Job schedules (the seed's work items).
    CreateSchedule {
        spec: crate::domain::schedule::ScheduleSpec,
        request_id: Option<uuid::Uuid>,
    },
    /// New template and timing for the runs to come.
    UpdateSchedule {
        spec: crate::domain::schedule::ScheduleSpec,
    },
    ListSchedules,
    ShowSchedule {
        schedule: JobId,
    },
    DisableSchedule {
        schedule: JobId,
    },
    EnableSchedule {
        schedule: JobId,
    },
    /// No more runs; the active job is terminated.
    TerminateSchedule {
        schedule: JobId,
    },
    /// The schedule and every job it created.
    DeleteSchedule {
        schedule: JobId,
    },
    /// One run now, outside the recurrence.
    RunScheduleNow {
        schedule: JobId,
    },

    // Apps: programs published with a definition (app.toml), run with
    // parameters and input files.
    /// Publishes a version of an app from its definition's text; its
    /// application package (same id and version) is uploaded first.
    PublishApp {
        definition: String,
        make_default: bool,
    },
    ListApps,
    ShowApp {
        app: String,
    },
    SetDefaultAppVersion {
        app: String,
        version: String,
    },
    /// A run: checked whole against the definition (every problem named),
    /// then one job with its tasks. Inputs are blobs of `lote-app-inputs`
    /// named by their SHA-256, uploaded first.
    RunApp {
        app: String,
        /// None: the app's default version.
        version: Option<String>,
        /// None: `APP-` and a random suffix.
        job: Option<JobId>,
        params: Vec<(String, String)>,
        inputs: Vec<crate::domain::app::submit::AppInput>,
        /// The pool to run on, or `auto_pool` (exactly one).
        pool: Option<PoolId>,
        auto_pool: Option<crate::domain::job::AutoPool>,
        request_id: Option<uuid::Uuid>,
    },
    /// Runs the failed tasks of a finished run again, then its merge, as a
    /// new job of the same run (`JOB-rN`); what succeeded is kept.
    ReprocessAppRun {
        job: JobId,
    },
}

/// The families requests fall into; the server handles each family in a
/// file of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Ping, whoami: any caller.
    Session,
    /// Accounts and their keys: the administrator.
    Accounts,
    /// Pools, their join tokens and autoscale.
    Pools,
    /// A pool's nodes and their files.
    Nodes,
    /// Jobs.
    Jobs,
    /// Job schedules.
    Schedules,
    /// Apps and their runs.
    Apps,
    /// Tasks, their output and files.
    Tasks,
    /// The blob store and application packages.
    Blobs,
    /// The event stream.
    Events,
    /// What node agents ask: joining, registering, polling, reporting.
    Agents,
}

/// A secret's value, before it is sealed, within its bound.
fn secret_size(secret: &crate::domain::pool::PoolSecret) -> Result<(), String> {
    within(
        &format!("secret {}", secret.name),
        secret.value.expose(),
        crate::domain::pool_tasks::SECRET_BYTES_MAX,
    )
}

impl Request {
    /// Checks the free-text fields of a request whose own types do not
    /// bound them (ids, names and specs check themselves): refused up
    /// front with the field and its limit, before anything is written.
    pub fn check_sizes(&self) -> Result<(), String> {
        match self {
            Request::TerminateJob { reason, .. } | Request::TerminateTask { reason, .. } => {
                within("the reason", reason, REASON_BYTES_MAX)
            }
            Request::JoinPool { name } => within("the node's name", name, AGENT_LABEL_BYTES_MAX),
            Request::CreatePool { spec, .. } => spec.secrets.iter().try_for_each(secret_size),
            Request::SetPoolSecret { secret, .. } => secret_size(secret),
            Request::AgentRegister { agent } => {
                within("the host name", &agent.hostname, AGENT_LABEL_BYTES_MAX)?;
                within("the address", &agent.address, AGENT_LABEL_BYTES_MAX)?;
                within(
                    "the agent version",
                    &agent.agent_version,
                    AGENT_LABEL_BYTES_MAX,
                )
            }
            _ => Ok(()),
        }
    }

    /// Cuts what an agent reports in free text to its bounds: a report is
    /// recorded, never refused for a long message.
    pub fn cut_agent_messages(&mut self) {
        match self {
            Request::AgentStartTaskFinished { message, .. } => {
                cut(message, AGENT_MESSAGE_BYTES_MAX)
            }
            Request::AgentCompleted { completions } => {
                for c in completions {
                    if let Some((_, why)) = c.result.failure.as_mut() {
                        cut(why, AGENT_MESSAGE_BYTES_MAX);
                    }
                }
            }
            _ => {}
        }
    }

    /// The bytes this request sends as its call's [`Call::bulk`].
    pub fn bulk(&self) -> &[u8] {
        match self {
            Request::UploadChunk { data, .. } => data,
            _ => &[],
        }
    }

    /// Puts a received call's bulk bytes back where they belong. Bulk on a
    /// request that takes none, or a chunk without bytes, is malformed.
    pub fn attach_bulk(&mut self, bulk: Vec<u8>) -> Result<(), String> {
        match self {
            Request::UploadChunk { data, .. } if !bulk.is_empty() => {
                *data = bulk;
                Ok(())
            }
            Request::UploadChunk { .. } => Err("an upload chunk without bytes".into()),
            _ if bulk.is_empty() => Ok(()),
            other => Err(format!(
                "{} takes no bulk bytes, and {} came with it",
                other.name(),
                bulk.len()
            )),
        }
    }

    /// The client's request id, for the requests that are idempotent.
    pub fn idempotency_key(&self) -> Option<uuid::Uuid> {
        match self {
            Request::CreateAccount { request_id, .. }
            | Request::CreatePool { request_id, .. }
            | Request::CreateJob { request_id, .. }
            | Request::CreateSchedule { request_id, .. }
            | Request::RunApp { request_id, .. }
            | Request::AddTasks { request_id, .. } => *request_id,
            _ => None,
        }
    }

    /// The family the server routes this request to. Exhaustive, so a new
    /// request must be given one.
    pub fn family(&self) -> Family {
        use Request as R;
        match self {
            R::Ping | R::Whoami => Family::Session,
            R::CreateAccount { .. }
            | R::ListAccounts
            | R::ShowAccount { .. }
            | R::DisableAccount { .. }
            | R::EnableAccount { .. }
            | R::DeleteAccount { .. }
            | R::ShowKeys { .. }
            | R::RegenerateKey { .. } => Family::Accounts,
            R::CreatePool { .. }
            | R::ListPools
            | R::ShowPool { .. }
            | R::ResizePool { .. }
            | R::StopResize { .. }
            | R::EnableAutoscale { .. }
            | R::DisableAutoscale { .. }
            | R::DeletePool { .. }
            | R::UpdatePool { .. }
            | R::ShowJoinToken { .. }
            | R::RotateJoinToken { .. }
            | R::SetPoolSecret { .. }
            | R::RemovePoolSecret { .. }
            | R::EvaluateAutoscale { .. }
            | R::AutoscaleHistory { .. }
            | R::ReplayAutoscale { .. } => Family::Pools,
            R::ListNodes { .. }
            | R::ShowNode { .. }
            | R::DisableNode { .. }
            | R::EnableNode { .. }
            | R::RebootNode { .. }
            | R::ReimageNode { .. }
            | R::RemoveNode { .. }
            | R::ListNodeFiles { .. }
            | R::ReadNodeFile { .. } => Family::Nodes,
            R::CreateJob { .. }
            | R::ListJobs
            | R::ShowJob { .. }
            | R::WaitJob { .. }
            | R::DisableJob { .. }
            | R::EnableJob { .. }
            | R::TerminateJob { .. }
            | R::DeleteJob { .. }
            | R::UpdateJob { .. }
            | R::ExplainJob { .. } => Family::Jobs,
            R::CreateSchedule { .. }
            | R::UpdateSchedule { .. }
            | R::ListSchedules
            | R::ShowSchedule { .. }
            | R::DisableSchedule { .. }
            | R::EnableSchedule { .. }
            | R::TerminateSchedule { .. }
            | R::DeleteSchedule { .. }
            | R::RunScheduleNow { .. } => Family::Schedules,
            R::PublishApp { .. }
            | R::ListApps
            | R::ShowApp { .. }
            | R::SetDefaultAppVersion { .. }
            | R::RunApp { .. }
            | R::ReprocessAppRun { .. } => Family::Apps,
            R::AddTasks { .. }
            | R::ListTasks { .. }
            | R::ShowTask { .. }
            | R::TerminateTask { .. }
            | R::DeleteTask { .. }
            | R::ReadTaskOutput { .. }
            | R::ExplainTask { .. }
            | R::ListTaskFiles { .. }
            | R::ReadTaskFile { .. } => Family::Tasks,
            R::ListContainers
            | R::ListBlobs { .. }
            | R::ShowBlob { .. }
            | R::DeleteBlob { .. }
            | R::BeginUpload { .. }
            | R::UploadChunk { .. }
            | R::FinishUpload { .. }
            | R::AbortUpload { .. }
            | R::ReadBlob { .. }
            | R::BeginPackageUpload { .. }
            | R::ListPackages
            | R::SetDefaultPackageVersion { .. }
            | R::DeletePackageVersion { .. }
            | R::ResolvePackage { .. } => Family::Blobs,
            R::TailEvents { .. } => Family::Events,
            R::JoinPool { .. }
            | R::AgentRegister { .. }
            | R::AgentPoll { .. }
            | R::AgentJobPreparationEnded { .. }
            | R::AgentJobReleaseEnded { .. }
            | R::AgentStartTaskBegin
            | R::AgentStartTaskFinished { .. }
            | R::AgentStarted { .. }
            | R::AgentCompleted { .. }
            | R::AgentFileData { .. }
            | R::AgentUsage { .. }
            | R::AgentSecrets { .. } => Family::Agents,
        }
    }

    /// Whether it only reads (a disabled account may still read).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::ListPools
                | Request::ShowPool { .. }
                | Request::ShowJoinToken { .. }
                | Request::ListNodes { .. }
                | Request::ShowNode { .. }
                | Request::ListJobs
                | Request::ShowJob { .. }
                | Request::WaitJob { .. }
                | Request::ListTasks { .. }
                | Request::ShowTask { .. }
                | Request::ReadTaskOutput { .. }
                | Request::ExplainTask { .. }
                | Request::ExplainJob { .. }
                | Request::EvaluateAutoscale { .. }
                | Request::AutoscaleHistory { .. }
                | Request::ReplayAutoscale { .. }
                | Request::ListContainers
                | Request::ListBlobs { .. }
                | Request::ShowBlob { .. }
                | Request::ReadBlob { .. }
                | Request::ListPackages
                | Request::ResolvePackage { .. }
                | Request::ListTaskFiles { .. }
                | Request::ReadTaskFile { .. }
                | Request::ListNodeFiles { .. }
                | Request::ReadNodeFile { .. }
                | Request::ListSchedules
                | Request::ShowSchedule { .. }
                | Request::ListApps
                | Request::ShowApp { .. }
        )
    }

    /// Whether the blob store serves it (for an account, or a node of it).
    pub fn is_blob(&self) -> bool {
        matches!(
            self,
            Request::ListContainers
                | Request::ListBlobs { .. }
                | Request::ShowBlob { .. }
                | Request::DeleteBlob { .. }
                | Request::BeginUpload { .. }
                | Request::UploadChunk { .. }
                | Request::FinishUpload { .. }
                | Request::AbortUpload { .. }
                | Request::ReadBlob { .. }
                | Request::ResolvePackage { .. }
        )
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        macro_rules! names {
            ($($v:ident),*) => { match self { $(Request::$v { .. } => stringify!($v),)* } };
        }
        names!(
            Ping,
            Whoami,
            CreateAccount,
            ListAccounts,
            ShowAccount,
            DisableAccount,
            EnableAccount,
            DeleteAccount,
            ShowKeys,
            RegenerateKey,
            CreatePool,
            ListPools,
            ShowPool,
            ResizePool,
            StopResize,
            EnableAutoscale,
            DisableAutoscale,
            DeletePool,
            UpdatePool,
            ShowJoinToken,
            RotateJoinToken,
            ListNodes,
            ShowNode,
            DisableNode,
            EnableNode,
            RebootNode,
            ReimageNode,
            RemoveNode,
            CreateJob,
            ListJobs,
            ShowJob,
            WaitJob,
            DisableJob,
            EnableJob,
            TerminateJob,
            DeleteJob,
            AddTasks,
            ListTasks,
            ShowTask,
            TerminateTask,
            DeleteTask,
            ReadTaskOutput,
            TailEvents,
            JoinPool,
            AgentRegister,
            AgentPoll,
            AgentStartTaskBegin,
            AgentStartTaskFinished,
            AgentStarted,
            AgentCompleted,
            AgentFileData,
            ExplainTask,
            ExplainJob,
            AgentUsage,
            EvaluateAutoscale,
            AutoscaleHistory,
            ReplayAutoscale,
            ListContainers,
            ListBlobs,
            ShowBlob,
            DeleteBlob,
            BeginUpload,
            UploadChunk,
            FinishUpload,
            AbortUpload,
            ReadBlob,
            BeginPackageUpload,
            ListPackages,
            SetDefaultPackageVersion,
            DeletePackageVersion,
            ResolvePackage,
            ListTaskFiles,
            ReadTaskFile,
            ListNodeFiles,
            ReadNodeFile,
            SetPoolSecret,
            RemovePoolSecret,
            AgentSecrets,
            CreateSchedule,
            UpdateSchedule,
            ListSchedules,
            ShowSchedule,
            DisableSchedule,
            EnableSchedule,
            TerminateSchedule,
            DeleteSchedule,
            RunScheduleNow,
            AgentJobPreparationEnded,
            AgentJobReleaseEnded,
            PublishApp,
            ListApps,
            ShowApp,
            SetDefaultAppVersion,
            RunApp,
            ReprocessAppRun,
            UpdateJob
        )
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn agent_messages_are_cut_on_a_character_boundary_and_say_so() {
        let mut report = Request::AgentStartTaskFinished {
            success: false,
            exit_code: Some(1),
            message: "é".repeat(AGENT_MESSAGE_BYTES_MAX),
        };
        report.cut_agent_messages();
        let Request::AgentStartTaskFinished { message, .. } = report else {
            unreachable!()
        };
        assert!(
            message.len() <= AGENT_MESSAGE_BYTES_MAX,
            "{}",
            message.len()
        );
        assert!(message.ends_with(" [cut]"));
        let mut short = "fine".to_string();
        cut(&mut short, AGENT_MESSAGE_BYTES_MAX);
        assert_eq!(short, "fine");
    }
}
