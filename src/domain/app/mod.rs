//! Apps: a program published with a definition (`app.toml`) so that users
//! run it with typed parameters and input files, and get one merged
//! result, without thinking about tasks or nodes (the seed's second
//! scenario, Batch Apps' "job types").
//!
//! An app's stream holds its published versions; each version's program
//! is the application package of the same id and version. A run is a job
//! (marked by metadata) made by [`submit::expand`]; nothing about a run
//! lives in the app's stream.

pub mod definition;
pub mod submit;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use definition::{AppDefinition, Outcomes};

use super::spec::authorize_account;
use super::task_spec::{ExitConditions, ExitOptions};
use super::{ensure, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::{AccountName, Timestamp};

/// The container holding runs' input files, each named by its SHA-256.
pub use crate::blob::names::APP_INPUTS_CONTAINER as INPUTS_CONTAINER;
/// The container holding what runs' tasks leave (see
/// [`submit::output_prefix`]).
pub use crate::blob::names::APP_JOBS_CONTAINER as JOBS_CONTAINER;

/// Most versions one app keeps.
pub const VERSIONS_MAX: usize = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum AppCommand {
    Publish {
        account: AccountName,
        definition: Box<AppDefinition>,
        make_default: bool,
    },
    SetDefault {
        version: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum AppEvent {
    AppVersionPublished {
        account: AccountName,
        // Boxed: a definition is large beside the other variant (the
        // encoding is the same as unboxed).
        definition: Box<AppDefinition>,
        at: Timestamp,
    },
    AppDefaultVersionSet {
        version: String,
        at: Timestamp,
    },
}

impl DomainEvent for AppEvent {
    const KIND: StreamKind = StreamKind::App;
    fn event_type(&self) -> &'static str {
        match self {
            AppEvent::AppVersionPublished { .. } => "AppVersionPublished",
            AppEvent::AppDefaultVersionSet { .. } => "AppDefaultVersionSet",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppVersion {
    pub definition: AppDefinition,
    pub published_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct App {
    pub account: Option<AccountName>,
    /// Oldest first.
    pub versions: Vec<AppVersion>,
    pub default_version: Option<String>,
}

impl App {
    /// The version a run names, or the default one.
    pub fn resolve(&self, version: Option<&str>) -> Result<&AppDefinition, Rejection> {
        let name = self
            .versions
            .first()
            .map_or("", |v| v.definition.name.as_str());
        let wanted = match version {
            Some(v) => v,
            None => self.default_version.as_deref().ok_or_else(|| {
                Rejection::new(
                    RejectionCode::AppNotFound,
                    format!("app {name} has no default version; name one (NAME:VERSION)"),
                )
            })?,
        };
        self.versions
            .iter()
            .find(|v| v.definition.version == wanted)
            .map(|v| &v.definition)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .versions
                    .iter()
                    .map(|v| v.definition.version.as_str())
                    .collect();
                Rejection::new(
                    RejectionCode::AppNotFound,
                    format!(
                        "app {name} has no version {wanted} (published: {})",
                        known.join(", ")
                    ),
                )
            })
    }
}

impl Aggregate for App {
    type Command = AppCommand;
    type Event = AppEvent;
    const KIND: StreamKind = StreamKind::App;
    const STATE_SCHEMA: u32 = 1;

    fn decide(&self, command: &AppCommand, ctx: &Ctx) -> Result<Vec<AppEvent>, Rejection> {
        let at = ctx.now;
        match command {
            AppCommand::Publish {
                account,
                definition,
                make_default,
            } => {
                authorize_account(&ctx.principal, account, RejectionCode::AppNotFound)?;
                ensure(
                    !self
                        .versions
                        .iter()
                        .any(|v| v.definition.version == definition.version),
                    RejectionCode::AppVersionExists,
                    || {
                        format!(
                            "app {} {} is published already; a version never changes, so publish another",
                            definition.name, definition.version
                        )
                    },
                )?;
                ensure(
                    self.versions.len() < VERSIONS_MAX,
                    RejectionCode::InvalidValue,
                    || format!("app {} has {VERSIONS_MAX} versions", definition.name),
                )?;
                let mut events = vec![AppEvent::AppVersionPublished {
                    account: account.clone(),
                    definition: definition.clone(),
                    at,
                }];
                if *make_default || self.default_version.is_none() {
                    events.push(AppEvent::AppDefaultVersionSet {
                        version: definition.version.clone(),
                        at,
                    });
                }
                Ok(events)
            }
            AppCommand::SetDefault { version } => {
                let account = self
                    .account
                    .as_ref()
                    .ok_or_else(|| Rejection::new(RejectionCode::AppNotFound, "no such app"))?;
                authorize_account(&ctx.principal, account, RejectionCode::AppNotFound)?;
                self.resolve(Some(version))?;
                Ok(vec![AppEvent::AppDefaultVersionSet {
                    version: version.clone(),
                    at,
                }])
            }
        }
    }

    fn apply(&mut self, event: &AppEvent) {
        match event {
            AppEvent::AppVersionPublished {
                account,
                definition,
                at,
            } => {
                self.account = Some(account.clone());
                self.versions.push(AppVersion {
                    definition: (**definition).clone(),
                    published_at: *at,
                });
            }
            AppEvent::AppDefaultVersionSet { version, .. } => {
                self.default_version = Some(version.clone());
            }
        }
    }

    fn is_finished(&self) -> bool {
        false
    }

    fn sanity_check(&self) -> Result<(), String> {
        match &self.default_version {
            Some(v) if !self.versions.iter().any(|x| x.definition.version == *v) => {
                Err(format!("default version {v} is not published"))
            }
            _ => Ok(()),
        }
    }
}

/// The reason `lote app job cancel` gives the job it terminates.
pub const CANCEL_REASON: &str = "the app run was cancelled";

/// Where a run stands, read from its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Nothing has started yet.
    Queued,
    Running,
    Cancelling,
    /// Every task succeeded (the merge too).
    Succeeded,
    /// It ended with failed tasks; `reprocess` runs them again.
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn of(job: &crate::domain::job::Job) -> RunStatus {
        use crate::domain::job::{JobStatus, TaskBucket};
        let failed = job.count(TaskBucket::Failed) > 0;
        let cancelled = job.completion_reason.as_deref() == Some(CANCEL_REASON);
        match job.status {
            JobStatus::Terminating if cancelled => RunStatus::Cancelling,
            JobStatus::Completed | JobStatus::Terminating | JobStatus::Deleted => {
                if cancelled {
                    RunStatus::Cancelled
                } else if failed {
                    RunStatus::Failed
                } else if job.status == JobStatus::Completed {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Running
                }
            }
            _ if job.count(TaskBucket::Running)
                + job.count(TaskBucket::Succeeded)
                + job.count(TaskBucket::Failed)
                > 0 =>
            {
                RunStatus::Running
            }
            _ => RunStatus::Queued,
        }
    }
}

/// The environment variable naming the directory of an app version's
/// package on a node.
pub fn package_env(def: &AppDefinition) -> String {
    crate::blob::packages::env_names(&def.name, &def.version).1
}

/// A processor's outcome read from its exit code: the listed codes are
/// retryable failures, every other non-zero code a permanent one (not run
/// again).
pub fn outcome_conditions(outcomes: &Outcomes) -> Option<Box<ExitConditions>> {
    let retry = |retry| ExitOptions {
        job_action: None,
        dependency_action: None,
        retry: Some(retry),
    };
    Some(Box::new(ExitConditions {
        exit_codes: outcomes
            .retry_exit_codes
            .iter()
            .map(|c| (*c, retry(true)))
            .collect(),
        exit_code_ranges: vec![],
        // Inputs that could not be fetched or results not uploaded are
        // the node's or the network's trouble, worth another attempt.
        pre_processing_error: Some(retry(true)),
        file_upload_error: Some(retry(true)),
        default: Some(retry(false)),
    }))
}

#[cfg(test)]
mod tests;
