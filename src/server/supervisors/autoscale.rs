//! The autoscale supervisor: samples every pool's load into the log,
//! evaluates each autoscale pool's formula on schedule and applies the
//! result through the pool actor. Also answers "evaluate now", the run
//! history and replays of a formula over a pool's recorded past.
//!
//! Its picture (samples, formulas, when each is due) is folded from the
//! log like placement's, so a restart rebuilds it and an evaluation whose
//! time passed while the server was down runs at once.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::placement::{Feed, PlacementHandle};
use super::scheduler::PoolFigures;
use super::split_pool_key;
use crate::actors::{Core, CoreError};
use crate::api::agent::NodeUsage;
use crate::api::autoscale::{Evaluation, ReplayStep};
use crate::domain::autoscale::{self, History, Inputs, Metric, Outcome, Sample, Word};
use crate::domain::decode_event;
use crate::domain::pool::{
    AutoscaleRun, AutoscaleRunError, Deallocation, Pool, PoolCommand, PoolEvent, PoolSample,
    ScaleSettings,
};
use crate::domain::Ctx;
use crate::store::{Envelope, EventStore, StreamId, StreamKind};
use crate::types::{NodeId, Timestamp};

/// How much sampled history each pool keeps in memory for formulas: a
/// day, Azure's longest practical look-back (`GetSample` windows beyond it
/// see no samples and report a low percentage).
pub const HISTORY_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Most steps one replay may evaluate (a month at a 30-second step is
/// 86,400).
pub const REPLAY_STEPS_MAX: usize = 200_000;

#[derive(Clone, Copy, Debug)]
pub struct AutoscaleSettings {
    pub sample_period: Duration,
    pub min_interval_secs: u64,
}

/// One pool's autoscale picture.
#[derive(Debug)]
struct PoolAuto {
    samples: VecDeque<Sample>,
    formula: Option<(Rc<autoscale::Formula>, u64)>,
    /// When the next evaluation is due.
    due: Option<Timestamp>,
    target: u32,
    deallocation: Deallocation,
    node_count_max: u32,
    last_sample: Option<Timestamp>,
    busy: bool,
}

/// What one node reported since the pool's last sample.
#[derive(Debug, Default)]
struct NodeReport {
    at: Option<Timestamp>,
    latest: NodeUsage,
    /// Counter changes added up since the last recorded sample.
    counters: [u64; 6],
}

pub struct Autoscaler {
    core: Core,
    placement: PlacementHandle,
    settings: AutoscaleSettings,
    usage: HashMap<(String, NodeId), NodeReport>,
    pools: HashMap<String, PoolAuto>,
    started: bool,
    stop: watch::Receiver<bool>,
}

/// What a pool's figures need from placement's picture.
struct Picture {
    figures: PoolFigures,
    nodes: Vec<NodeId>,
}

/// Asks placement for the pictures of these pools.
async fn pictures(placement: PlacementHandle, keys: Vec<String>) -> HashMap<String, Picture> {
    let asked = placement.inspect(move |s| {
        keys.into_iter()
            .map(|k| {
                let picture = Picture {
                    figures: s.pool_figures(&k),
                    nodes: s.nodes_of(&k),
                };
                (k, picture)
            })
            .collect()
    });
    asked.await.unwrap_or_default()
}

/// An agent's machine figures, kept until the pool's next sample.
pub struct ReportUsage {
    pub pool_key: String,
    pub node: NodeId,
    pub usage: NodeUsage,
}

impl Message for ReportUsage {
    type Result = ();
}

/// Evaluate a formula (or the pool's own) against the pool's data now,
/// changing nothing. `None` when the pool is unknown here.
pub struct Evaluate {
    pub pool_key: String,
    pub formula: Option<String>,
}

impl Message for Evaluate {
    type Result = Option<Evaluation>;
}

/// A scheduled run was recorded, or failed.
struct Applied {
    key: String,
    failed: bool,
}

impl Message for Applied {
    type Result = ();
}

/// When a pool's next sample is due: at once for its first, then at the
/// first point of the period's grid (multiples of `period` since the
/// epoch) after its last sample, once `now` has reached it. Samples stamped on the grid keep their spacing
/// exact: counted from the tick that took the last one, they drifted by up
/// to a tick each period, and a full window sometimes held one too few.
fn sample_due(last: Option<Timestamp>, now: Timestamp, period: i64) -> Option<Timestamp> {
    let period = period.max(1);
    let slot = |t: Timestamp| t.as_micros().div_euclid(period);
    match last {
        // A new pool's first sample is taken at once, not stamped before
        // the pool existed.
        None => Some(now),
        Some(last) if slot(now) <= slot(last) => None,
        Some(_) => Some(Timestamp::from_micros(slot(now) * period)),
    }
}

fn ctx(core: &Core) -> Ctx {
    Ctx::system(core.clock().as_ref(), "autoscale")
}

/// The figures a formula reads, from placement's picture.
fn figures_sample(f: &PoolFigures, at: Timestamp) -> Sample {
    let mut s = Sample::new(at.as_micros());
    for (m, v) in [
        (Metric::ActiveTasks, f.active_tasks),
        (Metric::RunningTasks, f.running_tasks),
        (Metric::PendingTasks, f.active_tasks + f.running_tasks),
        (Metric::SucceededTasks, f.succeeded_tasks),
        (Metric::FailedTasks, f.failed_tasks),
        (Metric::ActiveTaskSlots, f.active_slots),
        (Metric::RunningTaskSlots, f.running_slots),
        (Metric::PendingTaskSlots, f.active_slots + f.running_slots),
        (Metric::CurrentDedicatedNodes, f.nodes),
        (Metric::UsableNodeCount, f.usable_nodes),
        (Metric::TaskSlotsPerNode, u64::from(f.slots_per_node)),
    ] {
        s.set(m, v as f64);
    }
    s
}

fn summary(current: &Sample, samples: usize) -> String {
    let shown = [
        Metric::ActiveTasks,
        Metric::RunningTasks,
        Metric::PendingTasks,
        Metric::PendingTaskSlots,
        Metric::CurrentDedicatedNodes,
        Metric::UsableNodeCount,
        Metric::TaskSlotsPerNode,
    ];
    let mut parts: Vec<String> = shown
        .iter()
        .map(|m| format!("{}={}", m.name(), current.get(*m)))
        .collect();
    parts.push(format!("samples={samples}"));
    parts.join(" ")
}

fn run_of(
    outcome: &Outcome,
    at: Timestamp,
    target_before: u32,
    deallocation: Deallocation,
    max: u32,
    inputs: String,
) -> AutoscaleRun {
    AutoscaleRun {
        at,
        results: outcome.results.clone(),
        error: outcome.error.as_ref().map(|e| AutoscaleRunError {
            code: e.kind.code().into(),
            message: e.to_string(),
        }),
        target_before,
        target_after: outcome.target_nodes(max),
        deallocation: Word::lookup(&outcome.deallocation)
            .map(Word::deallocation)
            .unwrap_or(deallocation),
        inputs,
    }
}

/// A seed for `rand()` that differs per run but is recorded in nothing:
/// evaluation time and pool.
fn seed(at: Timestamp, key: &str) -> u64 {
    let mut h: u64 = at.as_micros() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

impl Autoscaler {
    pub fn new(
        core: Core,
        placement: PlacementHandle,
        settings: AutoscaleSettings,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Autoscaler {
            core,
            placement,
            settings,
            usage: HashMap::new(),
            pools: HashMap::new(),
            started: false,
            stop,
        }
    }

    /// An agent's machine figures.
    fn report_usage(&mut self, key: String, node: NodeId, usage: NodeUsage) {
        if !self.pools.contains_key(&key) {
            return;
        }
        let now = self.core.clock().now();
        let r = self.usage.entry((key, node)).or_default();
        r.at = Some(now);
        r.latest = usage;
        // In the order of `Metric::COUNTERS`.
        let add = [
            usage.disk_read_bytes,
            usage.disk_write_bytes,
            usage.disk_read_ops,
            usage.disk_write_ops,
            usage.network_in_bytes,
            usage.network_out_bytes,
        ];
        for (c, a) in r.counters.iter_mut().zip(add) {
            *c = c.saturating_add(a);
        }
    }

    /// The pool's figures now: placement's picture plus the nodes' own
    /// reports. `take` resets the added-up counters (a recorded sample).
    fn current(&mut self, key: &str, at: Timestamp, take: bool, picture: &Picture) -> Sample {
        let mut s = figures_sample(&picture.figures, at);
        // A node that has not reported for a few report periods is not
        // counted (it is gone, or its agent is stuck).
        let fresh = Duration::from_secs(20).max(self.settings.sample_period * 2);
        let all = &mut self.usage;
        all.retain(|(k, n), _| k != key || picture.nodes.contains(n));
        let (mut n, mut cpu, mut mem, mut disk) = (0u64, 0.0, 0u64, 0u64);
        let mut counters = [0u64; 6];
        for ((k, _), r) in all.iter_mut().filter(|((k, _), _)| k == key) {
            let _ = k;
            let Some(reported) = r.at else { continue };
            if at.as_micros() - reported.as_micros() > fresh.as_micros() as i64 {
                continue;
            }
            n += 1;
            cpu += r.latest.cpu_percent;
            mem = mem.saturating_add(r.latest.memory_bytes);
            disk = disk.saturating_add(r.latest.disk_bytes);
            for (c, v) in counters.iter_mut().zip(r.counters) {
                *c = c.saturating_add(v);
            }
            if take {
                r.counters = [0; 6];
            }
        }
        s.set(Metric::SampleNodeCount, n as f64);
        // Task run time in the last period, as the running tasks held it.
        s.set(
            Metric::WallClockSeconds,
            s.get(Metric::RunningTasks) * self.settings.sample_period.as_secs_f64(),
        );
        if n > 0 {
            s.set(Metric::CPUPercent, cpu / n as f64);
            s.set(Metric::MemoryBytes, mem as f64 / n as f64);
            s.set(Metric::DiskBytes, disk as f64 / n as f64);
        }
        for (m, v) in Metric::COUNTERS.into_iter().zip(counters) {
            s.set(m, v as f64);
        }
        s
    }

    fn fold(&mut self, envelope: &Envelope) {
        if envelope.stream.kind() != StreamKind::Pool {
            return;
        }
        let Ok(event) = decode_event::<PoolEvent>(StreamKind::Pool, envelope) else {
            return;
        };
        let ids = envelope.stream.segments();
        let key = ids[..2.min(ids.len())].join("/");
        let pools = &mut self.pools;
        match event {
            PoolEvent::PoolCreated { spec, at } => {
                let (target, formula) = match &spec.scale {
                    ScaleSettings::Fixed { target_nodes } => (*target_nodes, None),
                    ScaleSettings::Autoscale {
                        formula,
                        evaluation_interval_secs,
                    } => (
                        0,
                        autoscale::parse(formula)
                            .ok()
                            .map(|f| (Rc::new(f), *evaluation_interval_secs)),
                    ),
                };
                pools.insert(
                    key,
                    PoolAuto {
                        samples: VecDeque::new(),
                        due: formula.as_ref().map(|_| at),
                        formula,
                        target,
                        deallocation: Deallocation::default(),
                        node_count_max: spec.node_count_max,
                        // The first sample is a period after creation.
                        last_sample: Some(at),
                        busy: false,
                    },
                );
            }
            PoolEvent::PoolResized {
                target_nodes,
                deallocation,
                ..
            } => {
                if let Some(p) = pools.get_mut(&key) {
                    p.target = target_nodes;
                    p.deallocation = deallocation;
                }
            }
            PoolEvent::PoolAutoscaleEnabled {
                formula,
                evaluation_interval_secs,
                at,
            } => {
                if let Some(p) = pools.get_mut(&key) {
                    p.formula = autoscale::parse(&formula)
                        .ok()
                        .map(|f| (Rc::new(f), evaluation_interval_secs));
                    // A new formula or interval restarts the schedule now.
                    p.due = Some(at);
                }
            }
            PoolEvent::PoolAutoscaleDisabled { .. } => {
                if let Some(p) = pools.get_mut(&key) {
                    p.formula = None;
                    p.due = None;
                }
            }
            PoolEvent::PoolSampled { sample } => {
                if let Some(p) = pools.get_mut(&key) {
                    let at = sample.at.as_micros();
                    p.samples.push_back(Sample {
                        at_micros: at,
                        values: sample.values,
                    });
                    let oldest = at - HISTORY_KEPT.as_micros() as i64;
                    while p.samples.front().is_some_and(|s| s.at_micros < oldest) {
                        p.samples.pop_front();
                    }
                    p.last_sample = Some(p.last_sample.map_or(sample.at, |l| l.max(sample.at)));
                }
            }
            PoolEvent::PoolAutoscaleEvaluated { run } => {
                if let Some(p) = pools.get_mut(&key) {
                    if let Some((_, interval)) = &p.formula {
                        p.due = Some(run.at.plus_secs(*interval));
                    }
                }
            }
            PoolEvent::PoolDeleting { .. } | PoolEvent::PoolDeleted { .. } => {
                pools.remove(&key);
                self.usage.retain(|(k, _), _| *k != key);
            }
            _ => {}
        }
    }

    /// Evaluates `formula` (or the pool's own) against the pool's data now,
    /// changing nothing. `None` when the pool is unknown here.
    fn evaluate(
        &mut self,
        key: &str,
        formula: Option<&str>,
        picture: &Picture,
    ) -> Option<Evaluation> {
        let now = self.core.clock().now();
        let current = self.current(key, now, false, picture);
        let p = self.pools.get_mut(key)?;
        let samples = p.samples.make_contiguous();
        let inputs = Inputs {
            now_micros: now.as_micros(),
            current: &current,
            history: History {
                samples,
                period_micros: self.settings.sample_period.as_micros() as i64,
            },
            target_dedicated: p.target,
            deallocation: Word::from_deallocation(p.deallocation),
            seed: seed(now, key),
        };
        let outcome = match formula {
            Some(text) => autoscale::evaluate_text(text, &inputs),
            None => match &p.formula {
                Some((f, _)) => autoscale::evaluate(f, &inputs),
                None => autoscale::evaluate_text("", &inputs),
            },
        };
        let run = run_of(
            &outcome,
            now,
            p.target,
            p.deallocation,
            p.node_count_max,
            summary(&current, samples.len()),
        );
        Some(Evaluation {
            run,
            stopped: outcome.stopped,
            trace: outcome.trace,
            trace_dropped: outcome.trace_dropped,
        })
    }

    /// One tick: samples pools whose period has passed, evaluates formulas
    /// that are due, with their figures from placement's picture.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.core.clock().now();
        let period = self.settings.sample_period.as_micros() as i64;
        let mut to_sample = Vec::new();
        let mut to_evaluate = Vec::new();
        for (key, p) in self.pools.iter_mut() {
            if let Some(at) = sample_due(p.last_sample, now, period) {
                p.last_sample = Some(at);
                to_sample.push((key.clone(), at));
            }
            if !p.busy && p.formula.is_some() && p.due.is_some_and(|d| d <= now) {
                p.busy = true;
                to_evaluate.push(key.clone());
            }
        }
        if to_sample.is_empty() && to_evaluate.is_empty() {
            return;
        }
        let mut keys: Vec<String> = to_sample.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(to_evaluate.iter().cloned());
        let asked = pictures(self.placement.clone(), keys);
        ctx.spawn(asked.into_actor(self).map(move |pictures, act, ctx| {
            for (key, at) in to_sample {
                if let Some(picture) = pictures.get(&key) {
                    let sample = act.current(&key, at, true, picture);
                    tokio::task::spawn_local(record_sample(act.core.clone(), key, at, sample));
                }
            }
            for key in to_evaluate {
                let evaluation = pictures
                    .get(&key)
                    .and_then(|picture| act.evaluate(&key, None, picture));
                let Some(evaluation) = evaluation else {
                    if let Some(p) = act.pools.get_mut(&key) {
                        p.busy = false;
                    }
                    continue;
                };
                let (core, me) = (act.core.clone(), ctx.address());
                tokio::task::spawn_local(async move {
                    let failed = match apply(&core, &key, evaluation).await {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::warn!(pool = %key, error = %e, "autoscale run not recorded");
                            true
                        }
                    };
                    me.do_send(Applied { key, failed });
                });
            }
        }));
    }
}

