//! Azure Batch's JSON, both ways: lote's pools, nodes, jobs and tasks as
//! the SDK reads them (camelCase, lowercase state strings, RFC 3339 times,
//! ISO 8601 durations), and Azure's create bodies as lote specs. Fields
//! lote has no use for are accepted and ignored; fields it cannot honour
//! are refused with Azure's `InvalidPropertyValue` naming them.

use serde_json::{json, Map, Value};

use crate::domain::job::{Job, JobStatus, OnAllTasksComplete, OnTaskFailure};
use crate::domain::node::{Node, NodeState};
use crate::domain::pool::{NodeSize, Pool, PoolStatus, ResizeState, ScaleSettings};
use crate::domain::spec::{CommandLine, PackageRef, ResourceFile, ResourceSource};
use crate::domain::task::{FailureCategory, Task, TaskStatus};
use crate::domain::task_spec::{
    DependencyAction, ExitConditions, ExitOptions, JobAction, TaskDependencies, TaskIdRange,
};
use crate::domain::{EnvVar, Versioned};
use crate::types::Timestamp;

/// A refusal of a body: Azure's code and the property.
#[derive(Debug)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

pub fn invalid(property: &str, why: impl Into<String>) -> Invalid {
    Invalid {
        code: "InvalidPropertyValue",
        message: format!("{property}: {}", why.into()),
    }
}

/// A VM size's name and the node size it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSize {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
}

/// VM sizes a gateway knows unless the server's configuration names
/// others (`--azure-vm-size NAME=CORES:MEMORY_MIB`).
pub fn default_vm_sizes() -> Vec<VmSize> {
    [
        ("standard_a1_v2", 1, 2048),
        ("standard_a2_v2", 2, 4096),
        ("standard_a4_v2", 4, 8192),
        ("standard_d2s_v3", 2, 8192),
        ("standard_d4s_v3", 4, 16384),
        ("standard_d8s_v3", 8, 32768),
        ("standard_f2s_v2", 2, 4096),
        ("standard_f4s_v2", 4, 8192),
    ]
    .map(|(name, cores, memory_mib)| VmSize {
        name: name.into(),
        cores,
        memory_mib,
    })
    .to_vec()
}

/// `NAME=CORES:MEMORY_MIB`, as `--azure-vm-size` takes it.
pub fn parse_vm_size(text: &str) -> Result<VmSize, String> {
    let bad = || {
        format!("--azure-vm-size {text:?}: expected NAME=CORES:MEMORY_MIB (standard_d2s_v3=2:8192)")
    };
    let (name, size) = text.split_once('=').ok_or_else(bad)?;
    let (cores, memory) = size.split_once(':').ok_or_else(bad)?;
    let (cores, memory_mib) = (
        cores.trim().parse().map_err(|_| bad())?,
        memory.trim().parse().map_err(|_| bad())?,
    );
    if name.trim().is_empty() || cores == 0 || memory_mib == 0 {
        return Err(bad());
    }
    Ok(VmSize {
        name: name.trim().to_ascii_lowercase(),
        cores,
        memory_mib,
    })
}

pub fn vm_size_of(sizes: &[VmSize], size: &NodeSize) -> String {
    sizes
        .iter()
        .find(|v| v.cores == size.cores && v.memory_mib == size.memory_mib)
        .map(|v| v.name.clone())
        .unwrap_or_else(|| format!("lote_{}c_{}m", size.cores, size.memory_mib))
}

fn node_size_of(sizes: &[VmSize], vm_size: &str, slots: u32) -> Result<NodeSize, Invalid> {
    let name = vm_size.to_ascii_lowercase();
    sizes
        .iter()
        .find(|v| v.name == name)
        .map(|v| NodeSize {
            cores: v.cores,
            memory_mib: v.memory_mib,
            task_slots: slots,
        })
        .ok_or_else(|| {
            let known: Vec<&str> = sizes.iter().map(|v| v.name.as_str()).collect();
            invalid(
                "vmSize",
                format!(
                    "{vm_size:?} is not a node size of this server ({})",
                    known.join(", ")
                ),
            )
        })
}

/// An entity's ETag: its stream version.
pub fn etag(version: u64) -> String {
    format!("0x{version:X}")
}

