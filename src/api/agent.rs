//! What a node's agent and the server say to each other beyond requests:
//! attempts handed out, completions, file operations carried out on the
//! node, the machine's figures, and the node's credential file.

use serde::{Deserialize, Serialize};

use crate::domain::task::{TaskResult, TaskSpec};
use crate::types::{AccountName, JobId, NodeId, PoolId, TaskId, Timestamp};

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
    /// For the job's manager task: the job-scoped key it signs with (in
    /// `LOTE_JOB_KEY`), good for its own job's tasks only.
    pub job_key: Option<crate::types::Secret>,
    /// The job's preparation, run on the node before its first task there.
    pub preparation: Option<crate::domain::job_prep::JobPreparation>,
    /// The job's common variables (the task's own win).
    pub job_env: Vec<crate::domain::EnvVar>,
}

/// One report: levels now, and counter changes since the last report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// CPU busy over the last interval, 0-100, all cores together.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// Space used on the file system holding the node's directory.
    pub disk_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub disk_read_ops: u64,
    pub disk_write_ops: u64,
    pub network_in_bytes: u64,
    pub network_out_bytes: u64,
}

/// The node identity kept in `ROOT/node.toml` after joining.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeCredential {
    pub account: AccountName,
    pub pool: PoolId,
    pub node: NodeId,
    pub credential: String,
    /// The server certificate's fingerprint (`sha256:HEX`), from the join
    /// token: the agent reaches the server over TLS pinned to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}
