//! The read-only service variables a formula can read, and the sampled
//! history behind their sample methods.

use serde::{Deserialize, Serialize};

/// One read-only service variable. Each has a current value and, in the
/// pool's history, one value per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Metric {
    ActiveTasks,
    RunningTasks,
    PendingTasks,
    SucceededTasks,
    FailedTasks,
    ActiveTaskSlots,
    RunningTaskSlots,
    PendingTaskSlots,
    CurrentDedicatedNodes,
    CurrentLowPriorityNodes,
    PreemptedNodeCount,
    UsableNodeCount,
    SampleNodeCount,
    TaskSlotsPerNode,
    CPUPercent,
    MemoryBytes,
    DiskBytes,
    DiskReadBytes,
    DiskWriteBytes,
    DiskReadOps,
    DiskWriteOps,
    NetworkInBytes,
    NetworkOutBytes,
    WallClockSeconds,
}

/// How many metrics there are: the width of a [`Sample`].
pub const METRIC_COUNT: usize = 24;

impl Metric {
    pub const ALL: [Metric; METRIC_COUNT] = [
        Metric::ActiveTasks,
        Metric::RunningTasks,
        Metric::PendingTasks,
        Metric::SucceededTasks,
        Metric::FailedTasks,
        Metric::ActiveTaskSlots,
        Metric::RunningTaskSlots,
        Metric::PendingTaskSlots,
        Metric::CurrentDedicatedNodes,
        Metric::CurrentLowPriorityNodes,
        Metric::PreemptedNodeCount,
        Metric::UsableNodeCount,
        Metric::SampleNodeCount,
        Metric::TaskSlotsPerNode,
        Metric::CPUPercent,
        Metric::MemoryBytes,
        Metric::DiskBytes,
        Metric::DiskReadBytes,
        Metric::DiskWriteBytes,
        Metric::DiskReadOps,
        Metric::DiskWriteOps,
        Metric::NetworkInBytes,
        Metric::NetworkOutBytes,
        Metric::WallClockSeconds,
    ];

    /// The counters agents report as changes, summed per sample period.
    pub const COUNTERS: [Metric; 6] = [
        Metric::DiskReadBytes,
        Metric::DiskWriteBytes,
        Metric::DiskReadOps,
        Metric::DiskWriteOps,
        Metric::NetworkInBytes,
        Metric::NetworkOutBytes,
    ];

