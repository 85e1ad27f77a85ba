//! The messages themselves. One request enum, one response enum.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::account::{AccountStatus, KeyKind};
use crate::domain::job::{DisableTasks, Job, JobSpec};
use crate::domain::node::{AgentInfo, Node};
use crate::domain::pool::{Deallocation, Pool, PoolSpec};
use crate::domain::spec::StartTask;
use crate::domain::task::{Task, TaskResult, TaskSpec};
use crate::domain::{RejectionCode, Versioned};
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId, Timestamp};

/// Version of this protocol. A server speaks exactly its own version and
/// says so in its refusal, so an old client knows to upgrade.
pub const PROTOCOL_VERSION: u16 = 6;

/// First bytes of every hello, so that a stray client of another protocol
/// is told so instead of getting a decode error.
pub const MAGIC: [u8; 4] = *b"LOTE";

/// Most tasks in one [`Request::AddTasks`].
pub const ADD_TASKS_BATCH_MAX: usize = 1000;

/// Everything a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    Hello(Hello),
    Call(Call),
    /// Ends the subscription started by call `id` (see [`Request::TailEvents`]).
    Cancel {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u16,
    /// Free text for the server's logs, e.g. `lote-cli/0.1.0`.
    pub client: String,
}

/// One signed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the client, unique among its calls in flight; echoed in
    /// the reply.
    pub id: u64,
    pub auth: Auth,
    /// The encoded [`Request`]. Kept as bytes because the signature covers
    /// exactly these bytes.
    #[serde(with = "crate::codec::bytes")]
    pub body: Vec<u8>,
    /// Bulk content beside the body: an upload chunk's bytes, empty for
    /// every other request. The signature covers its length, not its
    /// bytes; those are covered by the upload's SHA-256, which the signed
    /// [`Request::FinishUpload`] carries and the store checks before
    /// anything becomes visible. Hashing every chunk for its call as well
    /// would double the hashing of an upload on both sides.
    #[serde(with = "crate::codec::bytes")]
    pub bulk: Vec<u8>,
}

/// [`ClientFrame::Call`] borrowing its parts, so a call is encoded
/// straight into its frame without copying an upload chunk twice. It
/// encodes to the same bytes as the owned form (tested).
#[derive(Serialize)]
pub(crate) enum ClientFrameRef<'a> {
    #[allow(dead_code)] // Only its position matters: Call is the second variant.
    Hello(&'a Hello),
    Call(CallRef<'a>),
}

#[derive(Serialize)]
pub(crate) struct CallRef<'a> {
    pub id: u64,
    pub auth: &'a Auth,
    #[serde(with = "crate::codec::bytes")]
    pub body: &'a [u8],
    #[serde(with = "crate::codec::bytes")]
    pub bulk: &'a [u8],
}

/// Who signs, when, and the signature (see [`super::auth`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub credential: Credential,
    /// Microseconds since the Unix epoch, by the client's clock.
    pub timestamp: i64,
    /// Random, never reused within the accepted clock skew.
    pub nonce: [u8; 16],
    /// HMAC-SHA256, see [`super::auth::string_to_sign`].
    pub signature: [u8; 32],
}

/// Which key a call is signed with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Credential {
    /// The service administrator's key.
    Admin,
    /// One of an account's two keys.
    Account { account: AccountName },
    /// A pool's join token: only good for [`Request::JoinPool`].
    Join { account: AccountName, pool: PoolId },
    /// A node agent's own credential, handed out when it joined.
    Node {
        account: AccountName,
        pool: PoolId,
        node: NodeId,
    },
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Admin => f.write_str("admin"),
            Credential::Account { account } => write!(f, "account:{account}"),
            Credential::Join { account, pool } => write!(f, "join:{account}/{pool}"),
            Credential::Node {
                account,
                pool,
                node,
            } => write!(f, "node:{account}/{pool}/{node}"),
        }
    }
}

/// Everything the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    Welcome {
        version: u16,
        server: String,
        frame_bytes_max: u32,
    },
    Reply {
        id: u64,
        result: Result<Response, ApiError>,
    },
    /// One event of the subscription started by call `id`.
    Event { id: u64, event: EventView },
    /// The server closes the connection after this, for the reason given.
    Goodbye { error: ApiError },
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
    DeletePool {
        pool: PoolId,
    },
    /// The token agents use to join this pool.
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
    /// `wait_ms` for one when there are none (long poll). `running` lists
    /// the attempts the agent runs now, so the server can say which of
    /// them to stop.
    AgentPoll {
        running: Vec<AttemptRef>,
        wait_ms: u32,
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
        usage: crate::compute::usage::NodeUsage,
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
    /// within [`crate::blob::BLOB_WINDOW_CHUNKS`] of the next expected one.
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
}

