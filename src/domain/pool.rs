//! Pool: nodes of one size, a scaling policy and a start task.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{authorize_account, StartTask};
use super::{ensure, validate_display_name, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::{AccountName, PoolId, Timestamp};

/// Most nodes one pool may have.
pub const POOL_NODES_MAX: u32 = 10_000;
/// Most task slots on one node.
pub const NODE_TASK_SLOTS_MAX: u32 = 1024;
/// Longest autoscale formula, in bytes.
pub const FORMULA_BYTES_MAX: usize = 8 * 1024;
/// Shortest and longest autoscale evaluation intervals.
pub const AUTOSCALE_INTERVAL_SECS_MIN: u64 = 5;
pub const AUTOSCALE_INTERVAL_SECS_MAX: u64 = 7 * 24 * 3600;

/// The size of every node of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSize {
    pub cores: u32,
    pub memory_mib: u64,
    /// Tasks that may run at once on one node.
    pub task_slots: u32,
}

/// How the pool's node count is decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleSettings {
    Fixed {
        target_nodes: u32,
    },
    Autoscale {
        formula: String,
        evaluation_interval_secs: u64,
    },
}

/// Where the pool's nodes come from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeProvider {
    /// Agent processes started by the server on its own machine.
    #[default]
    Local,
    /// Agents started by hand on other machines, joining with a token.
    Remote,
}

/// Where placement puts tasks among a pool's nodes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum SchedulingPolicy {
    /// Fill one node before the next (frees whole nodes to scale down).
    #[default]
    Pack,
    /// Spread tasks evenly over nodes.
    Spread,
}

pub use super::spec::Deallocation;

pub use super::pool_tasks::{Elevation, PoolSecret, TaskSettings, UserScope, POOL_SECRETS_MAX};

/// Everything a pool is created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PoolSpec {
    pub id: PoolId,
    pub account: AccountName,
    pub display_name: String,
    pub node_size: NodeSize,
    /// OS or platform label, e.g. `linux-x86_64`.
    pub os: String,
    pub scale: ScaleSettings,
    pub node_count_max: u32,
    pub inter_node_communication: bool,
    pub secrets: Vec<PoolSecret>,
    pub start_task: Option<StartTask>,
    pub scheduling: SchedulingPolicy,
    pub provider: NodeProvider,
    /// Unpacked on every node as it joins, before its start task.
    pub application_packages: Vec<crate::domain::spec::PackageRef>,
    /// As whom and within what its tasks run.
    pub task_settings: TaskSettings,
}

fn validate_formula(formula: &str, interval_secs: u64) -> Result<(), Rejection> {
    ensure(
        !formula.trim().is_empty(),
        RejectionCode::InvalidValue,
        || "autoscale formula is empty".into(),
    )?;
    // Checked before it is stored, as Azure does: a pool never carries a
    // formula that cannot run.
    if let Err(e) = crate::domain::autoscale::parse(formula) {
        return Err(Rejection::new(
            RejectionCode::InvalidValue,
            format!("autoscale formula: {e}"),
        ));
    }
    ensure(
        formula.len() <= FORMULA_BYTES_MAX,
        RejectionCode::InvalidValue,
        || {
            format!(
                "autoscale formula is {} bytes; at most {FORMULA_BYTES_MAX}",
                formula.len()
            )
        },
    )?;
    ensure(
        (AUTOSCALE_INTERVAL_SECS_MIN..=AUTOSCALE_INTERVAL_SECS_MAX).contains(&interval_secs),
        RejectionCode::InvalidValue,
        || {
            format!("autoscale interval {interval_secs}s is outside {AUTOSCALE_INTERVAL_SECS_MIN}..={AUTOSCALE_INTERVAL_SECS_MAX}s")
        },
    )
}