async fn record_sample(core: Core, key: String, at: Timestamp, sample: Sample) {
    let Some((account, pool)) = split_pool_key(&key) else {
        return;
    };
    let command = PoolCommand::RecordSample {
        sample: PoolSample {
            at,
            values: sample.values,
        },
    };
    let stream = StreamId::pool(&account, &pool);
    if let Err(e) = core.execute::<Pool>(&stream, command, ctx(&core)).await {
        tracing::debug!(%stream, error = %e, "no sample recorded");
    }
}

/// Records an evaluated run (and the resize it implies) through the pool
/// actor.
async fn apply(core: &Core, key: &str, evaluation: Evaluation) -> Result<(), CoreError> {
    let Some((account, pool)) = split_pool_key(key) else {
        return Ok(());
    };
    let stream = StreamId::pool(&account, &pool);
    if let Some(e) = &evaluation.run.error {
        tracing::info!(%stream, error = %e.message, "autoscale formula failed; pool left as it is");
    }
    let command = PoolCommand::RecordAutoscaleRun {
        run: evaluation.run,
    };
    match core.execute::<Pool>(&stream, command, ctx(core)).await {
        Ok(_) => Ok(()),
        // Disabled or deleted meanwhile: nothing to apply.
        Err(e)
            if matches!(
                e.rejection_code(),
                Some(
                    crate::domain::RejectionCode::PoolAutoscaleNotEnabled
                        | crate::domain::RejectionCode::PoolNotFound
                        | crate::domain::RejectionCode::PoolBeingDeleted
                )
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Actor for Autoscaler {
    type Context = Context<Self>;
}

impl Handler<Feed> for Autoscaler {
    type Result = ();

    fn handle(&mut self, feed: Feed, ctx: &mut Context<Self>) {
        for envelope in feed.events() {
            self.fold(envelope);
        }
        if feed.starts(&mut self.started) {
            let step = self.settings.sample_period.min(Duration::from_secs(1));
            let stop = self.stop.clone();
            self.tick(ctx);
            super::tick_until_stopped(ctx, step, &stop, |act: &mut Self, ctx| act.tick(ctx));
        }
    }
}

impl Handler<ReportUsage> for Autoscaler {
    type Result = ();

    fn handle(&mut self, report: ReportUsage, _: &mut Context<Self>) {
        self.report_usage(report.pool_key, report.node, report.usage);
    }
}

impl Handler<Evaluate> for Autoscaler {
    type Result = ResponseActFuture<Self, Option<Evaluation>>;

    fn handle(&mut self, ask: Evaluate, _: &mut Context<Self>) -> Self::Result {
        let asked = pictures(self.placement.clone(), vec![ask.pool_key.clone()]);
        Box::pin(asked.into_actor(self).map(move |pictures, act, _| {
            let picture = pictures.get(&ask.pool_key)?;
            act.evaluate(&ask.pool_key, ask.formula.as_deref(), picture)
        }))
    }
}

impl Handler<Applied> for Autoscaler {
    type Result = ();

    fn handle(&mut self, applied: Applied, _: &mut Context<Self>) {
        let now = self.core.clock().now();
        if let Some(p) = self.pools.get_mut(&applied.key) {
            p.busy = false;
            if applied.failed {
                // Try again shortly, not on every tick.
                p.due = Some(now.plus_secs(5));
            }
        }
    }
}

/// Every event of a pool's stream, decoded.
fn pool_events(
    store: &EventStore,
    stream: &StreamId,
) -> Result<Vec<(Envelope, PoolEvent)>, String> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = store
            .read_stream(stream, from, 4096)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        from = last.stream_version + 1;
        for e in batch {
            let event =
                decode_event::<PoolEvent>(StreamKind::Pool, &e).map_err(|e| e.to_string())?;
            out.push((e, event));
        }
    }
}

/// The pool's recorded autoscale runs, oldest first, at most `limit` (the
/// newest).
pub fn history(
    store: &EventStore,
    stream: &StreamId,
    limit: usize,
) -> Result<Vec<AutoscaleRun>, String> {
    let mut runs: Vec<AutoscaleRun> = pool_events(store, stream)?
        .into_iter()
        .filter_map(|(_, e)| match e {
            PoolEvent::PoolAutoscaleEvaluated { run } => Some(run),
            _ => None,
        })
        .collect();
    if runs.len() > limit {
        runs.drain(..runs.len() - limit);
    }
    Ok(runs)
}

/// Evaluates `formula` every `every` from `from` to `to` over the pool's
/// recorded samples, as if it had been the pool's formula: its own
/// earlier results stand in for `$TargetDedicatedNodes`, starting from the
/// real target at `from`. Each step shows what really happened beside.
pub fn replay(
    store: &EventStore,
    stream: &StreamId,
    formula: &str,
    from: Timestamp,
    to: Timestamp,
    every: Duration,
    sample_period: Duration,
) -> Result<Vec<ReplayStep>, String> {
    let parsed = autoscale::parse(formula).map_err(|e| format!("formula: {e}"))?;
    if to < from {
        return Err("--to is before --from".into());
    }
    let step = every.as_micros() as i64;
    if step <= 0 {
        return Err("the step must be at least 1 second".into());
    }
    let steps = ((to.as_micros() - from.as_micros()) / step + 1) as usize;
    if steps > REPLAY_STEPS_MAX {
        return Err(format!(
            "{steps} steps; at most {REPLAY_STEPS_MAX}: use a larger --every or a shorter span"
        ));
    }
    let mut samples: Vec<Sample> = Vec::new();
    // (time, target, deallocation) as the pool really went.
    let mut targets: Vec<(i64, u32, Deallocation)> = Vec::new();
    let mut max = 0;
    for (_, event) in pool_events(store, stream)? {
        match event {
            PoolEvent::PoolCreated { spec, at } => {
                max = spec.node_count_max;
                let t = match spec.scale {
                    ScaleSettings::Fixed { target_nodes } => target_nodes,
                    ScaleSettings::Autoscale { .. } => 0,
                };
                targets.push((at.as_micros(), t, Deallocation::default()));
            }
            PoolEvent::PoolResized {
                target_nodes,
                deallocation,
                at,
            } => targets.push((at.as_micros(), target_nodes, deallocation)),
            PoolEvent::PoolSampled { sample } => samples.push(Sample {
                at_micros: sample.at.as_micros(),
                values: sample.values,
            }),
            _ => {}
        }
    }
    if targets.is_empty() {
        return Err("the pool has no history".into());
    }
    samples.sort_by_key(|s| s.at_micros);
    let actual = |at: i64| {
        let i = targets.partition_point(|(t, _, _)| *t <= at);
        targets[i.saturating_sub(1)]
    };
    let (_, mut simulated, mut dealloc) = actual(from.as_micros());
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let at = from.as_micros() + i as i64 * step;
        let end = samples.partition_point(|s| s.at_micros <= at);
        let start =
            samples[..end].partition_point(|s| s.at_micros < at - HISTORY_KEPT.as_micros() as i64);
        let visible = &samples[start..end];
        let current = visible.last().cloned().unwrap_or_else(|| Sample::new(at));
        let inputs = Inputs {
            now_micros: at,
            current: &current,
            history: History {
                samples: visible,
                period_micros: sample_period.as_micros() as i64,
            },
            target_dedicated: simulated,
            deallocation: Word::from_deallocation(dealloc),
            seed: seed(Timestamp::from_micros(at), stream.as_str()),
        };
        let outcome = autoscale::evaluate(&parsed, &inputs);
        let would = outcome.target_nodes(max);
        if let Some(t) = would {
            simulated = t;
            if let Some(w) = Word::lookup(&outcome.deallocation) {
                dealloc = w.deallocation();
            }
        }
        out.push(ReplayStep {
            at: Timestamp::from_micros(at),
            would_target: would,
            results: outcome.results,
            error: outcome.error.map(|e| e.to_string()),
            actual_target: actual(at).1,
            actual_nodes: current.get(Metric::CurrentDedicatedNodes),
            samples: visible.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sample_due;
    use crate::types::Timestamp;

    #[test]
    fn samples_fall_on_the_periods_grid_without_drift() {
        let period = 30_000_000; // 30 s
        let t = |secs: f64| Timestamp::from_micros((secs * 1e6) as i64);
        // The first sample: at once.
        assert_eq!(sample_due(None, t(1000.7), period), Some(t(1000.7)));
        // Ticks once a second, a little late each time: one sample per
        // period, each on the grid, none skipped.
        let mut last = Some(t(1000.7));
        let mut taken = Vec::new();
        for tick in 0..300 {
            let now = t(991.0 + f64::from(tick) + 0.3);
            if let Some(at) = sample_due(last, now, period) {
                taken.push(at.as_micros() / 1_000_000);
                last = Some(at);
            }
        }
        assert_eq!(taken, (1..=10).map(|k| 990 + 30 * k).collect::<Vec<_>>());
        // Not again within the same period.
        assert_eq!(sample_due(Some(t(1020.0)), t(1049.9), period), None);
    }
}