/// Which of an attempt's output files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn file_name(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout.txt",
            OutputStream::Stderr => "stderr.txt",
        }
    }
}

/// Most bytes of output one read returns.
pub const OUTPUT_CHUNK_MAX: u32 = 1 << 20;

/// Most completions one [`Request::AgentCompleted`] may carry.
pub const AGENT_COMPLETIONS_MAX: usize = 1024;

/// One ended attempt, as its node's agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: u32,
    pub result: TaskResult,
    /// The output files uploaded after the process ended.
    pub outputs: Vec<crate::domain::task::OutputManifestEntry>,
}

/// One attempt of one task, as agents and the server name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: u32,
}

/// A file operation the server asks an agent for, on a path confined to
/// `root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRead {
    pub read: u64,
    pub root: FileRoot,
    pub path: String,
    pub op: FileOp,
}

/// The directory a file path is relative to (and may not leave).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRoot {
    /// An attempt's directory: `wd/`, `stdout.txt`, `stderr.txt`.
    Attempt(AttemptRef),
    /// The node's directory, minus its credential and caches.
    Node,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    Read { offset: u64, max_bytes: u32 },
    List { recursive: bool },
}

/// What an agent answers to a [`FileRead`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAnswer {
    Chunk(FileChunk),
    Listing(Vec<FileEntry>),
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the listed root, `/`-separated.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub modified: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Directory,
    /// Listed, never followed.
    Symlink,
}

/// Most entries in one listing.
pub const FILE_LIST_MAX: usize = 10_000;

/// Bytes of a file from `offset`, and the file's size when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub offset: u64,
    #[serde(with = "crate::codec::bytes")]
    pub data: Vec<u8>,
    pub size: u64,
}

/// One attempt for an agent to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: u32,
    pub spec: TaskSpec,
    /// The job's resource files, fetched before the task's own.
    pub job_resource_files: Vec<crate::domain::spec::ResourceFile>,
}

impl Request {
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
            | Request::AddTasks { request_id, .. } => *request_id,
            _ => None,
        }
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
            ShowJoinToken,
            ListNodes,
            ShowNode,
            DisableNode,
            EnableNode,
            RebootNode,
            RemoveNode,
            CreateJob,
            ListJobs,
            ShowJob,
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
            ReadNodeFile
        )
    }
}

/// An account as shown to the administrator (keys are shown only by
/// [`Request::ShowKeys`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub name: AccountName,
    pub status: AccountStatus,
    pub created_at: Option<Timestamp>,
    pub keys_rotated_at: Option<Timestamp>,
}

