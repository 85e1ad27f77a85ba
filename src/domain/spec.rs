//! Specification values shared by several aggregates: command lines, start
//! tasks, resource and output files. Validation lives beside each type.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ensure, validate_command_line, validate_env, EnvVar, Rejection, RejectionCode};
use crate::types::{AccountName, Principal};

/// How a task's command is started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// Run through `/bin/sh -c`: pipes, globs and variables work.
    Shell(String),
    /// Run directly, no shell: the first item is the program.
    Argv(Vec<String>),
}

impl CommandLine {
    pub fn validate(&self, what: &str) -> Result<(), Rejection> {
        match self {
            CommandLine::Shell(line) => validate_command_line(what, line),
            CommandLine::Argv(args) => {
                ensure(
                    !args.is_empty() && !args[0].is_empty(),
                    RejectionCode::InvalidValue,
                    || format!("{what} argv is empty; the first item must name the program"),
                )?;
                let bytes: usize = args.iter().map(|a| a.len() + 1).sum();
                validate_command_line(
                    what,
                    &"x".repeat(bytes.min(super::COMMAND_LINE_BYTES_MAX + 1)),
                )
            }
        }
    }
}

/// Where a resource file comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceSource {
    /// One blob of the account's blob store.
    Blob { container: String, name: String },
    /// Every blob whose name starts with `prefix`, keeping relative names.
    BlobPrefix { container: String, prefix: String },
    /// An http(s) URL.
    Url { url: String },
}

/// An input fetched into the working directory before the process starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceFile {
    pub source: ResourceSource,
    /// Path relative to the working directory.
    pub path: String,
    /// Unix file mode, e.g. 0o755 for a program.
    pub mode: Option<u32>,
}

/// When output files are uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum UploadCondition {
    #[default]
    Success,
    Failure,
    Completion,
}

/// Files uploaded from the working directory after the process exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputFile {
    /// Glob relative to the working directory, e.g. `out/*.png`.
    pub pattern: String,
    pub container: String,
    pub path_prefix: String,
    pub upload_condition: UploadCondition,
}

/// A reference to an application package: its id and, optionally, a
/// version (none: the package's default version).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PackageRef {
    pub id: String,
    pub version: Option<String>,
}

/// Longest package id or version.
pub const PACKAGE_NAME_BYTES_MAX: usize = 64;

/// Most packages one task or pool references.
pub const PACKAGES_PER_REF_MAX: usize = 32;

/// Package ids: letters, digits, `_` and `-`; versions may have dots too
/// (`2.1.0`), but not first. Both become directory names on nodes and
/// parts of an environment variable's name.
pub fn validate_package_name(what: &str, name: &str, dots: bool) -> Result<(), Rejection> {
    let ok = !name.is_empty()
        && name.len() <= PACKAGE_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'));
    ensure(ok, RejectionCode::InvalidValue, || {
        format!(
            "{what} {name:?} must be 1-{PACKAGE_NAME_BYTES_MAX} letters, digits, '_' or '-'{}",
            if dots { " or '.' (not first)" } else { "" }
        )
    })
}

pub fn validate_packages(what: &str, refs: &[PackageRef]) -> Result<(), Rejection> {
    ensure(
        refs.len() <= PACKAGES_PER_REF_MAX,
        RejectionCode::InvalidValue,
        || format!("{what} references more than {PACKAGES_PER_REF_MAX} application packages"),
    )?;
    for r in refs {
        validate_package_name("application package id", &r.id, false)?;
        if let Some(v) = &r.version {
            validate_package_name("application package version", v, true)?;
        }
    }
    Ok(())
}

/// Most resource or output files on one task.
pub const FILES_PER_TASK_MAX: usize = 1000;

/// Most bytes of a file path or output pattern in a spec.
pub const PATH_BYTES_MAX: usize = 4096;

/// Most bytes of a resource file's URL.
pub const URL_BYTES_MAX: usize = 8192;

fn within(what: &str, value: &str, max: usize) -> Result<(), Rejection> {
    ensure(value.len() <= max, RejectionCode::InvalidValue, || {
        format!("{what} is {} bytes; at most {max}", value.len())
    })
}

/// Checks a path that must stay inside a working directory.
pub fn validate_relative_path(what: &str, path: &str) -> Result<(), Rejection> {
    within(&format!("{what} path"), path, PATH_BYTES_MAX)?;
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|part| part == "..");
    ensure(!bad, RejectionCode::InvalidValue, || {
        format!("{what} path {path:?} must be relative and stay inside the working directory")
    })
}

