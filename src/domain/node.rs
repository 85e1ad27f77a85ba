//! Node: one machine (or agent process) of a pool, and its lifecycle.
//!
//! ```text
//!  creating → starting → waitingForStartTask → idle ⇄ running
//!                 │               └→ startTaskFailed          │
//!                 └──────────────────→ idle                    ├→ offline (scheduling disabled)
//!  any live state → unusable (lost) → starting (agent back)    ├→ rebooting → starting
//!  any live state → leavingPool → removed                      │
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pool::Deallocation;
use super::spec::authorize_account;
use super::{ensure, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::{AccountName, NodeId, PoolId, Principal, Timestamp};

/// What an agent says about its machine when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentInfo {
    pub hostname: String,
    pub address: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub task_slots: u32,
    pub agent_version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum NodeCommand {
    /// The provider (or a join) asks for a new node.
    AddNode {
        account: AccountName,
        pool: PoolId,
        node: NodeId,
        name: String,
    },
    /// Its agent connected and registered (also after unusable or reboot).
    RegisterAgent {
        agent: AgentInfo,
        has_start_task: bool,
    },
    BeginStartTask,
    FinishStartTask {
        success: bool,
        exit_code: Option<i32>,
        message: String,
    },
    /// Placement reports how many tasks it runs now.
    ReportLoad {
        running_tasks: u32,
    },
    DisableScheduling,
    EnableScheduling,
    MarkUnusable {
        reason: String,
    },
    Reboot,
    RemoveNode {
        deallocation: Deallocation,
    },
    FinishRemoval,
    /// A reboot that also wipes the node's directories (task and start
    /// task directories, the shared directory, packages, the download
    /// cache): the node comes back as a fresh one of its pool.
    Reimage,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum NodeEvent {
    NodeCreating {
        account: AccountName,
        pool: PoolId,
        node: NodeId,
        name: String,
        at: Timestamp,
    },
    NodeStarting {
        agent: AgentInfo,
        at: Timestamp,
    },
    NodeWaitingForStartTask {
        at: Timestamp,
    },
    NodeStartTaskFailed {
        exit_code: Option<i32>,
        message: String,
        at: Timestamp,
    },
    NodeIdle {
        at: Timestamp,
    },
    NodeRunning {
        running_tasks: u32,
        at: Timestamp,
    },
    NodeOffline {
        at: Timestamp,
    },
    /// Scheduling enabled again: idle or running, by its task count.
    NodeOnline {
        at: Timestamp,
    },
    NodeUnusable {
        reason: String,
        at: Timestamp,
    },
    NodeRebooting {
        at: Timestamp,
    },
    NodeLeavingPool {
        deallocation: Deallocation,
        at: Timestamp,
    },
    NodeRemoved {
        at: Timestamp,
    },
    /// Rebooting with its directories wiped (added last: recorded events
    /// keep their encoding).
    NodeReimaging {
        at: Timestamp,
    },
}

impl DomainEvent for NodeEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Node;
    fn event_type(&self) -> &'static str {
        match self {
            NodeEvent::NodeCreating { .. } => "NodeCreating",
            NodeEvent::NodeStarting { .. } => "NodeStarting",
            NodeEvent::NodeWaitingForStartTask { .. } => "NodeWaitingForStartTask",
            NodeEvent::NodeStartTaskFailed { .. } => "NodeStartTaskFailed",
            NodeEvent::NodeIdle { .. } => "NodeIdle",
            NodeEvent::NodeRunning { .. } => "NodeRunning",
            NodeEvent::NodeOffline { .. } => "NodeOffline",
            NodeEvent::NodeOnline { .. } => "NodeOnline",
            NodeEvent::NodeUnusable { .. } => "NodeUnusable",
            NodeEvent::NodeRebooting { .. } => "NodeRebooting",
            NodeEvent::NodeReimaging { .. } => "NodeReimaging",
            NodeEvent::NodeLeavingPool { .. } => "NodeLeavingPool",
            NodeEvent::NodeRemoved { .. } => "NodeRemoved",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NodeState {
    #[default]
    Absent,
    Creating,
    Starting,
    WaitingForStartTask,
    StartTaskFailed,
    Idle,
    Running,
    Offline,
    Unusable,
    Rebooting,
    LeavingPool,
    Removed,
}

impl NodeState {
    /// States in which the node belongs to its pool.
    pub fn is_live(self) -> bool {
        !matches!(self, NodeState::Absent | NodeState::Removed)
    }
    /// States in which placement may give it tasks.
    pub fn is_schedulable(self) -> bool {
        matches!(self, NodeState::Idle | NodeState::Running)
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    pub state: NodeState,
    pub account: Option<AccountName>,
    pub pool: Option<PoolId>,
    pub id: Option<NodeId>,
    pub name: String,
    pub agent: Option<AgentInfo>,
    pub running_tasks: u32,
    pub start_task_failures: u32,
    pub last_start_task_message: Option<String>,
    pub unusable_reason: Option<String>,
    pub deallocation: Option<Deallocation>,
    pub state_since: Option<Timestamp>,
    pub created_at: Option<Timestamp>,
    /// Rebooting with its directories to be wiped: its agent is told so,
    /// until it registers again.
    pub reimaging: bool,
}

impl Node {
    fn conflict(&self, what: &str) -> Rejection {
        Rejection::new(
            RejectionCode::NodeStateConflict,
            format!(
                "node {} is {:?}; cannot {what}",
                self.id.as_ref().map(|n| n.as_str()).unwrap_or("?"),
                self.state
            ),
        )
    }

    fn authorize(&self, ctx: &Ctx) -> Result<(), Rejection> {
        let account = self
            .account
            .as_ref()
            .ok_or_else(|| Rejection::new(RejectionCode::NodeNotFound, "no such node"))?;
        authorize_account(&ctx.principal, account, RejectionCode::NodeNotFound)?;
        // An agent may speak only for its own node.
        if let Principal::Node { node, .. } = &ctx.principal {
            ensure(
                Some(node) == self.id.as_ref(),
                RejectionCode::PermissionDenied,
                || "an agent may act only for its own node".into(),
            )?;
        }
        Ok(())
    }
}

impl Node {
    /// A node joining its pool.
    fn decide_add(&self, command: &NodeCommand, ctx: &Ctx) -> Result<Vec<NodeEvent>, Rejection> {
        let NodeCommand::AddNode {
            account,
            pool,
            node,
            name,
        } = command
        else {
            return Ok(Vec::new());
        };
        let at = ctx.now;
        authorize_account(&ctx.principal, account, RejectionCode::PermissionDenied)?;
        ensure(!self.state.is_live(), RejectionCode::NodeExists, || {
            format!("node {node} exists in pool {pool}")
        })?;
        ensure(
            !name.is_empty() && name.len() <= 255,
            RejectionCode::InvalidValue,
            || "node name must be 1..=255 bytes".into(),
        )?;
        Ok(vec![NodeEvent::NodeCreating {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
            name: name.clone(),
            at,
        }])
    }

    /// An agent registering, and the node's start task beginning and ending.
    fn decide_start(
        &self,
        command: &NodeCommand,
        at: Timestamp,
    ) -> Result<Vec<NodeEvent>, Rejection> {
        use NodeState as S;
        match command {
            NodeCommand::RegisterAgent {
                agent,
                has_start_task,
            } => {
                ensure(
                    matches!(self.state, S::Creating | S::Unusable | S::Rebooting),
                    RejectionCode::NodeStateConflict,
                    || self.conflict("register an agent").detail,
                )?;
                ensure(
                    agent.task_slots >= 1 && agent.cores >= 1,
                    RejectionCode::InvalidValue,
                    || "an agent needs at least 1 core and 1 task slot".into(),
                )?;
                let mut events = vec![NodeEvent::NodeStarting {
                    agent: agent.clone(),
                    at,
                }];
                if !has_start_task {
                    events.push(NodeEvent::NodeIdle { at });
                }
                Ok(events)
            }
            NodeCommand::BeginStartTask => {
                ensure(
                    matches!(self.state, S::Starting | S::StartTaskFailed),
                    RejectionCode::NodeStateConflict,
                    || self.conflict("begin its start task").detail,
                )?;
                Ok(vec![NodeEvent::NodeWaitingForStartTask { at }])
            }
            NodeCommand::FinishStartTask {
                success,
                exit_code,
                message,
            } => {
                ensure(
                    self.state == S::WaitingForStartTask,
                    RejectionCode::NodeStateConflict,
                    || {
                        self.conflict("finish a start task it is not running")
                            .detail
                    },
                )?;
                Ok(vec![if *success {
                    NodeEvent::NodeIdle { at }
                } else {
                    NodeEvent::NodeStartTaskFailed {
                        exit_code: *exit_code,
                        message: message.clone(),
                        at,
                    }
                }])
            }
            _ => Ok(Vec::new()),
        }
    }
}

impl Aggregate for Node {
    type Command = NodeCommand;
    type Event = NodeEvent;
    const KIND: StreamKind = StreamKind::Node;
    const STATE_SCHEMA: u32 = 2;

    fn decide(&self, command: &NodeCommand, ctx: &Ctx) -> Result<Vec<NodeEvent>, Rejection> {
        use NodeState as S;
        let at = ctx.now;
        if let NodeCommand::AddNode { .. } = command {
            return self.decide_add(command, ctx);
        }
        ensure(self.state.is_live(), RejectionCode::NodeNotFound, || {
            "no such node".into()
        })?;
        self.authorize(ctx)?;
        match command {
            NodeCommand::AddNode { .. } => self.decide_add(command, ctx),
            NodeCommand::RegisterAgent { .. }
            | NodeCommand::BeginStartTask
            | NodeCommand::FinishStartTask { .. } => self.decide_start(command, at),
            NodeCommand::ReportLoad { running_tasks } => {
                ensure(
                    matches!(
                        self.state,
                        S::Idle | S::Running | S::Offline | S::LeavingPool
                    ),
                    RejectionCode::NodeStateConflict,
                    || self.conflict("run tasks").detail,
                )?;
                if *running_tasks == self.running_tasks {
                    return Ok(vec![]);
                }
                // Offline and leaving nodes keep their state while tasks drain.
                Ok(vec![match (self.state, *running_tasks) {
                    (S::Idle | S::Running, 0) => NodeEvent::NodeIdle { at },
                    _ => NodeEvent::NodeRunning {
                        running_tasks: *running_tasks,
                        at,
                    },
                }])
            }
            NodeCommand::DisableScheduling => {
                ensure(
                    matches!(self.state, S::Idle | S::Running),
                    RejectionCode::NodeStateConflict,
                    || self.conflict("disable scheduling").detail,
                )?;
                Ok(vec![NodeEvent::NodeOffline { at }])
            }
            NodeCommand::EnableScheduling => {
                ensure(
                    self.state == S::Offline,
                    RejectionCode::NodeStateConflict,
                    || self.conflict("enable scheduling").detail,
                )?;
                Ok(vec![NodeEvent::NodeOnline { at }])
            }
            NodeCommand::MarkUnusable { reason } => {
                ensure(
                    !matches!(self.state, S::Unusable | S::LeavingPool),
                    RejectionCode::NodeStateConflict,
                    || self.conflict("become unusable").detail,
                )?;
                Ok(vec![NodeEvent::NodeUnusable {
                    reason: reason.clone(),
                    at,
                }])
            }
            NodeCommand::Reboot | NodeCommand::Reimage => {
                let reimage = matches!(command, NodeCommand::Reimage);
                ensure(
                    matches!(
                        self.state,
                        S::Idle | S::Running | S::Offline | S::StartTaskFailed | S::Unusable
                    ),
                    RejectionCode::NodeStateConflict,
                    || {
                        self.conflict(if reimage { "reimage" } else { "reboot" })
                            .detail
                    },
                )?;
                Ok(vec![if reimage {
                    NodeEvent::NodeReimaging { at }
                } else {
                    NodeEvent::NodeRebooting { at }
                }])
            }
            NodeCommand::RemoveNode { deallocation } => {
                ensure(
                    self.state != S::LeavingPool,
                    RejectionCode::NodeStateConflict,
                    || self.conflict("leave the pool twice").detail,
                )?;
                Ok(vec![NodeEvent::NodeLeavingPool {
                    deallocation: *deallocation,
                    at,
                }])
            }
            NodeCommand::FinishRemoval => {
                ensure(
                    self.state == S::LeavingPool,
                    RejectionCode::NodeStateConflict,
                    || self.conflict("be removed before leaving").detail,
                )?;
                Ok(vec![NodeEvent::NodeRemoved { at }])
            }
        }
    }

    fn apply(&mut self, event: &NodeEvent) {
        use NodeState as S;
        let at = match event {
            NodeEvent::NodeCreating { at, .. }
            | NodeEvent::NodeStarting { at, .. }
            | NodeEvent::NodeWaitingForStartTask { at }
            | NodeEvent::NodeStartTaskFailed { at, .. }
            | NodeEvent::NodeIdle { at }
            | NodeEvent::NodeRunning { at, .. }
            | NodeEvent::NodeOffline { at }
            | NodeEvent::NodeOnline { at }
            | NodeEvent::NodeUnusable { at, .. }
            | NodeEvent::NodeRebooting { at }
            | NodeEvent::NodeReimaging { at }
            | NodeEvent::NodeLeavingPool { at, .. }
            | NodeEvent::NodeRemoved { at } => *at,
        };
        let next = match (self.state, event) {
            (
                S::Absent | S::Removed,
                NodeEvent::NodeCreating {
                    account,
                    pool,
                    node,
                    name,
                    at,
                },
            ) => {
                *self = Node {
                    account: Some(account.clone()),
                    pool: Some(pool.clone()),
                    id: Some(node.clone()),
                    name: name.clone(),
                    created_at: Some(*at),
                    ..Node::default()
                };
                S::Creating
            }
            (S::Creating | S::Unusable | S::Rebooting, NodeEvent::NodeStarting { agent, .. }) => {
                self.agent = Some(agent.clone());
                self.running_tasks = 0;
                self.unusable_reason = None;
                self.reimaging = false;
                S::Starting
            }
            (S::Starting | S::StartTaskFailed, NodeEvent::NodeWaitingForStartTask { .. }) => {
                S::WaitingForStartTask
            }
            (S::WaitingForStartTask, NodeEvent::NodeStartTaskFailed { message, .. }) => {
                self.start_task_failures += 1;
                self.last_start_task_message = Some(message.clone());
                S::StartTaskFailed
            }
            (
                S::Starting | S::WaitingForStartTask | S::Running | S::Offline,
                NodeEvent::NodeIdle { .. },
            ) => {
                self.running_tasks = 0;
                S::Idle
            }
            (
                S::Idle | S::Running | S::Offline | S::LeavingPool,
                NodeEvent::NodeRunning { running_tasks, .. },
            ) => {
                self.running_tasks = *running_tasks;
                if matches!(self.state, S::Offline | S::LeavingPool) {
                    self.state
                } else {
                    S::Running
                }
            }
            (S::Idle | S::Running, NodeEvent::NodeOffline { .. }) => S::Offline,
            (S::Offline, NodeEvent::NodeOnline { .. }) => {
                if self.running_tasks == 0 {
                    S::Idle
                } else {
                    S::Running
                }
            }
            (s, NodeEvent::NodeUnusable { reason, .. })
                if s.is_live() && !matches!(s, S::Unusable | S::LeavingPool) =>
            {
                self.unusable_reason = Some(reason.clone());
                self.running_tasks = 0;
                S::Unusable
            }
            (
                S::Idle | S::Running | S::Offline | S::StartTaskFailed | S::Unusable,
                NodeEvent::NodeRebooting { .. } | NodeEvent::NodeReimaging { .. },
            ) => {
                self.running_tasks = 0;
                self.reimaging = matches!(event, NodeEvent::NodeReimaging { .. });
                S::Rebooting
            }
            (s, NodeEvent::NodeLeavingPool { deallocation, .. })
                if s.is_live() && s != S::LeavingPool =>
            {
                self.deallocation = Some(*deallocation);
                S::LeavingPool
            }
            (S::LeavingPool, NodeEvent::NodeRemoved { .. }) => {
                // A removed node loses its name and address, as in the seed.
                self.agent = None;
                self.name.clear();
                self.running_tasks = 0;
                S::Removed
            }
            (state, event) => panic!(
                "node {:?} in state {state:?} cannot apply {event:?}",
                self.id
            ),
        };
        self.state = next;
        self.state_since = Some(at);
    }

    fn is_finished(&self) -> bool {
        self.state == NodeState::Removed
    }

    fn sanity_check(&self) -> Result<(), String> {
        if self.state == NodeState::Idle && self.running_tasks != 0 {
            return Err(format!("idle node runs {} tasks", self.running_tasks));
        }
        if matches!(
            self.state,
            NodeState::Idle | NodeState::Running | NodeState::Starting
        ) && self.agent.is_none()
        {
            return Err(format!("node {:?} has no agent", self.state));
        }
        if self.state.is_live() && self.id.is_none() {
            return Err("live node without an id".into());
        }
        Ok(())
    }
}