fn time(t: &Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// ISO 8601 duration from seconds (`PT1H2M3S`; zero `PT0S`).
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    out.push('T');
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

/// Seconds of an ISO 8601 duration as the SDK sends them (`PT01H00M00S`,
/// `P1DT02H00M00S`, `PT01.5S`, `P`), rounded up.
pub fn parse_duration(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut secs = 0f64;
    let mut number = String::new();
    for (part, units) in [
        (date, [('D', 86400.0), ('W', 604800.0), ('\0', 0.0)]),
        (time, [('H', 3600.0), ('M', 60.0), ('S', 1.0)]),
    ] {
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let unit = units.iter().find(|(u, _)| *u == c)?.1;
            secs += number.parse::<f64>().ok()? * unit;
            number.clear();
        }
        if !number.is_empty() {
            return None;
        }
    }
    (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn u32_of(v: &Value, key: &str) -> Result<Option<u32>, Invalid> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(key, "is not a whole number")),
    }
}

fn duration_of(v: &Value, key: &str) -> Result<Option<u64>, Invalid> {
    match str_of(v, key) {
        None => Ok(None),
        Some(t) => parse_duration(t)
            .map(Some)
            .ok_or_else(|| invalid(key, format!("{t:?} is not an ISO 8601 duration"))),
    }
}

