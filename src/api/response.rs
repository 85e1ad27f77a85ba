//! What the server answers: the one response enum and the views it
//! carries.

use serde::{Deserialize, Serialize};

use super::agent::{Assignment, AttemptRef, FileAnswer, FileChunk, FileRead};
use super::error::ApiError;
use crate::domain::account::AccountStatus;
use crate::domain::job::Job;
use crate::domain::node::Node;
use crate::domain::pool::Pool;
use crate::domain::spec::StartTask;
use crate::domain::task::Task;
use crate::domain::Versioned;
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId, Timestamp};

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
    Schedule(Box<Versioned<crate::domain::schedule::Schedule>>),
    Schedules(Vec<Versioned<crate::domain::schedule::Schedule>>),
    App(Box<Versioned<crate::domain::app::App>>),
    Apps(Vec<Versioned<crate::domain::app::App>>),
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
        /// With `reboot`: wipe the node's directories before registering
        /// again (`lote node reimage`).
        reimage: bool,
        /// Jobs that ended, whose release this node is to run, with their
        /// common variables.
        releases: Vec<(
            JobId,
            crate::domain::job_prep::JobRelease,
            Vec<crate::domain::EnvVar>,
        )>,
        /// The pool's secrets epoch: the log position of its last secret
        /// change (0: none yet). One the agent has not seen means its
        /// secrets are to be fetched again.
        secrets_epoch: u64,
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
        /// As whom and within what the pool's tasks run.
        task_settings: crate::domain::pool::TaskSettings,
        /// The longest the agent may go without a call, milliseconds: the
        /// server parks a poll no longer, and while the poll loop is away
        /// (a start task, a reboot) the agent's usage report is its
        /// heartbeat at this period.
        heartbeat_ms: u32,
    },
    /// A task's status and, while it is queued, why it waits.
    TaskExplanation {
        job: JobId,
        task: TaskId,
        status: crate::domain::task::TaskStatus,
        waiting: Option<crate::api::explain::Explanation>,
    },
    /// A job's queued tasks grouped by the reasons they wait.
    JobWaits {
        job: JobId,
        groups: Vec<crate::api::explain::WaitGroup>,
        pool: crate::api::explain::PoolContext,
    },
    AutoscaleEvaluation(crate::api::autoscale::Evaluation),
    AutoscaleRuns(Vec<crate::domain::pool::AutoscaleRun>),
    AutoscaleReplay(Vec<crate::api::autoscale::ReplayStep>),
    Containers(Vec<String>),
    Blobs {
        blobs: Vec<crate::api::blobs::BlobMeta>,
        /// Pass as `after` for the next page; None on the last.
        next: Option<String>,
    },
    Blob(crate::api::blobs::BlobMeta),
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
    Packages(Vec<crate::api::blobs::PackageView>),
    /// What a package reference resolves to: its version and its blob.
    PackageResolved {
        id: String,
        version: String,
        blob: crate::api::blobs::BlobMeta,
    },
    /// A file operation's answer, from the node that holds the files.
    Files {
        node: NodeId,
        answer: FileAnswer,
        /// For a task's files: its attempt has ended (nothing more will be
        /// written).
        completed: bool,
    },
    /// A pool's secrets for its node, their values in clear (for the
    /// node only), when they changed since the generation it had; None:
    /// unchanged.
    Secrets {
        generation: u32,
        secrets: Option<Vec<crate::domain::pool::PoolSecret>>,
    },
}
