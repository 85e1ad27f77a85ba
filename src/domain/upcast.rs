//! Upcasters: how events written by an older payload layout are read.
//!
//! Each envelope records its event type and the layout version of its
//! payload. When a variant's fields change, list the change in
//! `layouts.rs` (which the event types read for their current layout), keep
//! the old layout's struct here, and add its lift to [`lift_for`]. Steps
//! chain, so a v1 payload goes v1 → v2 → v3. Golden logs in `replay/` hold
//! payloads of every released layout and fail CI if a step is missing.
//!
//! Upcasters depend on the event types, never the other way round.

use crate::codec::CodecError;
use crate::store::StreamKind;

use super::layouts::CHANGES;
pub use super::layouts::{current_schema, newest_layout, LayoutChange, CURRENT_EVENT_SCHEMA};

/// Turns a payload of one layout into the next layout's.
pub type Lift = fn(&[u8]) -> Result<Vec<u8>, CodecError>;

/// One upcasting step: payload of `(kind, event_type)` at `from` → `from + 1`.
pub struct Step {
    pub kind: StreamKind,
    pub event_type: &'static str,
    pub from: u16,
    pub lift: Lift,
}

/// The function that lifts one listed layout change.
pub fn lift_for(change: &LayoutChange) -> Option<Lift> {
    match (change.kind, change.event_type, change.from) {
        (StreamKind::Task, "TaskAdded", 1) => Some(v1::task_added),
        (StreamKind::Job, "JobCreated", 1) => Some(v1::job_created),
        (StreamKind::Pool, "PoolCreated", 1) => Some(v1::pool_created),
        (StreamKind::Pool, "PoolCreated", 2) => Some(v2::pool_created),
        (StreamKind::Job, "JobCreated", 2) => Some(v2::job_created),
        (StreamKind::Task, "TaskAdded", 2) => Some(v3::task_added),
        (StreamKind::Job, "JobCreated", 3) => Some(v3::job_created),
        (StreamKind::Schedule, "ScheduleCreated", 1) => Some(v3::schedule_spec),
        (StreamKind::Schedule, "ScheduleUpdated", 1) => Some(v3::schedule_spec),
        (StreamKind::Task, "TaskAdded", 3) => Some(v4::task_added),
        (StreamKind::Job, "JobCreated", 4) => Some(v4::job_created),
        (StreamKind::Schedule, "ScheduleCreated", 2) => Some(v4::schedule_spec),
        (StreamKind::Schedule, "ScheduleUpdated", 2) => Some(v4::schedule_spec),
        _ => None,
    }
}

/// Every listed change with its lift (a change without one is left out,
/// and reading its old payloads fails; a test keeps the list whole).
fn steps() -> Vec<Step> {
    CHANGES
        .iter()
        .filter_map(|c| {
            lift_for(c).map(|lift| Step {
                kind: c.kind,
                event_type: c.event_type,
                from: c.from,
                lift,
            })
        })
        .collect()
}

/// Layout 1, before files and application packages (lote 0.1 up to the
/// blob store): specs without `application_packages` (tasks, pools) and
/// `common_resource_files` (jobs). An event payload is the event enum: the
/// variant's index, then its fields, so an old variant decodes as
/// `(index, fields)`.
mod v3;
mod v4;

mod v1 {
    use serde::{Deserialize, Serialize};

    use super::v2::{PoolSecretV2, PoolSpecV2};
    use crate::codec::{self, CodecError};
    use crate::domain::job::{OnAllTasksComplete, OnTaskFailure};
    use crate::domain::pool::{NodeProvider, NodeSize, ScaleSettings, SchedulingPolicy};
    use crate::domain::spec::{CommandLine, OutputFile, ResourceFile, StartTask};
    use crate::domain::task::TaskConstraints;
    use crate::domain::EnvVar;
    use crate::types::{AccountName, JobId, PoolId, TaskId, Timestamp};

    #[derive(Serialize, Deserialize)]
    struct TaskSpecV1 {
        id: TaskId,
        display_name: String,
        command_line: CommandLine,
        env: Vec<EnvVar>,
        resource_files: Vec<ResourceFile>,
        output_files: Vec<OutputFile>,
        constraints: TaskConstraints,
        required_slots: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct TaskAddedV1 {
        account: AccountName,
        job: JobId,
        pool: PoolId,
        spec: TaskSpecV1,
        max_task_retries: u32,
        at: Timestamp,
    }

