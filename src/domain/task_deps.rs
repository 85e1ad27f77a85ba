//! Task dependencies' rules: what a task's outcome means for its
//! dependents and its job (the exit conditions resolved), and the order a
//! batch of tasks is added in (parents first; a cycle refused). The graph
//! itself lives in the scheduler's picture, folded from the log
//! (`server/supervisors/scheduler/deps.rs`).

use std::collections::HashMap;

use super::task_spec::{DependencyAction, ExitConditions, ExitOptions, JobAction, TaskSpec};
use super::{Rejection, RejectionCode};

/// A task's final outcome as exit conditions read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The process exited with this code (non-zero), or exited 0 and its
    /// outputs could not be uploaded (`upload_failed`).
    Exited {
        code: i32,
        upload_failed: bool,
    },
    /// It never ran: an input could not be fetched, or the command could
    /// not be started.
    PreProcessing,
    /// Killed (time limit, signal, memory), terminated, or deleted: no
    /// exit code to match.
    Other,
    /// Cancelled because a parent failed: its dependents are cancelled too,
    /// whatever its exit conditions say.
    ParentFailed,
}

/// The job and dependency actions of an outcome. `on_failed_parent` is the
/// job's default for a failure its exit conditions do not cover; a
/// failure's default job action is to terminate (it takes effect only in a
/// job that performs its tasks' exit options).
pub fn resolve(
    conditions: Option<&ExitConditions>,
    outcome: Outcome,
    on_failed_parent: DependencyAction,
) -> (JobAction, DependencyAction) {
    let options = conditions.and_then(|c| matching(c, outcome));
    match outcome {
        Outcome::ParentFailed => (JobAction::None, DependencyAction::Cancel),
        Outcome::Succeeded => {
            let o = options.unwrap_or_default();
            (
                o.job_action.unwrap_or(JobAction::None),
                o.dependency_action.unwrap_or(DependencyAction::Satisfy),
            )
        }
        _ => {
            let o = options.unwrap_or_default();
            (
                o.job_action.unwrap_or(JobAction::Terminate),
                o.dependency_action.unwrap_or(on_failed_parent),
            )
        }
    }
}

/// Whether a failed attempt with this outcome may be retried: not when
/// the exit condition it matches says `retry: false`.
pub fn retry_allowed(conditions: Option<&ExitConditions>, outcome: Outcome) -> bool {
    conditions
        .and_then(|c| matching(c, outcome))
        .and_then(|o| o.retry)
        .unwrap_or(true)
}

fn matching(c: &ExitConditions, outcome: Outcome) -> Option<ExitOptions> {
    let by_code = |code: i32| {
        c.exit_codes
            .iter()
            .find(|(k, _)| *k == code)
            .map(|(_, o)| *o)
            .or_else(|| {
                c.exit_code_ranges
                    .iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&code))
                    .map(|(_, _, o)| *o)
            })
    };
    match outcome {
        Outcome::Succeeded => by_code(0),
        Outcome::Exited {
            code,
            upload_failed,
        } => by_code(code)
            .or(if upload_failed {
                c.file_upload_error
            } else {
                None
            })
            .or(c.default),
        Outcome::PreProcessing => c.pre_processing_error.or(c.default),
        Outcome::Other => c.default,
        Outcome::ParentFailed => None,
    }
}