impl PoolSpec {
    /// A pool of `target_nodes` one-core nodes with `task_slots` slots each
    /// and defaults for the rest; change fields with struct update syntax.
    pub fn fixed(id: PoolId, account: AccountName, target_nodes: u32, task_slots: u32) -> Self {
        PoolSpec {
            id,
            account,
            display_name: String::new(),
            node_size: NodeSize {
                cores: 1,
                memory_mib: 1024,
                task_slots,
            },
            os: "linux-x86_64".into(),
            scale: ScaleSettings::Fixed { target_nodes },
            node_count_max: target_nodes.max(100),
            inter_node_communication: false,
            secrets: vec![],
            start_task: None,
            scheduling: SchedulingPolicy::Pack,
            provider: NodeProvider::Local,
            application_packages: vec![],
            task_settings: TaskSettings::default(),
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        validate_display_name(&self.display_name)?;
        // Refused rather than stored and ignored: nothing would act on it.
        ensure(
            !self.inter_node_communication,
            RejectionCode::InvalidValue,
            || {
                "inter-node communication is not available yet: lote has no multi-node tasks, \
                 and a pool's nodes are not told each other's addresses; create the pool without it"
                    .into()
            },
        )?;
        let size = self.node_size;
        ensure(size.cores >= 1, RejectionCode::InvalidValue, || {
            "node size needs at least 1 core".into()
        })?;
        ensure(size.memory_mib >= 1, RejectionCode::InvalidValue, || {
            "node size needs memory_mib of at least 1".into()
        })?;
        ensure(
            (1..=NODE_TASK_SLOTS_MAX).contains(&size.task_slots),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "task_slots is {}; it must be 1..={NODE_TASK_SLOTS_MAX}",
                    size.task_slots
                )
            },
        )?;
        ensure(
            !self.os.is_empty() && self.os.len() <= 64,
            RejectionCode::InvalidValue,
            || "os label must be 1..=64 bytes".into(),
        )?;
        ensure(
            (1..=POOL_NODES_MAX).contains(&self.node_count_max),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "node_count_max is {}; it must be 1..={POOL_NODES_MAX}",
                    self.node_count_max
                )
            },
        )?;
        match &self.scale {
            ScaleSettings::Fixed { target_nodes } => ensure(
                *target_nodes <= self.node_count_max,
                RejectionCode::InvalidValue,
                || {
                    format!(
                        "target of {target_nodes} nodes exceeds node_count_max {}",
                        self.node_count_max
                    )
                },
            )?,
            ScaleSettings::Autoscale {
                formula,
                evaluation_interval_secs,
            } => validate_formula(formula, *evaluation_interval_secs)?,
        }
        super::pool_tasks::validate_secrets(&self.secrets)?;
        self.task_settings.validate()?;
        if let Some(start) = &self.start_task {
            start.validate()?;
        }
        crate::domain::spec::validate_packages("pool", &self.application_packages)
    }
}

// Commands and events of pools are few (one per change of a pool): boxing
// the spec would change every constructor for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PoolCommand {
    CreatePool {
        spec: PoolSpec,
    },
    ResizePool {
        target_nodes: u32,
        deallocation: Deallocation,
    },
    StopResize,
    /// Sent by the node supervisor when the node count reached the target.
    CompleteResize,
    EnableAutoscale {
        formula: String,
        evaluation_interval_secs: u64,
    },
    DisableAutoscale,
    DeletePool,
    /// Sent by the node supervisor once every node has left.
    FinishDeletion,
    /// Sent by the autoscale supervisor every sample period.
    RecordSample {
        sample: PoolSample,
    },
    /// Sent by the autoscale supervisor after each evaluation; resizes the
    /// pool when the formula set a new target.
    RecordAutoscaleRun {
        run: AutoscaleRun,
    },
    /// Changes the start task and the application packages. Nodes take
    /// them as they join, and after a reboot or reimage (as in Azure);
    /// nodes running now keep what they have.
    UpdatePool {
        start_task: Option<StartTaskUpdate>,
        /// The new list, replacing the old; `None` keeps it.
        application_packages: Option<Vec<crate::domain::spec::PackageRef>>,
    },
    /// A new join token; the old one joins no more node (nodes that
    /// joined keep their own credentials).
    RotateJoinToken,
    /// Adds a secret or replaces the one of its name (its value sealed).
    SetSecret {
        secret: PoolSecret,
    },
    RemoveSecret {
        name: String,
    },
}

/// What a pool update does to the start task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartTaskUpdate {
    Set(StartTask),
    Remove,
}

/// The pool's figures at one moment, in the order of
/// `autoscale::Metric::ALL` (an order that only ever grows at the end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PoolSample {
    pub at: Timestamp,
    pub values: Vec<f64>,
}