    /// To layout 2 (TaskAdded is the first variant).
    pub fn task_added(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (index, old): (u32, TaskAddedV1) = codec::decode(bytes)?;
        let s = old.spec;
        codec::encode(&(
            index,
            super::v3::TaskAddedV2 {
                account: old.account,
                job: old.job,
                pool: old.pool,
                spec: super::v3::TaskSpecV2 {
                    id: s.id,
                    display_name: s.display_name,
                    command_line: s.command_line,
                    env: s.env,
                    resource_files: s.resource_files,
                    output_files: s.output_files,
                    constraints: s.constraints,
                    required_slots: s.required_slots,
                    application_packages: vec![],
                },
                max_task_retries: old.max_task_retries,
                at: old.at,
            },
        ))
    }

    #[derive(Serialize, Deserialize)]
    struct JobSpecV1 {
        id: JobId,
        account: AccountName,
        pool: PoolId,
        display_name: String,
        priority: i32,
        max_wall_clock_secs: Option<u64>,
        max_task_retries: u32,
        on_all_tasks_complete: OnAllTasksComplete,
        on_task_failure: OnTaskFailure,
    }

    /// To layout 2 (the variant's index, then its fields).
    pub fn job_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (index, (s, at)): (u32, (JobSpecV1, Timestamp)) = codec::decode(bytes)?;
        codec::encode(&(
            index,
            (
                super::v2::JobSpecV2 {
                    id: s.id,
                    account: s.account,
                    pool: s.pool,
                    display_name: s.display_name,
                    priority: s.priority,
                    max_wall_clock_secs: s.max_wall_clock_secs,
                    max_task_retries: s.max_task_retries,
                    on_all_tasks_complete: s.on_all_tasks_complete,
                    on_task_failure: s.on_task_failure,
                    common_resource_files: vec![],
                },
                at,
            ),
        ))
    }

    #[derive(Serialize, Deserialize)]
    struct PoolSpecV1 {
        id: PoolId,
        account: AccountName,
        display_name: String,
        node_size: NodeSize,
        os: String,
        scale: ScaleSettings,
        node_count_max: u32,
        inter_node_communication: bool,
        secrets: Vec<PoolSecretV2>,
        start_task: Option<StartTask>,
        scheduling: SchedulingPolicy,
        provider: NodeProvider,
    }

    /// To layout 2: the variant's index (PoolCreated is the first), then
    /// its fields.
    pub fn pool_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (index, (s, at)): (u32, (PoolSpecV1, Timestamp)) = codec::decode(bytes)?;
        codec::encode(&(
            index,
            (
                PoolSpecV2 {
                    id: s.id,
                    account: s.account,
                    display_name: s.display_name,
                    node_size: s.node_size,
                    os: s.os,
                    scale: s.scale,
                    node_count_max: s.node_count_max,
                    inter_node_communication: s.inter_node_communication,
                    secrets: s.secrets,
                    start_task: s.start_task,
                    scheduling: s.scheduling,
                    provider: s.provider,
                    application_packages: vec![],
                },
                at,
            ),
        ))
    }
}

/// Layout 2, before pools said how their tasks run (user scope,
/// elevation, limits) and before secrets could be start task variables.
mod v2 {
    use serde::{Deserialize, Serialize};

    use crate::codec::{self, CodecError};
    use crate::domain::pool::{
        NodeProvider, NodeSize, PoolEvent, PoolSecret, PoolSpec, ScaleSettings, SchedulingPolicy,
        TaskSettings,
    };
    use crate::domain::spec::{PackageRef, StartTask};
    use crate::types::{AccountName, PoolId, Secret, Timestamp};

    #[derive(Serialize, Deserialize)]
    pub struct PoolSecretV2 {
        pub name: String,
        pub value: Secret,
    }

    #[derive(Serialize, Deserialize)]
    pub struct PoolSpecV2 {
        pub id: PoolId,
        pub account: AccountName,
        pub display_name: String,
        pub node_size: NodeSize,
        pub os: String,
        pub scale: ScaleSettings,
        pub node_count_max: u32,
        pub inter_node_communication: bool,
        pub secrets: Vec<PoolSecretV2>,
        pub start_task: Option<StartTask>,
        pub scheduling: SchedulingPolicy,
        pub provider: NodeProvider,
        pub application_packages: Vec<PackageRef>,
    }

    /// Layout 2 of a job's spec: before job managers.
    #[derive(Serialize, Deserialize)]
    pub struct JobSpecV2 {
        pub id: crate::types::JobId,
        pub account: AccountName,
        pub pool: PoolId,
        pub display_name: String,
        pub priority: i32,
        pub max_wall_clock_secs: Option<u64>,
        pub max_task_retries: u32,
        pub on_all_tasks_complete: crate::domain::job::OnAllTasksComplete,
        pub on_task_failure: crate::domain::job::OnTaskFailure,
        pub common_resource_files: Vec<crate::domain::spec::ResourceFile>,
    }