/// Splits a command line the way a POSIX shell splits words (quotes and
/// backslashes), without running one: Azure runs a command line without
/// a shell.
pub fn split_words(line: &str) -> Result<Vec<String>, Invalid> {
    let mut words = vec![];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(invalid("commandLine", "a ' is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(invalid("commandLine", "a \" is not closed")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(invalid("commandLine", "a \" is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(invalid("commandLine", "is empty"));
    }
    Ok(words)
}

fn command_text(c: &CommandLine) -> String {
    match c {
        CommandLine::Shell(s) => format!("/bin/sh -c {}", crate::domain::app::submit::quote(s)),
        CommandLine::Argv(a) => a
            .iter()
            .map(|w| crate::domain::app::submit::quote(w))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn env_of(v: &Value) -> Result<Vec<EnvVar>, Invalid> {
    let Some(list) = v.get("environmentSettings").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|e| {
            Ok(EnvVar {
                name: str_of(e, "name")
                    .ok_or_else(|| invalid("environmentSettings", "a setting has no name"))?
                    .to_string(),
                value: str_of(e, "value").unwrap_or_default().to_string(),
            })
        })
        .collect()
}

fn env_json(env: &[EnvVar]) -> Value {
    Value::Array(
        env.iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect(),
    )
}

/// Resource files: `httpUrl` (fetched), `autoStorageContainerName` (a
/// container of the account's own blob store, every blob, or those under
/// `blobPrefix`). Azure Storage URLs are not lote's store: refused.
fn resources_of(v: &Value) -> Result<Vec<ResourceFile>, Invalid> {
    let Some(list) = v.get("resourceFiles").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|r| {
            let path = str_of(r, "filePath").unwrap_or_default().to_string();
            let mode = str_of(r, "fileMode").and_then(|m| u32::from_str_radix(m, 8).ok());
            let source = if let Some(url) = str_of(r, "httpUrl") {
                ResourceSource::Url { url: url.into() }
            } else if let Some(container) = str_of(r, "autoStorageContainerName") {
                ResourceSource::BlobPrefix {
                    container: container.into(),
                    prefix: str_of(r, "blobPrefix").unwrap_or_default().into(),
                }
            } else {
                return Err(invalid(
                    "resourceFiles",
                    "give httpUrl, or autoStorageContainerName (a container of the account's lote blob store); storageContainerUrl names Azure Storage",
                ));
            };
            let path = if path.is_empty() && matches!(source, ResourceSource::BlobPrefix { .. }) {
                ".".to_string()
            } else {
                path
            };
            Ok(ResourceFile { source, path, mode })
        })
        .collect()
}

fn packages_of(v: &Value) -> Vec<PackageRef> {
    v.get("applicationPackageReferences")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|p| {
                    Some(PackageRef {
                        id: str_of(p, "applicationId")?.to_string(),
                        version: str_of(p, "version").map(String::from),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fields lote cannot honour, refused rather than silently dropped.
fn refuse_present(v: &Value, fields: &[(&str, &str)]) -> Result<(), Invalid> {
    for (field, why) in fields {
        match v.get(*field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
            Some(_) => return Err(invalid(field, *why)),
        }
    }
    Ok(())
}

/// `BatchPoolCreateOptions` as a lote pool (local nodes).
pub fn pool_spec(
    v: &Value,
    account: &crate::types::AccountName,
    sizes: &[VmSize],
) -> Result<crate::domain::pool::PoolSpec, Invalid> {
    refuse_present(
        v,
        &[
            (
                "targetLowPriorityNodes",
                "lote's nodes are all dedicated; ask for targetDedicatedNodes",
            ),
            (
                "enableInterNodeCommunication",
                "multi-node tasks are not supported",
            ),
            ("mountConfiguration", "lote mounts no file systems"),
        ],
    )?;
    let id = str_of(v, "id").ok_or_else(|| invalid("id", "is missing"))?;
    let id = crate::types::PoolId::new(id).map_err(|e| invalid("id", e.to_string()))?;
    let slots = u32_of(v, "taskSlotsPerNode")?.unwrap_or(1);
    let default = sizes.first().map_or("standard_a1_v2", |v| v.name.as_str());
    let size = node_size_of(sizes, str_of(v, "vmSize").unwrap_or(default), slots)?;
    let target = u32_of(v, "targetDedicatedNodes")?.unwrap_or(0);
    let mut spec = crate::domain::pool::PoolSpec::fixed(id, account.clone(), target, slots);
    spec.node_size = size;
    spec.display_name = str_of(v, "displayName").unwrap_or_default().into();
    if let Some(vm) = v.get("virtualMachineConfiguration") {
        let sku = str_of(vm, "nodeAgentSKUId")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if sku.contains("windows") {
            return Err(invalid("nodeAgentSKUId", "lote's nodes run Linux"));
        }
        // The image names the pool's OS label: kept, and read back.
        if let Some(image) = vm.get("imageReference") {
            let parts: Vec<&str> = ["publisher", "offer", "sku"]
                .iter()
                .filter_map(|k| str_of(image, k))
                .collect();
            if parts.len() == 3 {
                spec.os = parts.join(":");
            }
        }
    }
    if v.get("enableAutoScale").and_then(Value::as_bool) == Some(true) {
        spec.scale = ScaleSettings::Autoscale {
            formula: str_of(v, "autoScaleFormula")
                .ok_or_else(|| invalid("autoScaleFormula", "is needed with enableAutoScale"))?
                .into(),
            evaluation_interval_secs: duration_of(v, "autoScaleEvaluationInterval")?.unwrap_or(900),
        };
    }
    if let Some(policy) = v.get("taskSchedulingPolicy") {
        spec.scheduling = match str_of(policy, "nodeFillType") {
            Some("pack") => crate::domain::pool::SchedulingPolicy::Pack,
            _ => crate::domain::pool::SchedulingPolicy::Spread,
        };
    }
    if let Some(st) = v.get("startTask") {
        spec.start_task = Some(start_task_of(st)?);
    }
    spec.application_packages = packages_of(v);
    Ok(spec)
}

fn start_task_of(st: &Value) -> Result<crate::domain::spec::StartTask, Invalid> {
    Ok(crate::domain::spec::StartTask {
        command_line: CommandLine::Argv(split_words(
            str_of(st, "commandLine").unwrap_or_default(),
        )?),
        env: env_of(st)?,
        resource_files: resources_of(st)?,
        wait_for_success: st
            .get("waitForSuccess")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        retry_count_max: u32_of(st, "maxTaskRetryCount")?.unwrap_or(0),
    })
}

/// What a pool update changes: its start task and packages (`replace`:
/// `updateproperties`, where an absent one is removed). Other properties
/// are what lote made the pool with; asking to change them is refused.
pub fn pool_update(
    v: &Value,
    current: &crate::domain::pool::PoolSpec,
    replace: bool,
    sizes: &[VmSize],
) -> Result<
    (
        Option<crate::domain::pool::StartTaskUpdate>,
        Option<Vec<PackageRef>>,
    ),
    Invalid,
> {
    use crate::domain::pool::StartTaskUpdate;
    if v.get("metadata")
        .and_then(Value::as_array)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(invalid("metadata", "lote keeps no pool metadata"));
    }
    refuse_present(
        v,
        &[(
            "enableInterNodeCommunication",
            "multi-node tasks are not supported",
        )],
    )?;
    if let Some(name) = str_of(v, "displayName").filter(|n| *n != current.display_name) {
        return Err(invalid(
            "displayName",
            format!("{name:?}: a pool keeps the name it was made with"),
        ));
    }
    if let Some(size) = str_of(v, "vmSize").filter(|s| *s != vm_size_of(sizes, &current.node_size))
    {
        return Err(invalid(
            "vmSize",
            format!("{size:?}: a pool keeps the node size it was made with"),
        ));
    }
    let start_task = match v.get("startTask").filter(|s| !s.is_null()) {
        Some(st) => Some(StartTaskUpdate::Set(start_task_of(st)?)),
        None if replace => Some(StartTaskUpdate::Remove),
        None => None,
    };
    let packages = match v.get("applicationPackageReferences") {
        Some(_) => Some(packages_of(v)),
        None if replace => Some(vec![]),
        None => None,
    };
    Ok((start_task, packages))
}

pub fn pool_json(base: &str, p: &Versioned<Pool>, current_nodes: u32, sizes: &[VmSize]) -> Value {
    let s = &p.state;
    let Some(spec) = &s.spec else {
        return Value::Null;
    };
    let mut out = json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/pools/{}", spec.id),
        "eTag": etag(p.version),
        "lastModified": time(&s.resized_at.or(s.created_at)),
        "creationTime": time(&s.created_at),
        "state": if s.status == PoolStatus::Deleting { "deleting" } else { "active" },
        "stateTransitionTime": time(&s.created_at),
        "allocationState": match s.resize { ResizeState::Steady => "steady", _ => "resizing" },
        "allocationStateTransitionTime": time(&s.resized_at.or(s.created_at)),
        "vmSize": vm_size_of(sizes, &spec.node_size),
        "virtualMachineConfiguration": vm_configuration(&spec.os),
        "currentDedicatedNodes": current_nodes,
        "currentLowPriorityNodes": 0,
        "targetDedicatedNodes": s.target_nodes,
        "targetLowPriorityNodes": 0,
        "enableAutoScale": s.autoscale.is_some(),
        "enableInterNodeCommunication": false,
        "taskSlotsPerNode": spec.node_size.task_slots,
        "taskSchedulingPolicy": {"nodeFillType": match spec.scheduling { crate::domain::pool::SchedulingPolicy::Pack => "pack", _ => "spread" }},
    });
    if let (Some(st), Value::Object(map)) = (&spec.start_task, &mut out) {
        map.insert(
            "startTask".into(),
            json!({
                "commandLine": command_text(&st.command_line),
                "environmentSettings": env_json(&st.env),
                "waitForSuccess": st.wait_for_success,
                "maxTaskRetryCount": st.retry_count_max,
            }),
        );
    }
    if let (Some((formula, interval)), Value::Object(map)) = (&s.autoscale, &mut out) {
        map.insert("autoScaleFormula".into(), json!(formula));
        map.insert(
            "autoScaleEvaluationInterval".into(),
            json!(duration(*interval)),
        );
    }
    out
}

/// A pool's OS label as Azure's VM configuration: an image's
/// `publisher:offer:sku` back as its reference.
fn vm_configuration(os: &str) -> Value {
    match os.split(':').collect::<Vec<_>>().as_slice() {
        [publisher, offer, sku] => json!({
            "imageReference": {"publisher": publisher, "offer": offer, "sku": sku},
            "nodeAgentSKUId": "batch.node.lote",
        }),
        _ => json!({"nodeAgentSKUId": os}),
    }
}

/// A node's state as `/nodecounts` names its counter (camelCase).
pub fn node_state_key(s: NodeState) -> &'static str {
    match node_state(s) {
        "waitingforstarttask" => "waitingForStartTask",
        "starttaskfailed" => "startTaskFailed",
        "leavingpool" => "leavingPool",
        other => other,
    }
}

fn node_state(s: NodeState) -> &'static str {
    match s {
        NodeState::Absent | NodeState::Creating => "creating",
        NodeState::Starting => "starting",
        NodeState::WaitingForStartTask => "waitingforstarttask",
        NodeState::StartTaskFailed => "starttaskfailed",
        NodeState::Idle => "idle",
        NodeState::Running => "running",
        NodeState::Offline => "offline",
        NodeState::Unusable => "unusable",
        NodeState::Rebooting => "rebooting",
        NodeState::LeavingPool | NodeState::Removed => "leavingpool",
    }
}

pub fn node_json(base: &str, pool: &str, n: &Versioned<Node>, vm_size: &str) -> Value {
    let s = &n.state;
    let id = s.id.as_ref().map(|i| i.to_string()).unwrap_or_default();
    json!({
        "id": id,
        "url": format!("{base}/pools/{pool}/nodes/{id}"),
        "state": node_state(s.state),
        // Azure's offline is lote's: scheduling disabled.
        "schedulingState": if s.state == NodeState::Offline { "disabled" } else { "enabled" },
        "stateTransitionTime": time(&s.state_since),
        "allocationTime": time(&s.created_at),
        "lastBootTime": time(&s.created_at),
        "ipAddress": s.agent.as_ref().map(|a| a.address.clone()).unwrap_or_default(),
        "affinityId": format!("{pool}/{id}"),
        "vmSize": vm_size,
        "isDedicated": true,
        "runningTasksCount": s.running_tasks,
        "totalTasksRun": 0,
    })
}

/// Job properties lote has no use for, refused when set.
const JOB_UNSUPPORTED: [(&str, &str); 2] = [
    ("allowTaskPreemption", "lote does not preempt tasks"),
    (
        "networkConfiguration",
        "lote's pools have no virtual networks",
    ),
];

/// `BatchJobCreateOptions` (or a schedule's `jobSpecification`) into the
/// job spec's fields. The pool: `poolInfo.poolId`, or an auto pool.
pub fn job_spec(
    v: &Value,
    id: crate::types::JobId,
    account: &crate::types::AccountName,
    sizes: &[VmSize],
) -> Result<crate::domain::job::JobSpec, Invalid> {
    refuse_present(v, &JOB_UNSUPPORTED)?;
    let info = v
        .get("poolInfo")
        .ok_or_else(|| invalid("poolInfo", "is missing"))?;
    let mut auto_pool = None;
    let pool = if let Some(p) = str_of(info, "poolId") {
        crate::types::PoolId::new(p).map_err(|e| invalid("poolInfo.poolId", e.to_string()))?
    } else if let Some(auto) = info.get("autoPoolSpecification") {
        if str_of(auto, "poolLifetimeOption") == Some("jobschedule") {
            return Err(invalid(
                "poolLifetimeOption",
                "jobschedule is not supported: each of a schedule's jobs gets its own pool (job)",
            ));
        }
        let mut body = auto.get("pool").cloned().unwrap_or_else(|| json!({}));
        body["id"] = json!(id.as_str());
        let pool = pool_spec(&body, account, sizes)?;
        auto_pool = Some(Box::new(crate::domain::job::AutoPool {
            pool,
            keep_alive: auto
                .get("keepAlive")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }));
        crate::types::PoolId::new(id.as_str()).map_err(|e| invalid("id", e.to_string()))?
    } else {
        return Err(invalid("poolInfo", "give poolId or autoPoolSpecification"));
    };
    let mut spec = crate::domain::job::JobSpec::on_pool(id, account.clone(), pool);
    spec.auto_pool = auto_pool;
    spec.display_name = str_of(v, "displayName").unwrap_or_default().into();
    spec.priority = v.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32;
    if let Some(c) = v.get("constraints") {
        spec.max_wall_clock_secs = duration_of(c, "maxWallClockTime")?;
        spec.max_task_retries = u32_of(c, "maxTaskRetryCount")?.unwrap_or(0);
    }
    spec.on_all_tasks_complete = match str_of(v, "onAllTasksComplete") {
        Some("terminatejob") => OnAllTasksComplete::TerminateJob,
        _ => OnAllTasksComplete::NoAction,
    };
    spec.on_task_failure = match str_of(v, "onTaskFailure") {
        Some("performexitoptionsjobaction") => OnTaskFailure::PerformExitOptionsJobAction,
        _ => OnTaskFailure::NoAction,
    };
    if v.get("usesTaskDependencies").and_then(Value::as_bool) == Some(true) {
        spec.dependencies = Some(crate::domain::job::JobDependencies {
            on_failed_parent: DependencyAction::Block,
        });
    }
    spec.common_env = env_of(&json!({"environmentSettings": v.get("commonEnvironmentSettings")}))?;
    spec.metadata = metadata_of(v)?;
    if let Some(p) = v.get("jobPreparationTask") {
        let c = p.get("constraints").cloned().unwrap_or_else(|| json!({}));
        spec.preparation = Some(Box::new(crate::domain::job_prep::JobPreparation {
            command_line: CommandLine::Argv(split_words(
                str_of(p, "commandLine").unwrap_or_default(),
            )?),
            env: env_of(p)?,
            resource_files: resources_of(p)?,
            max_wall_clock_secs: duration_of(&c, "maxWallClockTime")?,
            retry_count_max: u32_of(&c, "maxTaskRetryCount")?.unwrap_or(0),
            wait_for_success: p
                .get("waitForSuccess")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            rerun_on_reboot_after_success: p
                .get("rerunOnNodeRebootAfterSuccess")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }));
    }
    if let Some(r) = v.get("jobReleaseTask") {
        spec.release = Some(Box::new(crate::domain::job_prep::JobRelease {
            command_line: CommandLine::Argv(split_words(
                str_of(r, "commandLine").unwrap_or_default(),
            )?),
            env: env_of(r)?,
            max_wall_clock_secs: duration_of(r, "maxWallClockTime")?
                .unwrap_or(crate::domain::job_prep::RELEASE_SECS_MAX),
        }));
    }
    if let Some(m) = v.get("jobManagerTask") {
        let mut task = task_spec(m)?;
        task.constraints.max_task_retries = Some(task.constraints.max_task_retries.unwrap_or(0));
        spec.job_manager = Some(Box::new(crate::domain::job::JobManager {
            task,
            kill_job_on_completion: m
                .get("killJobOnCompletion")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            run_exclusive: m
                .get("runExclusive")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }));
    }
    Ok(spec)
}

/// A job's spec after Azure's update (`replace`: PUT, absent properties
/// back to their defaults) of the properties lote lets change.
pub fn job_update(
    v: &Value,
    mut spec: crate::domain::job::JobSpec,
    replace: bool,
) -> Result<crate::domain::job::JobSpec, Invalid> {
    refuse_present(v, &JOB_UNSUPPORTED)?;
    if let Some(pool) = v
        .get("poolInfo")
        .and_then(|p| p.get("poolId"))
        .and_then(Value::as_str)
    {
        if pool != spec.pool.as_str() {
            return Err(invalid("poolInfo", "lote moves no job to another pool"));
        }
    }
    let given = |key: &str| v.get(key).is_some_and(|x| !x.is_null());
    if given("priority") || replace {
        spec.priority = v.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32;
    }
    if given("constraints") || replace {
        let c = v.get("constraints").cloned().unwrap_or_else(|| json!({}));
        spec.max_wall_clock_secs = duration_of(&c, "maxWallClockTime")?;
        spec.max_task_retries = u32_of(&c, "maxTaskRetryCount")?.unwrap_or(0);
    }
    if given("onAllTasksComplete") || replace {
        spec.on_all_tasks_complete = match str_of(v, "onAllTasksComplete") {
            Some("terminatejob") => OnAllTasksComplete::TerminateJob,
            _ => OnAllTasksComplete::NoAction,
        };
    }
    if given("onTaskFailure") || replace {
        spec.on_task_failure = match str_of(v, "onTaskFailure") {
            Some("performexitoptionsjobaction") => OnTaskFailure::PerformExitOptionsJobAction,
            _ => OnTaskFailure::NoAction,
        };
    }
    if given("metadata") || replace {
        spec.metadata = metadata_of(v)?;
    }
    Ok(spec)
}

fn metadata_of(v: &Value) -> Result<Vec<crate::domain::job_prep::MetadataItem>, Invalid> {
    let Some(list) = v.get("metadata").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|m| {
            Ok(crate::domain::job_prep::MetadataItem {
                name: str_of(m, "name")
                    .ok_or_else(|| invalid("metadata", "an item has no name"))?
                    .into(),
                value: str_of(m, "value").unwrap_or_default().into(),
            })
        })
        .collect()
}

