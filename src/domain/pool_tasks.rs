//! How a pool's tasks run on its nodes: as which user, with what rights,
//! within which limits; and the secrets its nodes are given.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ensure, Rejection, RejectionCode};
use crate::types::Secret;

/// Whose user a task runs as, when its agent runs as root.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum UserScope {
    /// A user of its own per task: no task can read another's working
    /// directory. (Azure's default is the pool's; lote's is the safer.)
    #[default]
    Task,
    /// One user for every task of the pool: tasks may read each other's
    /// working directories.
    Pool,
}

/// Whether a task runs unprivileged or as root.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Elevation {
    /// As its unprivileged user.
    #[default]
    NonAdmin,
    /// As root: it can read the node's credential and do anything on the
    /// machine (install packages, mount disks). Still in its cgroup.
    Admin,
}

/// Most processes one attempt may have that a pool may ask for.
pub const TASK_PROCESSES_MAX: u32 = 1 << 22;
/// The CPU weights a pool may ask for (cgroup v2's range; 100 is even).
pub const CPU_WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

/// A pool's settings for how its tasks run. Limits are per attempt; a
/// node's agent may cap them lower (its own flags), never higher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TaskSettings {
    pub user_scope: UserScope,
    pub elevation: Elevation,
    /// The start task's own (a start task that installs software needs
    /// admin; the tasks it prepares for need not).
    pub start_task_elevation: Elevation,
    /// MiB of memory an attempt's processes may hold together; None: the
    /// node's limit.
    pub memory_mib: Option<u64>,
    /// Processes an attempt may have at once; None: the node's limit.
    pub processes_max: Option<u32>,
    /// CPU share against the node's other attempts; None: the node's.
    pub cpu_weight: Option<u32>,
}

impl TaskSettings {
    pub fn validate(&self) -> Result<(), Rejection> {
        if let Some(mib) = self.memory_mib {
            ensure(mib >= 4, RejectionCode::InvalidValue, || {
                format!(
                    "task memory limit of {mib} MiB is too small to start a process; at least 4"
                )
            })?;
        }
        if let Some(n) = self.processes_max {
            ensure(
                (1..=TASK_PROCESSES_MAX).contains(&n),
                RejectionCode::InvalidValue,
                || format!("task process limit {n} is outside 1..={TASK_PROCESSES_MAX}"),
            )?;
        }
        if let Some(w) = self.cpu_weight {
            ensure(
                CPU_WEIGHT_RANGE.contains(&w),
                RejectionCode::InvalidValue,
                || {
                    format!(
                        "task CPU weight {w} is outside {}..={}",
                        CPU_WEIGHT_RANGE.start(),
                        CPU_WEIGHT_RANGE.end()
                    )
                },
            )?;
        }
        Ok(())
    }
}

/// Most secrets installed on a pool's nodes.
pub const POOL_SECRETS_MAX: usize = 64;
/// Longest secret value, in bytes, before it is sealed.
pub const SECRET_BYTES_MAX: usize = 64 * 1024;
/// Longest sealed value: base64 of the value, its nonce and tag, and the
/// prefix.
pub const SEALED_SECRET_BYTES_MAX: usize = SECRET_BYTES_MAX * 4 / 3 + 256;

/// A named secret installed on every node of a pool. In requests the value
/// is the secret itself; the server seals it before anything is written,
/// so events and state hold it sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PoolSecret {
    pub name: String,
    pub value: Secret,
    /// Also set as a variable of this name in the start task's
    /// environment.
    pub start_task_env: bool,
}

/// Checks one secret's name and (sealed) size.
pub fn validate_secret(s: &PoolSecret) -> Result<(), Rejection> {
    ensure(
        crate::types::validate_id("secret", &s.name).is_ok(),
        RejectionCode::InvalidValue,
        || {
            format!(
                "secret name {:?} must be letters, digits, '-' or '_'",
                s.name
            )
        },
    )?;
    ensure(
        !s.start_task_env || !s.name.contains('-'),
        RejectionCode::InvalidValue,
        || {
            format!(
                "secret {} cannot be a start task variable: a variable name has no '-'",
                s.name
            )
        },
    )?;
    ensure(
        s.value.expose().len() <= SEALED_SECRET_BYTES_MAX,
        RejectionCode::InvalidValue,
        || format!("secret {} is over {SECRET_BYTES_MAX} bytes", s.name),
    )
}

/// Checks a pool's secrets: each, their count, and no name twice.
pub fn validate_secrets(secrets: &[PoolSecret]) -> Result<(), Rejection> {
    ensure(
        secrets.len() <= POOL_SECRETS_MAX,
        RejectionCode::InvalidValue,
        || format!("at most {POOL_SECRETS_MAX} secrets per pool"),
    )?;
    let mut names = std::collections::HashSet::new();
    for s in secrets {
        validate_secret(s)?;
        ensure(names.insert(&s.name), RejectionCode::InvalidValue, || {
            format!("secret {} is named twice", s.name)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        assert!(TaskSettings::default().validate().is_ok());
        for (bad, word) in [
            (
                TaskSettings {
                    memory_mib: Some(1),
                    ..Default::default()
                },
                "memory",
            ),
            (
                TaskSettings {
                    processes_max: Some(0),
                    ..Default::default()
                },
                "process",
            ),
            (
                TaskSettings {
                    cpu_weight: Some(10_001),
                    ..Default::default()
                },
                "CPU",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.detail.contains(word), "{}", e.detail);
        }
    }

    #[test]
    fn secrets_are_checked_by_name_count_and_use() {
        let secret = |name: &str, env: bool| PoolSecret {
            name: name.into(),
            value: Secret::new("x"),
            start_task_env: env,
        };
        assert!(validate_secrets(&[secret("DB_PASSWORD", true), secret("tls-key", false)]).is_ok());
        assert!(validate_secrets(&[secret("a", false), secret("a", false)]).is_err());
        assert!(validate_secrets(&[secret("bad name", false)]).is_err());
        assert!(validate_secrets(&[secret("tls-key", true)]).is_err());
        let many: Vec<_> = (0..=POOL_SECRETS_MAX)
            .map(|i| secret(&format!("s{i}"), false))
            .collect();
        assert!(validate_secrets(&many).is_err());
    }
}