/// The order to add a batch in: every task after its parents in the
/// batch. A cycle is refused with its tasks named.
pub fn order_batch(specs: &[TaskSpec]) -> Result<Vec<usize>, Rejection> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // Parents of each task within the batch (ranges included).
    let mut numeric: Vec<(u64, usize)> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| super::task_spec::numeric_id(s.id.as_str()).map(|n| (n, i)))
        .collect();
    numeric.sort_unstable();
    let parents = |i: usize| -> Vec<usize> {
        let d = &specs[i].depends_on;
        let mut out: Vec<usize> = d
            .task_ids
            .iter()
            .filter_map(|t| index.get(t.as_str()).copied())
            .collect();
        for r in &d.ranges {
            let from = numeric.partition_point(|(n, _)| *n < r.start);
            out.extend(
                numeric[from..]
                    .iter()
                    .take_while(|(n, _)| *n <= r.end)
                    .map(|(_, j)| *j),
            );
        }
        out
    };
    if specs.iter().all(|s| s.depends_on.is_empty()) {
        return Ok((0..specs.len()).collect());
    }
    // Depth-first, iterative (a chain of a million must not overflow the
    // stack): 0 unseen, 1 on the path, 2 done.
    let mut mark = vec![0u8; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    for root in 0..specs.len() {
        if mark[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(root, parents(root))];
        mark[root] = 1;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(p) if mark[p] == 0 => {
                    mark[p] = 1;
                    let next = parents(p);
                    stack.push((p, next));
                }
                Some(p) if p == node => {
                    return Err(Rejection::new(
                        RejectionCode::DependencyCycle,
                        format!("task {} depends on itself", specs[p].id),
                    ));
                }
                Some(p) if mark[p] == 1 => {
                    let from = stack.iter().position(|(n, _)| *n == p).unwrap_or(0);
                    let path: Vec<&str> = stack[from..]
                        .iter()
                        .map(|(n, _)| specs[*n].id.as_str())
                        .collect();
                    return Err(Rejection::new(
                        RejectionCode::DependencyCycle,
                        format!(
                            "the batch's dependencies form a cycle: {} depends on {}",
                            path.join(" ← "),
                            specs[p].id
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    mark[node] = 2;
                    order.push(node);
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::CommandLine;
    use crate::domain::task_spec::{TaskDependencies, TaskIdRange};
    use crate::types::TaskId;

    fn task(id: &str, ids: &[&str], ranges: &[(u64, u64)]) -> TaskSpec {
        let mut t = TaskSpec::simple(TaskId::new(id).unwrap(), CommandLine::Shell("true".into()));
        t.depends_on = TaskDependencies {
            task_ids: ids.iter().map(|i| TaskId::new(*i).unwrap()).collect(),
            ranges: ranges
                .iter()
                .map(|(start, end)| TaskIdRange {
                    start: *start,
                    end: *end,
                })
                .collect(),
        };
        t
    }

    #[test]
    fn a_batch_is_ordered_parents_first_and_a_cycle_is_named() {
        let batch = [
            task("merge", &[], &[(1, 3)]),
            task("3", &["2"], &[]),
            task("2", &[], &[]),
            task("1", &[], &[]),
        ];
        let order = order_batch(&batch).unwrap();
        let pos = |id: &str| {
            order
                .iter()
                .position(|i| batch[*i].id.as_str() == id)
                .unwrap()
        };
        assert!(pos("2") < pos("3") && pos("3") < pos("merge") && pos("1") < pos("merge"));
        let cyclic = [
            task("a", &["c"], &[]),
            task("b", &["a"], &[]),
            task("c", &["b"], &[]),
        ];
        let refused = order_batch(&cyclic).unwrap_err();
        assert_eq!(refused.code, RejectionCode::DependencyCycle);
        assert!(refused.detail.contains("cycle"), "{}", refused.detail);
        for id in ["a", "b", "c"] {
            assert!(refused.detail.contains(id), "{}", refused.detail);
        }
        // Through a range: 7 waits for 1-9, which holds 8, which waits for 7.
        let via_range = [task("7", &[], &[(8, 9)]), task("8", &["7"], &[])];
        assert_eq!(
            order_batch(&via_range).unwrap_err().code,
            RejectionCode::DependencyCycle
        );
        // A chain longer than any stack frame budget.
        let chain: Vec<TaskSpec> = (0..200_000u32)
            .map(|i| {
                let parent = (i + 1).to_string();
                if i + 1 < 200_000 {
                    task(&i.to_string(), &[parent.as_str()], &[])
                } else {
                    task(&i.to_string(), &[], &[])
                }
            })
            .collect();
        let order = order_batch(&chain).unwrap();
        assert_eq!(batch_first(&chain, &order), "199999");
    }

    fn batch_first<'a>(specs: &'a [TaskSpec], order: &[usize]) -> &'a str {
        specs[order[0]].id.as_str()
    }

    #[test]
    fn exit_conditions_resolve_as_azure_reads_them_with_cancel_beside() {
        use DependencyAction::*;
        let opts = |job, dep| ExitOptions {
            job_action: job,
            dependency_action: dep,
            retry: None,
        };
        let c = ExitConditions {
            exit_codes: vec![(3, opts(Some(JobAction::None), Some(Satisfy)))],
            exit_code_ranges: vec![(10, 20, opts(None, Some(Cancel)))],
            pre_processing_error: Some(opts(Some(JobAction::Disable), None)),
            file_upload_error: Some(opts(None, Some(Block))),
            default: Some(opts(None, Some(Block))),
        };
        let exited = |code, upload_failed| Outcome::Exited {
            code,
            upload_failed,
        };
        assert_eq!(
            resolve(Some(&c), exited(3, false), Cancel),
            (JobAction::None, Satisfy)
        );
        assert_eq!(
            resolve(Some(&c), exited(12, false), Block),
            (JobAction::Terminate, Cancel)
        );
        // An exit code entry wins over the upload failure.
        assert_eq!(resolve(Some(&c), exited(3, true), Cancel).1, Satisfy);
        assert_eq!(resolve(Some(&c), exited(0, true), Cancel).1, Block);
        assert_eq!(
            resolve(Some(&c), Outcome::PreProcessing, Cancel),
            (JobAction::Disable, Cancel)
        );
        assert_eq!(resolve(Some(&c), exited(99, false), Cancel).1, Block);
        // The default never covers success.
        assert_eq!(
            resolve(Some(&c), Outcome::Succeeded, Cancel),
            (JobAction::None, Satisfy)
        );
        // Without conditions: the job's default for failures.
        assert_eq!(
            resolve(None, exited(1, false), Block),
            (JobAction::Terminate, Block)
        );
        assert_eq!(resolve(None, Outcome::Other, Cancel).1, Cancel);
        // A cancelled task cancels its own dependents whatever it says.
        let lenient = ExitConditions {
            default: Some(opts(None, Some(Satisfy))),
            ..ExitConditions::default()
        };
        assert_eq!(
            resolve(Some(&lenient), Outcome::ParentFailed, Satisfy).1,
            Cancel
        );
    }
}
