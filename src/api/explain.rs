//! Why a queued task is not running: every reason at once, with the
//! numbers behind each, read from placement's picture.

use serde::{Deserialize, Serialize};

pub use crate::domain::job::WaitReason;

/// How a task's pool stands, for words such as "resizing to 4".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolContext {
    pub pool: String,
    pub target_nodes: u32,
    pub max_nodes: u32,
    pub resizing: bool,
    pub autoscale: bool,
}

/// A queued task's explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub slots: u32,
    pub reasons: Vec<WaitReason>,
    pub pool: PoolContext,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Thousands separated by commas, as people read counts.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 starting, 2 disabled (offline)": how many nodes are in each state
/// that takes no work, in the order of [`WaitReason::NodesNotReady`]'s
/// fields.
fn node_states(counts: [u32; 7]) -> String {
    const WHAT: [&str; 7] = [
        "starting",
        "running its start task",
        "failed its start task",
        "disabled (offline)",
        "unusable",
        "rebooting",
        "leaving the pool",
    ];
    let parts: Vec<String> = counts
        .iter()
        .zip(WHAT)
        .filter(|(n, _)| **n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if parts.is_empty() {
        return "not ready".into();
    }
    parts.join(", ")
}

impl WaitReason {
    /// The nodes that take no work, by state, as [`node_states`] reads
    /// them (zeros for the other reasons).
    fn not_working(&self) -> [u32; 7] {
        match *self {
            WaitReason::NodesNotReady {
                starting,
                waiting_for_start_task,
                start_task_failed,
                offline,
                unusable,
                rebooting,
                leaving,
            }
            | WaitReason::SomeNodesNotWorking {
                starting,
                waiting_for_start_task,
                start_task_failed,
                offline,
                unusable,
                rebooting,
                leaving,
                ..
            } => [
                starting,
                waiting_for_start_task,
                start_task_failed,
                offline,
                unusable,
                rebooting,
                leaving,
            ],
            _ => [0; 7],
        }
    }

    /// The reason in words, with its numbers.
    pub fn words(&self, pool: &PoolContext, job: &str) -> String {
        let p = &pool.pool;
        match self {
            WaitReason::JobDisabled => {
                format!(
                    "job {job} is disabled, so its queued tasks are held (lote job enable {job})"
                )
            }
            WaitReason::NoNodes => {
                if pool.autoscale {
                    format!("pool {p} has no nodes; its autoscale formula sets the target, now {} (lote pool autoscale history {p})", pool.target_nodes)
                } else if pool.target_nodes == 0 {
                    format!("pool {p} is empty: its target is 0 nodes (lote pool resize {p} N)")
                } else if pool.resizing {
                    format!(
                        "pool {p} has no nodes yet: it is resizing to {}",
                        pool.target_nodes
                    )
                } else {
                    format!("pool {p} has no nodes (target {})", pool.target_nodes)
                }
            }
            WaitReason::NodesNotReady { .. } => format!(
                "no node of pool {p} takes work now: {}",
                node_states(self.not_working())
            ),
            WaitReason::SomeNodesNotWorking { nodes, of, .. } => format!(
                "{nodes} of pool {p}'s {of} nodes {} no work now: {} (lote node list {p})",
                if *nodes == 1 { "takes" } else { "take" },
                node_states(self.not_working())
            ),
            WaitReason::StartTaskFailedEverywhere { nodes } => format!(
                "the start task failed on {} of pool {p} (lote node list {p})",
                if *nodes == 1 {
                    "its only node".to_string()
                } else {
                    format!("all {nodes} nodes")
                }
            ),
            WaitReason::TooFewSlots { needs, largest } => format!(
                "needs {}; nodes have {largest}",
                plural(u64::from(*needs), "slot", "slots")
            ),
            WaitReason::NodesFull {
                nodes,
                used,
                slots,
                most_free,
                needs,
            } => {
                let at_max = pool.max_nodes > 0 && *nodes >= pool.max_nodes;
                let mut s = if *most_free == 0 && *nodes == 1 && pool.target_nodes > 1 {
                    format!("the one node taking work is full ({used} of {slots} slots in use)")
                } else if *most_free == 0 && *nodes == 1 {
                    format!("its only node is full ({used} of {slots} slots in use)")
                } else if *most_free == 0 {
                    format!("all {nodes} nodes are full ({used} of {slots} slots in use)")
                } else {
                    format!(
                        "no node has {} free (most free on one node: {most_free}; {used} of {slots} slots in use)",
                        plural(u64::from(*needs), "slot", "slots")
                    )
                };
                if at_max {
                    s.push_str(&format!(
                        "; the pool is at its maximum of {} nodes",
                        pool.max_nodes
                    ));
                }
                s
            }
            WaitReason::HigherPriorityAhead { tasks } => format!(
                "{} of higher-priority jobs {} ahead of it",
                plural(*tasks, "task", "tasks"),
                if *tasks == 1 { "waits" } else { "wait" }
            ),
            WaitReason::EarlierAhead { tasks } => format!(
                "{} submitted earlier {} ahead of it",
                plural(*tasks, "task", "tasks"),
                if *tasks == 1 { "waits" } else { "wait" }
            ),
            WaitReason::WaitsForParents { waiting, of, first } => {
                let named: Vec<String> = first
                    .iter()
                    .map(|(task, state)| format!("{task} ({state})"))
                    .collect();
                let more = (*waiting as usize).saturating_sub(first.len());
                format!(
                    "waits for {waiting} of {}: {}{}",
                    plural(u64::from(*of), "parent", "parents"),
                    named.join(", "),
                    if more > 0 {
                        format!(", and {} more", grouped(more as u64))
                    } else {
                        String::new()
                    }
                )
            }
            WaitReason::BlockedByParent { parent, outcome } => format!(
                "blocked: parent {parent} failed ({outcome}) and the policy is block; it never runs \
                 unless you act (lote task terminate {job} TASK ends it)"
            ),
            WaitReason::CancelledByParent { parent, outcome } => format!(
                "parent {parent} failed ({outcome}) and the policy is cancel: it is being cancelled"
            ),
            WaitReason::PreparationFailed { nodes, of } => format!(
                "the job's preparation failed on {} of pool {p}'s {of} nodes, which take none of its tasks (lote job prep-status {job})",
                if nodes == of {
                    "all".to_string()
                } else {
                    nodes.to_string()
                }
            ),
            WaitReason::HeldByParents { blocked: 0 } => {
                format!("for their parents to end (lote task explain {job} TASK names them)")
            }
            WaitReason::HeldByParents { blocked } => format!(
                "for their parents to end; {} blocked for good by a failed parent \
                 (lote task explain {job} TASK; lote task terminate ends one)",
                grouped(*blocked)
            ),
        }
    }

    /// The reason a whole group of tasks shares, for a job summary (queue
    /// positions differ task by task, so they are left out).
    pub fn shared(self: &WaitReason) -> bool {
        !matches!(
            self,
            WaitReason::HigherPriorityAhead { .. } | WaitReason::EarlierAhead { .. }
        )
    }
}

/// Queued tasks of a job that wait for the same reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitGroup {
    pub tasks: u64,
    pub slots: u32,
    pub reasons: Vec<WaitReason>,
}