    /// The variable's name, `$` included.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ActiveTasks => "$ActiveTasks",
            Metric::RunningTasks => "$RunningTasks",
            Metric::PendingTasks => "$PendingTasks",
            Metric::SucceededTasks => "$SucceededTasks",
            Metric::FailedTasks => "$FailedTasks",
            Metric::ActiveTaskSlots => "$ActiveTaskSlots",
            Metric::RunningTaskSlots => "$RunningTaskSlots",
            Metric::PendingTaskSlots => "$PendingTaskSlots",
            Metric::CurrentDedicatedNodes => "$CurrentDedicatedNodes",
            Metric::CurrentLowPriorityNodes => "$CurrentLowPriorityNodes",
            Metric::PreemptedNodeCount => "$PreemptedNodeCount",
            Metric::UsableNodeCount => "$UsableNodeCount",
            Metric::SampleNodeCount => "$SampleNodeCount",
            Metric::TaskSlotsPerNode => "$TaskSlotsPerNode",
            Metric::CPUPercent => "$CPUPercent",
            Metric::MemoryBytes => "$MemoryBytes",
            Metric::DiskBytes => "$DiskBytes",
            Metric::DiskReadBytes => "$DiskReadBytes",
            Metric::DiskWriteBytes => "$DiskWriteBytes",
            Metric::DiskReadOps => "$DiskReadOps",
            Metric::DiskWriteOps => "$DiskWriteOps",
            Metric::NetworkInBytes => "$NetworkInBytes",
            Metric::NetworkOutBytes => "$NetworkOutBytes",
            Metric::WallClockSeconds => "$WallClockSeconds",
        }
    }

    /// What it measures, for `--help` and the language doc.
    pub fn meaning(self) -> &'static str {
        match self {
            Metric::ActiveTasks => "tasks of the pool's jobs waiting to run",
            Metric::RunningTasks => "tasks assigned to or running on the pool's nodes",
            Metric::PendingTasks => "$ActiveTasks + $RunningTasks",
            Metric::SucceededTasks => "tasks of the pool's jobs that succeeded",
            Metric::FailedTasks => "tasks of the pool's jobs that failed",
            Metric::ActiveTaskSlots => "task slots the waiting tasks need",
            Metric::RunningTaskSlots => "task slots the running tasks hold",
            Metric::PendingTaskSlots => "$ActiveTaskSlots + $RunningTaskSlots",
            Metric::CurrentDedicatedNodes => "nodes in the pool, in any state but removed",
            Metric::CurrentLowPriorityNodes => "always 0: lote has no low-priority nodes",
            Metric::PreemptedNodeCount => "always 0: lote nodes are never preempted",
            Metric::UsableNodeCount => "nodes that can take work now",
            Metric::SampleNodeCount => "nodes whose agents reported machine figures recently",
            Metric::TaskSlotsPerNode => "task slots of each node",
            Metric::CPUPercent => "average CPU busy of the nodes' machines, 0-100",
            Metric::MemoryBytes => "average memory in use on the nodes' machines, bytes",
            Metric::DiskBytes => {
                "average space used on the file system of each node's directory, bytes"
            }
            Metric::DiskReadBytes => "bytes read from disk on all nodes in the last sample period",
            Metric::DiskWriteBytes => {
                "bytes written to disk on all nodes in the last sample period"
            }
            Metric::DiskReadOps => "disk reads on all nodes in the last sample period",
            Metric::DiskWriteOps => "disk writes on all nodes in the last sample period",
            Metric::NetworkInBytes => "bytes received by all nodes in the last sample period",
            Metric::NetworkOutBytes => "bytes sent by all nodes in the last sample period",
            Metric::WallClockSeconds => {
                "task-seconds the running tasks used in the last sample period"
            }
        }
    }

    /// Looks a `$` name up, ignoring case (Azure matches service variables
    /// whatever their case: `$targetDedicatedNodes` sets the target).
    pub fn lookup(name: &str) -> Option<Metric> {
        if name.eq_ignore_ascii_case("$CurrentDedicated") {
            return Some(Metric::CurrentDedicatedNodes);
        }
        if name.eq_ignore_ascii_case("$CurrentLowPriority") {
            return Some(Metric::CurrentLowPriorityNodes);
        }
        Metric::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// Every metric's value at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    pub values: Vec<f64>,
}

impl Sample {
    pub fn new(at_micros: i64) -> Self {
        Sample {
            at_micros,
            values: vec![0.0; METRIC_COUNT],
        }
    }
    pub fn get(&self, metric: Metric) -> f64 {
        self.values.get(metric as usize).copied().unwrap_or(0.0)
    }
    pub fn set(&mut self, metric: Metric, value: f64) {
        if self.values.len() < METRIC_COUNT {
            self.values.resize(METRIC_COUNT, 0.0);
        }
        self.values[metric as usize] = value;
    }
}

/// A pool's samples, oldest first, taken every `period_micros`.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    pub samples: &'a [Sample],
    pub period_micros: i64,
}

impl<'a> History<'a> {
    /// Samples taken in `(from, to]`.
    pub fn window(&self, from: i64, to: i64) -> &'a [Sample] {
        let start = self.samples.partition_point(|s| s.at_micros <= from);
        let end = self.samples.partition_point(|s| s.at_micros <= to);
        if start >= end {
            &[]
        } else {
            &self.samples[start..end]
        }
    }

    /// The most samples a window of this length could hold.
    pub fn possible(&self, from: i64, to: i64) -> i64 {
        if self.period_micros <= 0 || to <= from {
            return 0;
        }
        (to - from) / self.period_micros
    }
}