/// One event of the log, as `events tail` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub position: u64,
    pub entity: String,
    pub version: u64,
    pub recorded_at: Timestamp,
    pub event_type: String,
    pub principal: Principal,
    pub request_id: String,
    /// The event's fields as JSON text (secrets redacted).
    pub data: String,
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong {
        server_time: Timestamp,
    },
    Whoami {
        principal: Principal,
    },
    /// The command was carried out; `entity` is at `version`.
    Done {
        entity: String,
        version: u64,
    },
    /// An object was created (or had been, by the same request id).
    Created {
        entity: String,
    },
    TasksAdded {
        job: JobId,
        count: u32,
    },
    Account(AccountView),
    Accounts(Vec<AccountView>),
    Keys {
        account: AccountName,
        primary: String,
        secondary: String,
    },
    Pool(Versioned<Pool>),
    Pools(Vec<Versioned<Pool>>),
    JoinToken {
        pool: PoolId,
        token: String,
    },
    Node(Versioned<Node>),
    Nodes(Vec<Versioned<Node>>),
    Job(Versioned<Job>),
    Jobs(Vec<Versioned<Job>>),
    Task(Versioned<Task>),
    Tasks {
        items: Vec<Versioned<Task>>,
        /// More tasks follow: ask again with `after: next`.
        next: Option<TaskId>,
    },
    /// A subscription started; events follow as [`ServerFrame::Event`].
    Subscribed {
        from: u64,
    },
    Joined {
        node: NodeId,
        credential: String,
    },
    /// What the polling agent is to do: attempts to start, attempts of
    /// its own to kill (terminated or requeued meanwhile), output reads to
    /// answer, and whether to reboot (kill everything, register again and
    /// re-run the start task).
    Work {
        assignments: Vec<Assignment>,
        cancel: Vec<AttemptRef>,
        reads: Vec<FileRead>,
        reboot: bool,
    },
    /// Part of an attempt's output. `completed`: the attempt has ended, so
    /// nothing more will be written.
    TaskOutput {
        node: NodeId,
        attempt: u32,
        chunk: FileChunk,
        completed: bool,
    },
    /// A report from an agent was recorded (or had been already).
    Recorded,
    /// What became of each of an [`Request::AgentCompleted`]'s
    /// completions, in their order: recorded (now or before), or why not.
    Reported {
        results: Vec<Result<(), ApiError>>,
    },
    /// The agent is registered; it runs `start_task` first when given.
    Registered {
        start_task: Option<StartTask>,
        /// The pool's packages, unpacked before the start task runs.
        application_packages: Vec<crate::domain::spec::PackageRef>,
    },
    /// A task's status and, while it is queued, why it waits.
    TaskExplanation {
        job: JobId,
        task: TaskId,
        status: crate::domain::task::TaskStatus,
        waiting: Option<crate::compute::explain::Explanation>,
    },
    /// A job's queued tasks grouped by the reasons they wait.
    JobWaits {
        job: JobId,
        groups: Vec<crate::compute::explain::WaitGroup>,
        pool: crate::compute::explain::PoolContext,
    },
    AutoscaleEvaluation(crate::server::autoscale::Evaluation),
    AutoscaleRuns(Vec<crate::domain::pool::AutoscaleRun>),
    AutoscaleReplay(Vec<crate::server::autoscale::ReplayStep>),
    Containers(Vec<String>),
    Blobs {
        blobs: Vec<crate::blob::BlobMeta>,
        /// Pass as `after` for the next page; None on the last.
        next: Option<String>,
    },
    Blob(crate::blob::BlobMeta),
    BlobDeleted {
        existed: bool,
    },
    UploadStarted {
        upload: u64,
    },
    /// An upload chunk was written (or held until the ones before it come).
    ChunkReceived,
    BlobData {
        #[serde(with = "crate::codec::bytes")]
        data: Vec<u8>,
    },
    Packages(Vec<crate::blob::packages::PackageView>),
    /// What a package reference resolves to: its version and its blob.
    PackageResolved {
        id: String,
        version: String,
        blob: crate::blob::BlobMeta,
    },
    /// A file operation's answer, from the node that holds the files.
    Files {
        node: NodeId,
        answer: FileAnswer,
        /// For a task's files: its attempt has ended (nothing more will be
        /// written).
        completed: bool,
    },
}

/// Why a call or a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The bytes are not a message of this protocol.
    Malformed,
    /// A frame over [`super::FRAME_BYTES_MAX`].
    TooLarge,
    /// The hello names a protocol version this server does not speak.
    UnsupportedVersion,
    /// A call before the hello, or a second hello.
    HandshakeRequired,
    /// Signature does not verify: wrong or old key, unknown account, or a
    /// tampered request. Deliberately not more specific.
    BadSignature,
    /// The signed timestamp is too far from the server's clock.
    ClockSkew,
    /// The nonce was already used: a replayed request.
    NonceReplayed,
    /// Signed correctly, but this credential may not make this request.
    PermissionDenied,
    /// The domain refused the command; see `rejection`.
    Rejected,
    /// The request id was used before for a different request.
    RequestIdReused,
    /// Too many connections or calls in flight; try again shortly.
    Overloaded,
    /// The server is shutting down.
    ShuttingDown,
    /// The connection was too slow or idle for too long.
    Timeout,
    /// The server failed (storage, a bug); nothing was half-done.
    Internal,
}

impl ErrorKind {
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded | ErrorKind::ShuttingDown | ErrorKind::Timeout
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// Set when `kind` is [`ErrorKind::Rejected`].
    pub rejection: Option<RejectionCode>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rejection {
            Some(code) => write!(f, "{} ({}): {}", code.name(), code.code(), self.message),
            None => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            rejection: None,
            message: message.into(),
        }
    }

    pub fn rejected(code: RejectionCode, message: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Rejected,
            rejection: Some(code),
            message: message.into(),
        }
    }

    pub fn retryable(&self) -> bool {
        match self.rejection {
            Some(code) => code.retryable(),
            None => self.kind.retryable(),
        }
    }
}

impl From<crate::domain::Rejection> for ApiError {
    fn from(r: crate::domain::Rejection) -> Self {
        ApiError::rejected(r.code, r.detail)
    }
}