/// "9,812 tasks wait: all 4 nodes are full (8 of 8 slots in use)".
pub fn summary(group: &WaitGroup, pool: &PoolContext, job: &str) -> String {
    let reasons: Vec<String> = group
        .reasons
        .iter()
        .filter(|r| r.shared())
        .map(|r| r.words(pool, job))
        .collect();
    let head = format!(
        "{} {}",
        grouped(group.tasks),
        if group.tasks == 1 {
            "task waits"
        } else {
            "tasks wait"
        }
    );
    if reasons.is_empty() {
        format!("{head}: for placement (free slots exist; they are next)")
    } else {
        format!("{head}: {}", reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_carry_the_numbers() {
        let pool = PoolContext {
            pool: "p".into(),
            target_nodes: 4,
            max_nodes: 4,
            ..Default::default()
        };
        let full = WaitReason::NodesFull {
            nodes: 4,
            used: 8,
            slots: 8,
            most_free: 0,
            needs: 1,
        };
        let group = WaitGroup {
            tasks: 9812,
            slots: 1,
            reasons: vec![full, WaitReason::EarlierAhead { tasks: 3 }],
        };
        assert_eq!(
            summary(&group, &pool, "j"),
            "9,812 tasks wait: all 4 nodes are full (8 of 8 slots in use); the pool is at its maximum of 4 nodes"
        );
        assert_eq!(
            WaitReason::TooFewSlots {
                needs: 4,
                largest: 2
            }
            .words(&pool, "j"),
            "needs 4 slots; nodes have 2"
        );
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
