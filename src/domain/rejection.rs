//! Why a command was refused: one closed list with stable numeric codes.
//!
//! Codes are part of the wire API and the docs: never renumber or reuse one.
//! Add new codes at the end. The table in `docs/rejections.md` is checked
//! against this list by a test.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! rejection_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal, retry: $retry:literal;)*) => {
        /// A closed list of reasons to refuse a command.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[repr(u16)]
        pub enum RejectionCode {
            $($(#[doc = $doc])* $name = $code,)*
        }

        impl RejectionCode {
            pub const ALL: &'static [RejectionCode] = &[$(RejectionCode::$name,)*];

            /// The stable number of this code.
            pub fn code(self) -> u16 {
                self as u16
            }

            /// Whether sending the same request again later may succeed
            /// without anyone changing anything.
            pub fn retryable(self) -> bool {
                match self { $(RejectionCode::$name => $retry,)* }
            }

            pub fn name(self) -> &'static str {
                match self { $(RejectionCode::$name => stringify!($name),)* }
            }

            /// One-line meaning, from the variant's doc.
            pub fn meaning(self) -> &'static str {
                match self { $(RejectionCode::$name => concat!($($doc),*).trim_start(),)* }
            }

            pub fn from_code(code: u16) -> Option<Self> {
                match code { $($code => Some(RejectionCode::$name),)* _ => None }
            }
        }
    };
}

rejection_codes! {
    /// A field of the command is missing or invalid; the detail names it.
    InvalidValue = 1, retry: false;
    /// No such account (or it was deleted).
    AccountNotFound = 2, retry: false;
    /// An account with this name exists.
    AccountExists = 3, retry: false;
    /// The account is disabled; an administrator must enable it.
    AccountDisabled = 4, retry: false;
    /// The account is not disabled, so it cannot be enabled.
    AccountNotDisabled = 5, retry: false;
    /// No such pool in this account (or it was deleted).
    PoolNotFound = 6, retry: false;
    /// A pool with this id exists in this account.
    PoolExists = 7, retry: false;
    /// The pool is being deleted.
    PoolBeingDeleted = 8, retry: false;
    /// The pool scales by formula; disable autoscale before resizing by hand.
    PoolAutoscaleEnabled = 9, retry: false;
    /// The pool does not scale by formula.
    PoolAutoscaleNotEnabled = 10, retry: false;
    /// The pool has no resize in progress to stop.
    PoolNotResizing = 11, retry: false;
    /// No such node in this pool (or it was removed).
    NodeNotFound = 12, retry: false;
    /// A node with this id exists in this pool.
    NodeExists = 13, retry: false;
    /// The node's current state does not allow this; the detail says which.
    NodeStateConflict = 14, retry: false;
    /// No such job in this account (or it was deleted).
    JobNotFound = 15, retry: false;
    /// A job with this id exists in this account.
    JobExists = 16, retry: false;
    /// The job is not active (disabled, terminating or completed).
    JobNotActive = 17, retry: false;
    /// The job is not disabled, so it cannot be enabled.
    JobNotDisabled = 18, retry: false;
    /// The job has completed; it accepts no more changes but deletion.
    JobCompleted = 19, retry: false;
    /// The job is terminating.
    JobBeingTerminated = 20, retry: false;
    /// No such task in this job (or it was deleted).
    TaskNotFound = 21, retry: false;
    /// A task with this id exists in this job.
    TaskExists = 22, retry: false;
    /// The task has completed.
    TaskCompleted = 23, retry: false;
    /// The task's current state does not allow this; the detail says which.
    TaskStateConflict = 24, retry: false;
    /// A report for an attempt that is no longer the task's current one
    /// (the task was requeued or retried elsewhere). It is ignored.
    StaleAttempt = 25, retry: false;
    /// The caller may not do this to this object.
    PermissionDenied = 26, retry: false;
    /// The entity changed under the request too many times in a row; send
    /// the same request again.
    TooBusy = 27, retry: true;
    /// The client request id was already used for a different request
    /// (another body). Use a new id for a new request.
    RequestIdReused = 28, retry: false;
    /// No such blob in this container (or it was deleted).
    BlobNotFound = 29, retry: false;
    /// The blob was replaced or deleted while it was read; read it again.
    BlobChanged = 30, retry: true;
    /// The bytes received do not have the checksum or size the uploader
    /// computed; nothing was stored. Upload again.
    ChecksumMismatch = 31, retry: false;
    /// The server's disk is full; nothing was stored.
    StorageFull = 32, retry: false;
    /// No such upload in progress: it finished, was abandoned for too long,
    /// or the server restarted. Start the upload again.
    UploadNotFound = 33, retry: false;
    /// No such application package, or no such version of it.
    ApplicationNotFound = 34, retry: false;
    /// No such file or directory on the node, or the path leaves the task's
    /// or node's directory.
    FileNotFound = 35, retry: false;
    /// Jobs on the pool still have queued or running tasks; delete it with
    /// force to terminate those jobs.
    PoolInUse = 36, retry: false;
    /// The account still owns pools, jobs or blobs; delete them first.
    AccountNotEmpty = 37, retry: false;
    /// No such job schedule in this account (or it was deleted).
    ScheduleNotFound = 38, retry: false;
    /// A job schedule with this id exists in this account.
    ScheduleExists = 39, retry: false;
    /// The schedule's state does not allow this; the detail says which.
    ScheduleStateConflict = 40, retry: false;
    /// A task depends on a task id that is neither in its job nor in the
    /// same batch (or was deleted).
    DependencyNotFound = 41, retry: false;
    /// A task depends on itself, or the batch's dependencies form a cycle;
    /// the detail names it.
    DependencyCycle = 42, retry: false;
    /// The job was created without task dependencies; create it with
    /// `job create --dependencies`.
    DependenciesNotEnabled = 43, retry: false;
    /// No such app (or app version) in this account; `lote app list`
    /// shows the published ones.
    AppNotFound = 44, retry: false;
    /// This version of the app is published already; versions never
    /// change once published, so publish a new one.
    AppVersionExists = 45, retry: false;
    /// The app definition (app.toml) is invalid; the detail lists every
    /// problem with its line.
    InvalidAppDefinition = 46, retry: false;
    /// The parameters or input files of an app run are invalid; the detail
    /// lists every problem.
    InvalidAppParameters = 47, retry: false;
}

/// A refused command: a stable code and a sentence with the specifics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
pub struct Rejection {
    pub code: RejectionCode,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: RejectionCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
        }
    }
    pub fn invalid(detail: impl Into<String>) -> Self {
        Rejection::new(RejectionCode::InvalidValue, detail)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.code(),
            self.detail
        )
    }
}

/// Renders the code table as Markdown (the body of `docs/rejections.md`).
pub fn rejection_table_markdown() -> String {
    let mut out = String::from(
        "# Rejection codes\n\nGenerated from `src/domain/rejection.rs`; a test fails when this file is stale.\nCodes are stable: never renumbered, never reused.\n\n| code | name | client may retry | meaning |\n|---:|---|---|---|\n",
    );
    for code in RejectionCode::ALL {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code.code(),
            code.name(),
            if code.retryable() { "yes" } else { "no" },
            code.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in RejectionCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(RejectionCode::from_code(c.code()), Some(*c));
            assert!(!c.meaning().is_empty());
        }
        assert_eq!(RejectionCode::from_code(0), None);
    }
}
