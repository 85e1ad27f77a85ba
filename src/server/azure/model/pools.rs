//! Pools and nodes in Azure's JSON, and the VM sizes a gateway knows.

use serde_json::{json, Value};

use super::*;
use crate::domain::node::{Node, NodeState};
use crate::domain::pool::{NodeSize, Pool, PoolStatus, ResizeState, ScaleSettings};
use crate::domain::Versioned;

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
            (
                "networkConfiguration",
                "lote's pools have no virtual networks",
            ),
            (
                "userAccounts",
                "tasks run as users lote makes for them (pool create --task-user-scope)",
            ),
            (
                "certificateReferences",
                "lote installs no certificates on nodes; use pool secrets",
            ),
            ("metadata", "lote keeps no pool metadata"),
            ("identity", "lote's nodes have no managed identity"),
            ("upgradePolicy", "lote's nodes are not upgraded in place"),
            ("resourceTags", "lote keeps no resource tags"),
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
        refuse_present(
            vm,
            &[
                ("containerConfiguration", "lote runs no containers"),
                (
                    "extensions",
                    "lote installs no VM extensions; use a start task",
                ),
                (
                    "dataDisks",
                    "lote attaches no disks; nodes use their machine's",
                ),
                ("osDisk", "lote's nodes use their machine's disk"),
            ],
        )?;
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
    if flag(v, "enableAutoScale", false) {
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
        wait_for_success: flag(st, "waitForSuccess", true),
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