/// Why an autoscale evaluation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AutoscaleRunError {
    /// `InsufficientSampleData`, `InvalidAutoScaleFormula` or
    /// `AutoScaleFormulaEvaluationError`.
    pub code: String,
    /// `Line N, Col M: what went wrong`.
    pub message: String,
}

/// One evaluation of a pool's formula.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AutoscaleRun {
    pub at: Timestamp,
    /// Azure's results string: `$TargetDedicatedNodes=4;$NodeDeallocationOption=requeue;...`.
    pub results: String,
    pub error: Option<AutoscaleRunError>,
    pub target_before: u32,
    /// The node count applied (truncated, clamped to the pool's maximum);
    /// `None` when nothing changed hands (error, or no target set).
    pub target_after: Option<u32>,
    pub deallocation: Deallocation,
    /// What the formula read: the current figures and how many samples.
    pub inputs: String,
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PoolEvent {
    PoolCreated {
        spec: PoolSpec,
        at: Timestamp,
    },
    PoolResized {
        target_nodes: u32,
        deallocation: Deallocation,
        at: Timestamp,
    },
    PoolResizeStopped {
        at: Timestamp,
    },
    PoolResizeCompleted {
        at: Timestamp,
    },
    PoolAutoscaleEnabled {
        formula: String,
        evaluation_interval_secs: u64,
        at: Timestamp,
    },
    PoolAutoscaleDisabled {
        at: Timestamp,
    },
    PoolDeleting {
        at: Timestamp,
    },
    PoolDeleted {
        at: Timestamp,
    },
    PoolSampled {
        sample: PoolSample,
    },
    PoolAutoscaleEvaluated {
        run: AutoscaleRun,
    },
    /// The start task and packages nodes take from now on (added last:
    /// recorded events keep their encoding).
    PoolUpdated {
        start_task: Option<StartTask>,
        application_packages: Vec<crate::domain::spec::PackageRef>,
        at: Timestamp,
    },
    /// The join token's new generation (added last).
    PoolJoinTokenRotated {
        generation: u32,
        at: Timestamp,
    },
    /// A secret added or replaced; its value sealed (added last).
    PoolSecretSet {
        secret: PoolSecret,
        at: Timestamp,
    },
    PoolSecretRemoved {
        name: String,
        at: Timestamp,
    },
}