fn job_state(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Absent | JobStatus::Active => "active",
        JobStatus::Disabled => "disabled",
        JobStatus::Terminating => "terminating",
        JobStatus::Completed => "completed",
        JobStatus::Deleted => "deleting",
    }
}

pub fn job_json(base: &str, j: &Versioned<Job>) -> Value {
    let s = &j.state;
    let Some(spec) = &s.spec else {
        return Value::Null;
    };
    json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/jobs/{}", spec.id),
        "eTag": etag(j.version),
        "lastModified": time(&s.completed_at.or(s.created_at)),
        "creationTime": time(&s.created_at),
        "state": job_state(s.status),
        "stateTransitionTime": time(&s.completed_at.or(s.created_at)),
        "priority": spec.priority,
        "usesTaskDependencies": spec.dependencies.is_some(),
        "constraints": {
            "maxWallClockTime": spec.max_wall_clock_secs.map(duration),
            "maxTaskRetryCount": spec.max_task_retries,
        },
        "poolInfo": {"poolId": spec.pool},
        "onAllTasksComplete": match spec.on_all_tasks_complete { OnAllTasksComplete::TerminateJob => "terminatejob", _ => "noaction" },
        "onTaskFailure": match spec.on_task_failure { OnTaskFailure::PerformExitOptionsJobAction => "performexitoptionsjobaction", _ => "noaction" },
        "commonEnvironmentSettings": env_json(&spec.common_env),
        "metadata": spec.metadata.iter().map(|m| json!({"name": m.name, "value": m.value})).collect::<Vec<_>>(),
        "executionInfo": {
            "startTime": time(&s.created_at),
            "endTime": time(&s.completed_at),
            "poolId": spec.pool,
            // Azure's words for lote's own reasons.
            "terminateReason": s.completion_reason.as_deref().map(|r| match r {
                "all tasks completed" | "all tasks finished" => "AllTasksComplete",
                "job manager complete" => "JMComplete",
                other => other,
            }),
        },
    })
}