pub fn validate_files(
    what: &str,
    resources: &[ResourceFile],
    outputs: &[OutputFile],
) -> Result<(), Rejection> {
    ensure(
        resources.len() <= FILES_PER_TASK_MAX && outputs.len() <= FILES_PER_TASK_MAX,
        RejectionCode::InvalidValue,
        || format!("{what} names more than {FILES_PER_TASK_MAX} resource or output files"),
    )?;
    for r in resources {
        validate_relative_path(&format!("{what} resource file"), &r.path)?;
        if let ResourceSource::Url { url } = &r.source {
            within(&format!("{what} resource URL"), url, URL_BYTES_MAX)?;
            ensure(
                url.starts_with("http://") || url.starts_with("https://"),
                RejectionCode::InvalidValue,
                || format!("{what} resource URL {url:?} must be http:// or https://"),
            )?;
        }
        if let Some(mode) = r.mode {
            ensure(mode <= 0o7777, RejectionCode::InvalidValue, || {
                format!("{what} file mode {mode:o} is not a mode")
            })?;
        }
    }
    for r in resources {
        let blob = match &r.source {
            ResourceSource::Blob { container, name } => crate::blob::validate_container(container)
                .and_then(|_| crate::blob::validate_blob_name(name)),
            ResourceSource::BlobPrefix { container, prefix } => {
                crate::blob::validate_container(container)
                    .and_then(|_| crate::blob::validate_prefix(prefix))
            }
            ResourceSource::Url { .. } => Ok(()),
        };
        blob.map_err(|e| Rejection::invalid(format!("{what} resource file: {e}")))?;
    }
    for o in outputs {
        // `../stdout.txt` and `../stderr.txt` (beside the working
        // directory) may be uploaded too, as in Azure Batch.
        within(
            &format!("{what} output pattern"),
            &o.pattern,
            PATH_BYTES_MAX,
        )?;
        let beside = o.pattern.strip_prefix("../");
        match beside {
            Some(rest) if !rest.contains('/') && !rest.is_empty() => {}
            _ => validate_relative_path(&format!("{what} output pattern"), &o.pattern)?,
        }
        glob::Pattern::new(&o.pattern).map_err(|e| {
            Rejection::invalid(format!("{what} output pattern {:?}: {e}", o.pattern))
        })?;
        crate::blob::validate_container(&o.container)
            .and_then(|_| crate::blob::validate_prefix(&o.path_prefix))
            .map_err(|e| Rejection::invalid(format!("{what} output file: {e}")))?;
        ensure(
            !crate::blob::names::reserved_for_lote(&o.container),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "{what} output container {:?} is reserved for lote",
                    o.container
                )
            },
        )?;
    }
    Ok(())
}

/// What every node of a pool runs as it joins, before taking tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartTask {
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    pub resource_files: Vec<ResourceFile>,
    /// Give the node no tasks until the start task succeeded.
    pub wait_for_success: bool,
    /// Retries after the first failure before the node is startTaskFailed.
    pub retry_count_max: u32,
}

/// Most retries of anything a user configures.
pub const RETRY_COUNT_MAX: u32 = 100;

impl StartTask {
    pub fn validate(&self) -> Result<(), Rejection> {
        self.command_line.validate("start task")?;
        validate_env("start task", &self.env)?;
        validate_files("start task", &self.resource_files, &[])?;
        ensure(
            self.retry_count_max <= RETRY_COUNT_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "start task retry_count_max is {}; at most {RETRY_COUNT_MAX}",
                    self.retry_count_max
                )
            },
        )
    }
}

/// Refuses a principal that may not act on `account`'s objects. Another
/// account's object is reported as not found, so existence does not leak.
pub fn authorize_account(
    principal: &Principal,
    account: &AccountName,
    not_found: RejectionCode,
) -> Result<(), Rejection> {
    match principal {
        Principal::Admin | Principal::System { .. } => Ok(()),
        Principal::Account { account: a } | Principal::Node { account: a, .. } if a == account => {
            Ok(())
        }
        _ => Err(Rejection::new(not_found, "no such object in this account")),
    }
}

/// What happens to a removed node's running tasks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Deallocation {
    /// Kill them and queue them again (no retry used).
    #[default]
    Requeue,
    /// Kill them and fail them.
    Terminate,
    /// Give the node no new work; remove it when its tasks end.
    // Azure Batch's own word, which autoscale formulas use too.
    #[value(name = "taskcompletion", alias = "task-completion")]
    TaskCompletion,
}
