//! Task dependency flags: `--depends-on`, `--depends-on-range` and
//! `--on-exit` on tasks, `--dependencies` / `--on-failed-parent` on jobs
//! and schedules.

use clap::Args;

use lote::domain::job::JobDependencies;
use lote::domain::task_spec::{
    DependencyAction, ExitConditions, ExitOptions, JobAction, TaskDependencies, TaskIdRange,
};
use lote::types::TaskId;

/// A job's dependency settings.
#[derive(Args, Debug, Clone, Default)]
pub struct JobDependencyArgs {
    /// Its tasks may depend on each other (`task add --depends-on`). Set
    /// at creation only.
    #[arg(long)]
    dependencies: bool,
    /// What a failed parent does to its dependents when its --on-exit
    /// does not say: cancel (they fail at once as parent_failed, and so do
    /// theirs, so the job can end), block (they wait for good, Azure's
    /// rule) or satisfy (they run). Implies --dependencies. [default:
    /// cancel]
    #[arg(long, value_enum, value_name = "ACTION")]
    on_failed_parent: Option<DependencyAction>,
}

impl JobDependencyArgs {
    pub fn spec(&self) -> Option<JobDependencies> {
        (self.dependencies || self.on_failed_parent.is_some()).then(|| JobDependencies {
            on_failed_parent: self.on_failed_parent.unwrap_or(DependencyAction::Cancel),
        })
    }
}

/// What a task waits for and what its outcome means.
#[derive(Args, Debug, Clone, Default)]
pub struct TaskDependencyArgs {
    /// Tasks it waits for, by id: a,b,c (repeatable). They must be in the
    /// job already or in the same batch.
    #[arg(long, value_name = "ID,...")]
    depends_on: Vec<String>,
    /// Every task whose id is an integer in START-END, inclusive (07 counts
    /// as 7), among those in the job when it is added (repeatable).
    #[arg(long, value_name = "START-END")]
    depends_on_range: Vec<String>,
    /// What an outcome means, WHEN=ACTIONS (repeatable). WHEN: an exit
    /// code (3), a range (10-20), pre-processing (inputs or command
    /// failed), upload (outputs failed) or default (any other failure).
    /// ACTIONS: satisfy | block | cancel for its dependents, and/or
    /// job:none | job:disable | job:terminate (the job acts on it with
    /// --on-task-failure perform-exit-options-job-action), and/or no-retry
    /// (a permanent failure: not run again even with retries left) or
    /// retry. Example: --on-exit 3=satisfy --on-exit default=block,no-retry
    #[arg(long, value_name = "WHEN=ACTIONS")]
    on_exit: Vec<String>,
}

impl TaskDependencyArgs {
    pub fn is_empty(&self) -> bool {
        self.depends_on.is_empty() && self.depends_on_range.is_empty() && self.on_exit.is_empty()
    }

    /// The parents and exit conditions, with `{i}` in ids replaced by `i`.
    pub fn parse(
        &self,
        i: Option<u64>,
    ) -> Result<(TaskDependencies, Option<Box<ExitConditions>>), String> {
        parse(&self.depends_on, &self.depends_on_range, &self.on_exit, i)
    }
}