impl DomainEvent for PoolEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Pool;
    fn event_type(&self) -> &'static str {
        match self {
            PoolEvent::PoolCreated { .. } => "PoolCreated",
            PoolEvent::PoolResized { .. } => "PoolResized",
            PoolEvent::PoolResizeStopped { .. } => "PoolResizeStopped",
            PoolEvent::PoolResizeCompleted { .. } => "PoolResizeCompleted",
            PoolEvent::PoolAutoscaleEnabled { .. } => "PoolAutoscaleEnabled",
            PoolEvent::PoolAutoscaleDisabled { .. } => "PoolAutoscaleDisabled",
            PoolEvent::PoolDeleting { .. } => "PoolDeleting",
            PoolEvent::PoolDeleted { .. } => "PoolDeleted",
            PoolEvent::PoolSampled { .. } => "PoolSampled",
            PoolEvent::PoolAutoscaleEvaluated { .. } => "PoolAutoscaleEvaluated",
            PoolEvent::PoolUpdated { .. } => "PoolUpdated",
            PoolEvent::PoolJoinTokenRotated { .. } => "PoolJoinTokenRotated",
            PoolEvent::PoolSecretSet { .. } => "PoolSecretSet",
            PoolEvent::PoolSecretRemoved { .. } => "PoolSecretRemoved",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolStatus {
    #[default]
    Absent,
    Active,
    Deleting,
    Deleted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResizeState {
    #[default]
    Steady,
    Resizing,
    Stopping,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Pool {
    pub status: PoolStatus,
    pub spec: Option<PoolSpec>,
    /// Node count the pool is heading for (fixed scale or last resize).
    pub target_nodes: u32,
    pub resize: ResizeState,
    pub deallocation: Deallocation,
    /// Formula and interval while autoscale is on.
    pub autoscale: Option<(String, u64)>,
    pub created_at: Option<Timestamp>,
    pub resized_at: Option<Timestamp>,
    /// How many times the join token was rotated: each rotation derives a
    /// new token and the old one stops joining.
    pub join_token_generation: u32,
    /// How many times its secrets changed since creation: nodes fetch
    /// them again when it moves.
    pub secrets_generation: u32,
}

impl Pool {
    /// A new start task and packages: the spec they make must be valid.
    fn decide_update(
        &self,
        start_task: &Option<StartTaskUpdate>,
        application_packages: &Option<Vec<crate::domain::spec::PackageRef>>,
        ctx: &Ctx,
        at: Timestamp,
    ) -> Result<Vec<PoolEvent>, Rejection> {
        let mut after = self.live(ctx)?.clone();
        ensure(
            start_task.is_some() || application_packages.is_some(),
            RejectionCode::InvalidValue,
            || {
                "a pool update changes the start task, the application packages or both; it named neither".into()
            },
        )?;
        match start_task {
            Some(StartTaskUpdate::Set(task)) => after.start_task = Some(task.clone()),
            Some(StartTaskUpdate::Remove) => after.start_task = None,
            None => {}
        }
        if let Some(packages) = application_packages {
            after.application_packages = packages.clone();
        }
        after.validate()?;
        Ok(vec![PoolEvent::PoolUpdated {
            start_task: after.start_task,
            application_packages: after.application_packages,
            at,
        }])
    }

    /// A secret set or removed: the secrets it leaves must be valid.
    fn decide_secret(
        &self,
        command: &PoolCommand,
        ctx: &Ctx,
        at: Timestamp,
    ) -> Result<Vec<PoolEvent>, Rejection> {
        match command {
            PoolCommand::SetSecret { secret } => {
                let spec = self.live(ctx)?;
                let mut after: Vec<PoolSecret> = spec
                    .secrets
                    .iter()
                    .filter(|s| s.name != secret.name)
                    .cloned()
                    .collect();
                after.push(secret.clone());
                super::pool_tasks::validate_secrets(&after)?;
                Ok(vec![PoolEvent::PoolSecretSet {
                    secret: secret.clone(),
                    at,
                }])
            }
            PoolCommand::RemoveSecret { name } => {
                let spec = self.live(ctx)?;
                ensure(
                    spec.secrets.iter().any(|s| &s.name == name),
                    RejectionCode::InvalidValue,
                    || format!("pool {} has no secret {name}", spec.id),
                )?;
                Ok(vec![PoolEvent::PoolSecretRemoved {
                    name: name.clone(),
                    at,
                }])
            }
            _ => Err(Rejection::new(
                RejectionCode::InvalidValue,
                "not a secret command",
            )),
        }
    }

    fn live(&self, ctx: &Ctx) -> Result<&PoolSpec, Rejection> {
        let spec = match (&self.status, &self.spec) {
            (PoolStatus::Active | PoolStatus::Deleting, Some(spec)) => spec,
            _ => return Err(Rejection::new(RejectionCode::PoolNotFound, "no such pool")),
        };
        authorize_account(&ctx.principal, &spec.account, RejectionCode::PoolNotFound)?;
        ensure(
            self.status == PoolStatus::Active,
            RejectionCode::PoolBeingDeleted,
            || format!("pool {} is being deleted", spec.id),
        )?;
        Ok(spec)
    }
}

impl Pool {
    fn autoscaling(&self, spec: &PoolSpec) -> Result<(), Rejection> {
        ensure(
            self.autoscale.is_some(),
            RejectionCode::PoolAutoscaleNotEnabled,
            || format!("pool {} has no autoscale formula", spec.id),
        )
    }
}

impl Aggregate for Pool {
    type Command = PoolCommand;
    type Event = PoolEvent;
    const KIND: StreamKind = StreamKind::Pool;
    const STATE_SCHEMA: u32 = 4;

    fn decide(&self, command: &PoolCommand, ctx: &Ctx) -> Result<Vec<PoolEvent>, Rejection> {
        let at = ctx.now;
        match command {
            PoolCommand::CreatePool { spec } => {
                authorize_account(
                    &ctx.principal,
                    &spec.account,
                    RejectionCode::PermissionDenied,
                )?;
                ensure(
                    self.status == PoolStatus::Absent || self.status == PoolStatus::Deleted,
                    RejectionCode::PoolExists,
                    || format!("pool {} exists in account {}", spec.id, spec.account),
                )?;
                spec.validate()?;
                Ok(vec![PoolEvent::PoolCreated {
                    spec: spec.clone(),
                    at,
                }])
            }
            PoolCommand::ResizePool {
                target_nodes,
                deallocation,
            } => {
                let spec = self.live(ctx)?;
                ensure(
                    self.autoscale.is_none(),
                    RejectionCode::PoolAutoscaleEnabled,
                    || {
                        format!(
                            "pool {} scales by formula; disable autoscale to resize by hand",
                            spec.id
                        )
                    },
                )?;
                ensure(
                    *target_nodes <= spec.node_count_max,
                    RejectionCode::InvalidValue,
                    || {
                        format!(
                            "target of {target_nodes} nodes exceeds the pool's node_count_max {}",
                            spec.node_count_max
                        )
                    },
                )?;
                Ok(vec![PoolEvent::PoolResized {
                    target_nodes: *target_nodes,
                    deallocation: *deallocation,
                    at,
                }])
            }
            PoolCommand::StopResize => {
                let spec = self.live(ctx)?;
                ensure(
                    self.resize == ResizeState::Resizing,
                    RejectionCode::PoolNotResizing,
                    || format!("pool {} is not resizing", spec.id),
                )?;
                Ok(vec![PoolEvent::PoolResizeStopped { at }])
            }
            PoolCommand::CompleteResize => {
                let spec = self.live(ctx)?;
                ensure(
                    self.resize != ResizeState::Steady,
                    RejectionCode::PoolNotResizing,
                    || format!("pool {} is not resizing", spec.id),
                )?;
                Ok(vec![PoolEvent::PoolResizeCompleted { at }])
            }
            PoolCommand::EnableAutoscale {
                formula,
                evaluation_interval_secs,
            } => {
                self.live(ctx)?;
                validate_formula(formula, *evaluation_interval_secs)?;
                Ok(vec![PoolEvent::PoolAutoscaleEnabled {
                    formula: formula.clone(),
                    evaluation_interval_secs: *evaluation_interval_secs,
                    at,
                }])
            }
            PoolCommand::DisableAutoscale => {
                self.autoscaling(self.live(ctx)?)?;
                Ok(vec![PoolEvent::PoolAutoscaleDisabled { at }])
            }
            PoolCommand::DeletePool => {
                self.live(ctx)?;
                Ok(vec![PoolEvent::PoolDeleting { at }])
            }
            PoolCommand::UpdatePool {
                start_task,
                application_packages,
            } => self.decide_update(start_task, application_packages, ctx, at),
            PoolCommand::RotateJoinToken => {
                self.live(ctx)?;
                Ok(vec![PoolEvent::PoolJoinTokenRotated {
                    generation: self.join_token_generation.saturating_add(1),
                    at,
                }])
            }
            PoolCommand::SetSecret { .. } | PoolCommand::RemoveSecret { .. } => {
                self.decide_secret(command, ctx, at)
            }
            PoolCommand::FinishDeletion => {
                let spec = match (&self.status, &self.spec) {
                    (PoolStatus::Deleting, Some(spec)) => spec,
                    (PoolStatus::Active, Some(spec)) => {
                        return Err(Rejection::new(
                            RejectionCode::InvalidValue,
                            format!("pool {} is not being deleted", spec.id),
                        ))
                    }
                    _ => return Err(Rejection::new(RejectionCode::PoolNotFound, "no such pool")),
                };
                authorize_account(&ctx.principal, &spec.account, RejectionCode::PoolNotFound)?;
                Ok(vec![PoolEvent::PoolDeleted { at }])
            }
            PoolCommand::RecordSample { sample } => {
                self.live(ctx)?;
                Ok(vec![PoolEvent::PoolSampled {
                    sample: sample.clone(),
                }])
            }
            PoolCommand::RecordAutoscaleRun { run } => {
                let spec = self.live(ctx)?;
                self.autoscaling(spec)?;
                let mut events = vec![PoolEvent::PoolAutoscaleEvaluated { run: run.clone() }];
                if let Some(target) = run.target_after {
                    let target = target.min(spec.node_count_max);
                    if target != self.target_nodes || run.deallocation != self.deallocation {
                        events.push(PoolEvent::PoolResized {
                            target_nodes: target,
                            deallocation: run.deallocation,
                            at,
                        });
                    }
                }
                Ok(events)
            }
        }
    }

    fn apply(&mut self, event: &PoolEvent) {
        match (self.status, event) {
            (PoolStatus::Absent | PoolStatus::Deleted, PoolEvent::PoolCreated { spec, at }) => {
                *self = Pool {
                    status: PoolStatus::Active,
                    created_at: Some(*at),
                    ..Pool::default()
                };
                match &spec.scale {
                    ScaleSettings::Fixed { target_nodes } => {
                        self.target_nodes = *target_nodes;
                        self.resize = if *target_nodes > 0 {
                            ResizeState::Resizing
                        } else {
                            ResizeState::Steady
                        };
                    }
                    ScaleSettings::Autoscale {
                        formula,
                        evaluation_interval_secs,
                    } => {
                        self.autoscale = Some((formula.clone(), *evaluation_interval_secs));
                    }
                }
                self.spec = Some(spec.clone());
            }
            (
                PoolStatus::Active,
                PoolEvent::PoolResized {
                    target_nodes,
                    deallocation,
                    at,
                },
            ) => {
                self.target_nodes = *target_nodes;
                self.deallocation = *deallocation;
                self.resize = ResizeState::Resizing;
                self.resized_at = Some(*at);
            }
            (PoolStatus::Active, PoolEvent::PoolResizeStopped { .. }) => {
                self.resize = ResizeState::Stopping
            }
            (PoolStatus::Active, PoolEvent::PoolResizeCompleted { .. }) => {
                self.resize = ResizeState::Steady
            }
            (
                PoolStatus::Active,
                PoolEvent::PoolAutoscaleEnabled {
                    formula,
                    evaluation_interval_secs,
                    ..
                },
            ) => {
                self.autoscale = Some((formula.clone(), *evaluation_interval_secs));
            }
            (PoolStatus::Active, PoolEvent::PoolAutoscaleDisabled { .. }) => self.autoscale = None,
            (PoolStatus::Active, PoolEvent::PoolJoinTokenRotated { generation, .. }) => {
                self.join_token_generation = *generation;
            }
            (PoolStatus::Active, PoolEvent::PoolSecretSet { secret, .. }) => {
                if let Some(spec) = self.spec.as_mut() {
                    match spec.secrets.iter_mut().find(|s| s.name == secret.name) {
                        Some(old) => *old = secret.clone(),
                        None => spec.secrets.push(secret.clone()),
                    }
                }
                self.secrets_generation += 1;
            }
            (PoolStatus::Active, PoolEvent::PoolSecretRemoved { name, .. }) => {
                if let Some(spec) = self.spec.as_mut() {
                    spec.secrets.retain(|s| &s.name != name);
                }
                self.secrets_generation += 1;
            }
            (
                PoolStatus::Active,
                PoolEvent::PoolUpdated {
                    start_task,
                    application_packages,
                    ..
                },
            ) => {
                if let Some(spec) = self.spec.as_mut() {
                    spec.start_task = start_task.clone();
                    spec.application_packages = application_packages.clone();
                }
            }
            (PoolStatus::Active, PoolEvent::PoolDeleting { .. }) => {
                self.status = PoolStatus::Deleting;
                self.target_nodes = 0;
                self.resize = ResizeState::Resizing;
            }
            // History for formulas; nothing of the pool's own state.
            (
                PoolStatus::Active | PoolStatus::Deleting,
                PoolEvent::PoolSampled { .. } | PoolEvent::PoolAutoscaleEvaluated { .. },
            ) => {}
            (PoolStatus::Deleting, PoolEvent::PoolDeleted { .. }) => {
                self.status = PoolStatus::Deleted;
                self.resize = ResizeState::Steady;
            }
            (status, event) => panic!(
                "pool {:?} in state {status:?} cannot apply {event:?}",
                self.spec.as_ref().map(|s| &s.id)
            ),
        }
    }

    fn is_finished(&self) -> bool {
        self.status == PoolStatus::Deleted
    }

    fn sanity_check(&self) -> Result<(), String> {
        if let Some(spec) = &self.spec {
            if self.target_nodes > spec.node_count_max {
                return Err(format!(
                    "target {} above max {}",
                    self.target_nodes, spec.node_count_max
                ));
            }
        } else if self.status != PoolStatus::Absent {
            return Err(format!("pool in {:?} without a spec", self.status));
        }
        Ok(())
    }
}