fn exit_options_of(v: &Value) -> ExitOptions {
    let o = v.get("exitOptions").unwrap_or(v);
    ExitOptions {
        job_action: match str_of(o, "jobAction") {
            Some("disable") => Some(JobAction::Disable),
            Some("terminate") => Some(JobAction::Terminate),
            Some("none") => Some(JobAction::None),
            _ => None,
        },
        dependency_action: match str_of(o, "dependencyAction") {
            Some("satisfy") => Some(DependencyAction::Satisfy),
            Some("block") => Some(DependencyAction::Block),
            _ => None,
        },
        retry: None,
    }
}

fn exit_conditions_of(v: &Value) -> Option<Box<ExitConditions>> {
    let e = v.get("exitConditions")?;
    let list = |key| {
        e.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    Some(Box::new(ExitConditions {
        exit_codes: list("exitCodes")
            .iter()
            .filter_map(|c| Some((c.get("code")?.as_i64()? as i32, exit_options_of(c))))
            .collect(),
        exit_code_ranges: list("exitCodeRanges")
            .iter()
            .filter_map(|c| {
                Some((
                    c.get("start")?.as_i64()? as i32,
                    c.get("end")?.as_i64()? as i32,
                    exit_options_of(c),
                ))
            })
            .collect(),
        pre_processing_error: e.get("preProcessingError").map(exit_options_of),
        file_upload_error: e.get("fileUploadError").map(exit_options_of),
        default: e.get("default").map(exit_options_of),
    }))
}

/// `BatchTaskCreateOptions` as a lote task spec.
pub fn task_spec(v: &Value) -> Result<crate::domain::task::TaskSpec, Invalid> {
    refuse_present(
        v,
        &[
            ("multiInstanceSettings", "multi-instance tasks are not supported"),
            ("containerSettings", "lote runs no containers"),
            ("outputFiles", "output files name Azure Storage; upload to lote's blob store with the lote CLI or the message API"),
        ],
    )?;
    let id = str_of(v, "id").ok_or_else(|| invalid("id", "is missing"))?;
    let id = crate::types::TaskId::new(id).map_err(|e| invalid("id", e.to_string()))?;
    let argv = split_words(str_of(v, "commandLine").unwrap_or_default())?;
    let mut t = crate::domain::task::TaskSpec::simple(id, CommandLine::Argv(argv));
    t.display_name = str_of(v, "displayName").unwrap_or_default().into();
    t.env = env_of(v)?;
    t.resource_files = resources_of(v)?;
    if let Some(c) = v.get("constraints") {
        t.constraints.max_wall_clock_secs = duration_of(c, "maxWallClockTime")?;
        t.constraints.retention_secs = duration_of(c, "retentionTime")?;
        t.constraints.max_task_retries = u32_of(c, "maxTaskRetryCount")?;
    }
    t.required_slots = u32_of(v, "requiredSlots")?.unwrap_or(1);
    t.application_packages = packages_of(v);
    if let Some(d) = v.get("dependsOn") {
        t.depends_on = TaskDependencies {
            task_ids: d
                .get("taskIds")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|x| x.as_str())
                        .filter_map(|x| crate::types::TaskId::new(x).ok())
                        .collect()
                })
                .unwrap_or_default(),
            ranges: d
                .get("taskIdRanges")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|r| {
                            Some(TaskIdRange {
                                start: r.get("start")?.as_u64()?,
                                end: r.get("end")?.as_u64()?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
    }
    t.exit_conditions = exit_conditions_of(v);
    Ok(t)
}

fn task_state(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Absent | TaskStatus::Active => "active",
        TaskStatus::Assigned => "preparing",
        TaskStatus::Running => "running",
        TaskStatus::Completed | TaskStatus::Deleted => "completed",
    }
}

pub fn task_json(base: &str, job: &str, t: &Versioned<Task>) -> Value {
    let s = &t.state;
    let Some(spec) = &s.spec else {
        return Value::Null;
    };
    let mut exec = Map::new();
    exec.insert("startTime".into(), time(&s.started_at));
    exec.insert("endTime".into(), time(&s.completed_at));
    exec.insert("retryCount".into(), json!(s.retry_count));
    exec.insert("requeueCount".into(), json!(s.requeue_count));
    if let (TaskStatus::Completed, Some(r)) = (s.status, &s.last_result) {
        exec.insert("exitCode".into(), json!(r.exit_code));
        exec.insert(
            "result".into(),
            json!(if r.succeeded() { "success" } else { "failure" }),
        );
        if let Some((category, message)) = &r.failure {
            let (azure, code) = match category {
                FailureCategory::NonZeroExit => ("usererror", "NonZeroExitCode"),
                FailureCategory::ResourceFile => ("usererror", "BlobDownloadMiscError"),
                FailureCategory::OutputFile => ("usererror", "FileUploadMiscError"),
                FailureCategory::LaunchFailure => ("usererror", "CommandProgramNotFound"),
                FailureCategory::Timeout => ("usererror", "MaxWallClockTimeExpired"),
                FailureCategory::Terminated => ("usererror", "TaskEnded"),
                FailureCategory::ParentFailed => ("usererror", "TaskDependenciesNotSatisfied"),
                _ => ("servererror", "TaskFailed"),
            };
            exec.insert(
                "failureInfo".into(),
                json!({"category": azure, "code": code, "message": message}),
            );
        }
    }
    let mut out = json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/jobs/{job}/tasks/{}", spec.id),
        "eTag": etag(t.version),
        "creationTime": time(&s.added_at),
        "lastModified": time(&s.completed_at.or(s.started_at).or(s.added_at)),
        "state": task_state(s.status),
        "stateTransitionTime": time(&s.completed_at.or(s.started_at).or(s.added_at)),
        "commandLine": command_text(&spec.command_line),
        "environmentSettings": env_json(&spec.env),
        "requiredSlots": spec.required_slots,
        "constraints": {
            "maxWallClockTime": spec.constraints.max_wall_clock_secs.map(duration),
            "retentionTime": spec.constraints.retention_secs.map(duration),
            "maxTaskRetryCount": s.max_task_retries,
        },
        "executionInfo": Value::Object(exec),
    });
    if let (Some(p), Value::Object(map)) = (&s.placement, &mut out) {
        map.insert(
            "nodeInfo".into(),
            json!({"poolId": p.pool, "nodeId": p.node, "nodeUrl": format!("{base}/pools/{}/nodes/{}", p.pool, p.node)}),
        );
    }
    if !spec.depends_on.is_empty() {
        out["dependsOn"] = json!({
            "taskIds": spec.depends_on.task_ids,
            "taskIdRanges": spec.depends_on.ranges.iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_both_ways() {
        for (text, secs) in [
            ("PT01H00M00S", 3600),
            ("PT05M00S", 300),
            ("P1DT02H00M00S", 93600),
            ("PT01.5S", 2),
            ("P", 0),
            ("PT1H", 3600),
            ("P180D", 180 * 86400),
        ] {
            assert_eq!(parse_duration(text), Some(secs), "{text}");
        }
        assert_eq!(parse_duration("1 hour"), None);
        assert_eq!(parse_duration("PT1X"), None);
        assert_eq!(duration(3723), "PT1H2M3S");
        assert_eq!(duration(0), "PT0S");
        assert_eq!(parse_duration(&duration(93600)), Some(93600));
    }

    #[test]
    fn command_lines_split_like_a_shell_without_one() {
        assert_eq!(
            split_words(r#"/bin/sh -c 'echo "a b" > out.txt' x\ y "q\"z""#).unwrap(),
            ["/bin/sh", "-c", "echo \"a b\" > out.txt", "x y", "q\"z"]
        );
        assert!(split_words("echo 'open").is_err());
        assert!(split_words("   ").is_err());
    }
}