/// Parses the short forms (flags, or fields of an `add-many` line).
pub fn parse(
    ids: &[String],
    ranges: &[String],
    on_exit: &[String],
    i: Option<u64>,
) -> Result<(TaskDependencies, Option<Box<ExitConditions>>), String> {
    let mut deps = TaskDependencies::default();
    for list in ids {
        for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = match i {
                Some(i) => id.replace("{i}", &i.to_string()),
                None => id.to_string(),
            };
            deps.task_ids
                .push(TaskId::new(&id).map_err(|e| format!("--depends-on {id:?}: {e}"))?);
        }
    }
    for r in ranges {
        let (start, end) = range(r).ok_or_else(|| {
            format!("--depends-on-range {r:?}: expected START-END, two integers (1-1000)")
        })?;
        deps.ranges.push(TaskIdRange { start, end });
    }
    let mut conditions = ExitConditions::default();
    for item in on_exit {
        let (when, actions) = item
            .split_once('=')
            .ok_or_else(|| format!("--on-exit {item:?}: expected WHEN=ACTIONS (3=satisfy)"))?;
        let options = exit_options(actions).map_err(|e| format!("--on-exit {item:?}: {e}"))?;
        match when.trim() {
            "pre-processing" => conditions.pre_processing_error = Some(options),
            "upload" => conditions.file_upload_error = Some(options),
            "default" => conditions.default = Some(options),
            code => match (code.parse::<i32>(), signed_range(code)) {
                (Ok(c), _) => conditions.exit_codes.push((c, options)),
                (_, Some((a, b))) => conditions.exit_code_ranges.push((a, b, options)),
                _ => {
                    return Err(format!(
                        "--on-exit {item:?}: WHEN is an exit code, START-END, pre-processing, upload or default"
                    ))
                }
            },
        }
    }
    let conditions = (conditions != ExitConditions::default()).then(|| Box::new(conditions));
    Ok((deps, conditions))
}

fn range(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.trim().split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// "10-20" or "-5--1": two exit codes, either may be negative.
fn signed_range(text: &str) -> Option<(i32, i32)> {
    let cut = text.char_indices().skip(1).find(|(_, c)| *c == '-')?.0;
    Some((text[..cut].parse().ok()?, text[cut + 1..].parse().ok()?))
}

fn exit_options(text: &str) -> Result<ExitOptions, String> {
    let mut options = ExitOptions::default();
    for word in text.split(',').map(str::trim) {
        match word {
            "satisfy" => options.dependency_action = Some(DependencyAction::Satisfy),
            "block" => options.dependency_action = Some(DependencyAction::Block),
            "cancel" => options.dependency_action = Some(DependencyAction::Cancel),
            "job:none" => options.job_action = Some(JobAction::None),
            "job:disable" => options.job_action = Some(JobAction::Disable),
            "job:terminate" => options.job_action = Some(JobAction::Terminate),
            "retry" => options.retry = Some(true),
            "no-retry" => options.retry = Some(false),
            other => {
                return Err(format!(
                    "unknown action {other:?}: satisfy, block, cancel, job:none, job:disable, job:terminate, retry or no-retry"
                ))
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_parse_and_bad_ones_say_what_is_expected() {
        let (d, c) = parse(
            &["a,b".into(), "frame-{i}".into()],
            &["1-1000".into()],
            &[
                "3=satisfy".into(),
                "10-20=cancel,job:terminate".into(),
                "-5--1=block".into(),
                "default=block".into(),
                "upload=satisfy".into(),
            ],
            Some(7),
        )
        .unwrap();
        let ids: Vec<&str> = d.task_ids.iter().map(|t| t.as_str()).collect();
        assert_eq!(ids, ["a", "b", "frame-7"]);
        assert_eq!(
            d.ranges,
            [TaskIdRange {
                start: 1,
                end: 1000
            }]
        );
        let c = c.unwrap();
        assert_eq!(c.exit_codes[0].0, 3);
        assert_eq!(c.exit_code_ranges[0].0, 10);
        assert_eq!(
            c.exit_code_ranges[0].2.job_action,
            Some(JobAction::Terminate)
        );
        assert_eq!((c.exit_code_ranges[1].0, c.exit_code_ranges[1].1), (-5, -1));
        assert!(c.default.is_some() && c.file_upload_error.is_some());
        for bad in ["3", "x=satisfy", "3=maybe"] {
            assert!(parse(&[], &[], &[bad.into()], None).is_err(), "{bad}");
        }
        assert!(parse(&[], &["1..5".into()], &[], None)
            .unwrap_err()
            .contains("START-END"));
        assert!(parse(&[], &[], &[], None).unwrap().1.is_none());
    }
}