    /// To layout 3 (the variant's index kept).
    pub fn job_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (index, (s, at)): (u32, (JobSpecV2, Timestamp)) = codec::decode(bytes)?;
        codec::encode(&(
            index,
            (
                super::v3::JobSpecV3 {
                    id: s.id,
                    account: s.account,
                    pool: s.pool,
                    display_name: s.display_name,
                    priority: s.priority,
                    max_wall_clock_secs: s.max_wall_clock_secs,
                    max_task_retries: s.max_task_retries,
                    on_all_tasks_complete: s.on_all_tasks_complete,
                    on_task_failure: s.on_task_failure,
                    common_resource_files: s.common_resource_files,
                    job_manager: None,
                },
                at,
            ),
        ))
    }

    pub fn pool_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let (_, (s, at)): (u32, (PoolSpecV2, Timestamp)) = codec::decode(bytes)?;
        codec::encode(&PoolEvent::PoolCreated {
            spec: PoolSpec {
                id: s.id,
                account: s.account,
                display_name: s.display_name,
                node_size: s.node_size,
                os: s.os,
                scale: s.scale,
                node_count_max: s.node_count_max,
                inter_node_communication: s.inter_node_communication,
                secrets: s
                    .secrets
                    .into_iter()
                    .map(|old| PoolSecret {
                        name: old.name,
                        value: old.value,
                        start_task_env: false,
                    })
                    .collect(),
                start_task: s.start_task,
                scheduling: s.scheduling,
                provider: s.provider,
                application_packages: s.application_packages,
                // What every pool before layout 3 did: one user for the
                // pool, unprivileged, the node's limits.
                task_settings: TaskSettings {
                    user_scope: crate::domain::pool::UserScope::Pool,
                    ..TaskSettings::default()
                },
            },
            at,
        })
    }
}

/// Lifts a payload to the current layout using `steps`.
pub fn upcast_with(
    steps: &[Step],
    current: u16,
    kind: StreamKind,
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
) -> Result<Vec<u8>, CodecError> {
    if schema_version > current {
        return Err(CodecError::Decode(format!(
            "{event_type} has payload layout {schema_version}, newer than this build's {current}"
        )));
    }
    let mut bytes = payload.to_vec();
    let mut version = schema_version;
    while version < current {
        let step = steps
            .iter()
            .find(|s| s.kind == kind && s.event_type == event_type && s.from == version)
            .ok_or_else(|| {
                CodecError::Decode(format!(
                    "no upcaster for {event_type} from layout {version}"
                ))
            })?;
        bytes = (step.lift)(&bytes)?;
        version += 1;
    }
    Ok(bytes)
}

/// Lifts a payload to the current layout.
/// Borrows the payload when it is already current (the common case).
pub fn upcast<'a>(
    kind: StreamKind,
    event_type: &str,
    schema_version: u16,
    payload: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    let current = current_schema(kind, event_type);
    if schema_version == current {
        return Ok(std::borrow::Cow::Borrowed(payload));
    }
    upcast_with(&steps(), current, kind, event_type, schema_version, payload)
        .map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use serde::{Deserialize, Serialize};

    // A worked example of the mechanism: a layout 1 that lacked `priority`,
    // lifted to a layout 2 that has it with a default.
    #[derive(Serialize, Deserialize)]
    struct V1 {
        id: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        id: String,
        priority: i32,
    }
    fn v1_to_v2(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let old: V1 = codec::decode(bytes)?;
        codec::encode(&V2 {
            id: old.id,
            priority: 0,
        })
    }

    #[test]
    fn every_listed_layout_change_has_a_lift() {
        for c in CHANGES {
            assert!(
                lift_for(c).is_some(),
                "{:?} {} from layout {} has no lift",
                c.kind,
                c.event_type,
                c.from
            );
        }
        assert_eq!(steps().len(), CHANGES.len());
    }

    #[test]
    fn steps_chain_and_missing_steps_are_errors() {
        let steps = [Step {
            kind: StreamKind::Job,
            event_type: "JobCreated",
            from: 1,
            lift: v1_to_v2,
        }];
        let old = codec::encode(&V1 { id: "j".into() }).unwrap();
        let lifted = upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 1, &old).unwrap();
        let new: V2 = codec::decode(&lifted).unwrap();
        assert_eq!(
            new,
            V2 {
                id: "j".into(),
                priority: 0
            }
        );
        assert!(upcast_with(&steps, 2, StreamKind::Job, "JobDeleted", 1, &old).is_err());
        assert!(upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 3, &old).is_err());
        assert_eq!(
            upcast_with(&steps, 2, StreamKind::Job, "JobCreated", 2, &old).unwrap(),
            old
        );
    }
}
