//! A run of an app: its parameters checked against the definition (every
//! problem at once, before anything runs), then turned into a job and its
//! tasks: one per split item and stage, each stage waiting for the one
//! before, and the merge waiting for them all.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::definition::{AppDefinition, OutputKind, ParamKind, Parameter, Split, STRING_VALUE_MAX};
use super::{INPUTS_CONTAINER, JOBS_CONTAINER};
use crate::domain::job::{JobDependencies, JobSpec, OnAllTasksComplete, OnTaskFailure};
use crate::domain::job_prep::MetadataItem;
use crate::domain::spec::{
    CommandLine, OutputFile, PackageRef, ResourceFile, ResourceSource, UploadCondition,
};
use crate::domain::task_spec::{DependencyAction, TaskDependencies, TaskIdRange, TaskSpec};
use crate::types::{AccountName, JobId, PoolId, TaskId};

/// Most tasks one run makes (stages times items, plus the merge): one
/// append, like a batch of `task add-many`. A larger split takes a bigger
/// chunk.
pub const RUN_TASKS_MAX: usize = crate::api::ADD_TASKS_BATCH_MAX;

/// Most input files of one run.
pub const RUN_INPUTS_MAX: usize = 1000;

/// One input file of a run: stored once per content, named by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppInput {
    /// The file's name in every task's working directory.
    pub name: String,
    /// Lower-case hex SHA-256: its blob in `lote-app-inputs`.
    pub sha256: String,
}

/// Job metadata names that mark a job as an app's run.
pub const META_APP: &str = "lote.app";
pub const META_VERSION: &str = "lote.app.version";
/// Prefix of each parameter's metadata item.
pub const META_PARAM: &str = "lote.app.param.";
/// On a reprocessing job: the run (its first job) it belongs to.
pub const META_RUN: &str = "lote.app.run";

/// The id of a run's `generation`-th reprocessing job: `ROOT-rN`.
pub fn reprocess_id(root: &JobId, generation: u32) -> Result<JobId, crate::types::IdError> {
    JobId::new(format!("{root}-r{generation}"))
}

/// The failed tasks of a run's job, to run again in its next job: same
/// ids, commands and outputs; each waits only for the parents that run
/// again with it (the others succeeded).
pub fn reprocess_tasks(failed: Vec<TaskSpec>) -> Vec<TaskSpec> {
    let ids: Vec<u64> = failed
        .iter()
        .filter_map(|t| crate::domain::task_spec::numeric_id(t.id.as_str()))
        .collect();
    let names: Vec<TaskId> = failed.iter().map(|t| t.id.clone()).collect();
    let mut out: Vec<TaskSpec> = failed
        .into_iter()
        .map(|mut t| {
            t.depends_on
                .ranges
                .retain(|r| ids.iter().any(|i| (r.start..=r.end).contains(i)));
            t.depends_on.task_ids.retain(|p| names.contains(p));
            t
        })
        .collect();
    // Parents first, as they were added.
    out.sort_by_key(|t| crate::domain::task_spec::numeric_id(t.id.as_str()).unwrap_or(u64::MAX));
    out
}

/// Whether `value` is a valid value of `param`; the reason if not.
pub fn check_value(param: &Parameter, value: &str) -> Result<(), String> {
    match &param.kind {
        ParamKind::Integer { min, max } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| "is not an integer".to_string())?;
            bounds(v as f64, min.map(|m| m as f64), max.map(|m| m as f64))
        }
        ParamKind::Number { min, max } => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| "is not a number".to_string())?;
            if !v.is_finite() {
                return Err("is not a finite number".into());
            }
            bounds(v, *min, *max)
        }
        ParamKind::String { max_len } => {
            let max = max_len.map_or(STRING_VALUE_MAX, |m| (m as usize).min(STRING_VALUE_MAX));
            if value.len() > max {
                Err(format!("is {} bytes; at most {max}", value.len()))
            } else if value.contains('\0') {
                Err("contains a NUL byte".into())
            } else {
                Ok(())
            }
        }
        ParamKind::Boolean => match value {
            "true" | "false" => Ok(()),
            _ => Err("is not true or false".into()),
        },
        ParamKind::Choice { choices } => {
            if choices.iter().any(|c| c == value) {
                Ok(())
            } else {
                Err(format!("is not one of {}", choices.join(", ")))
            }
        }
        ParamKind::File => Ok(()),
    }
}

fn bounds(v: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    match (min, max) {
        (Some(lo), _) if v < lo => Err(format!("is below the minimum {lo}")),
        (_, Some(hi)) if v > hi => Err(format!("is above the maximum {hi}")),
        _ => Ok(()),
    }
}

/// Every parameter's value (given or default), or every problem of the
/// submission: unknown names, missing required values, bad values, file
/// parameters naming no input, duplicate inputs.
pub fn check_run(
    def: &AppDefinition,
    given: &[(String, String)],
    inputs: &[AppInput],
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut problems = vec![];
    let mut values = BTreeMap::new();
    // Values already refused: no second problem derived from them.
    let mut bad: Vec<&str> = vec![];
    for (name, value) in given {
        let Some(param) = def.parameters.iter().find(|p| p.name == *name) else {
            let names: Vec<&str> = def.parameters.iter().map(|p| p.name.as_str()).collect();
            problems.push(format!(
                "{name}: {} {} has no such parameter (it has: {})",
                def.name,
                def.version,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
            continue;
        };
        if values.insert(name.clone(), value.clone()).is_some() {
            problems.push(format!("{name}: given twice"));
        }
        if let Err(why) = check_value(param, value) {
            problems.push(format!("{name}={value:?} {why} ({})", param.kind.word()));
            bad.push(name.as_str());
        }
        if param.kind == ParamKind::File && !inputs.iter().any(|i| i.name == *value) {
            problems.push(format!(
                "{name}={value:?} names no input file of this run (add it with --input)"
            ));
        }
    }
    for p in &def.parameters {
        if values.contains_key(&p.name) {
            continue;
        }
        match (&p.default, p.required) {
            (Some(d), _) => {
                values.insert(p.name.clone(), d.clone());
            }
            (None, true) => problems.push(format!(
                "{}: required ({}{})",
                p.name,
                p.kind.word(),
                if p.description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", p.description)
                }
            )),
            (None, false) => {}
        }
    }
    let mut names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            problems.push(format!("input file name {:?} is given twice", pair[0]));
        }
    }
    if inputs.len() > RUN_INPUTS_MAX {
        problems.push(format!(
            "{} input files; at most {RUN_INPUTS_MAX}",
            inputs.len()
        ));
    }
    for i in inputs {
        if i.name.is_empty() || i.name.contains('/') || i.name == "." || i.name == ".." {
            problems.push(format!(
                "input file name {:?} must be a plain file name",
                i.name
            ));
        }
        if i.sha256.len() != 64 || !i.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("input {}: {:?} is not a SHA-256", i.name, i.sha256));
        }
    }
    if let Split::Range { from, to, chunk } = &def.split {
        let ends = (int(&values, from), int(&values, to));
        if let (Some(a), Some(b), false) = (
            ends.0,
            ends.1,
            bad.contains(&from.as_str()) || bad.contains(&to.as_str()),
        ) {
            if a > b {
                problems.push(format!("{from}={a} is after {to}={b}: the range is empty"));
            } else {
                let items = ((b - a) as u128 / *chunk as u128) + 1;
                check_count(def, items, &mut problems);
            }
        }
    }
    if let Split::Files { pattern } = &def.split {
        let n = matching(inputs, pattern).len();
        if n == 0 {
            problems.push(format!(
                "no input file matches {pattern:?}: the app makes one task per matching file"
            ));
        }
        check_count(def, n as u128, &mut problems);
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

fn check_count(def: &AppDefinition, items: u128, problems: &mut Vec<String>) {
    let total = tasks_for(def, items);
    if total > RUN_TASKS_MAX as u128 {
        problems.push(format!(
            "this run would make {total} tasks; one run makes at most {RUN_TASKS_MAX} (use fewer items or a bigger chunk)"
        ));
    }
}

fn tasks_for(def: &AppDefinition, items: u128) -> u128 {
    def.stages
        .iter()
        .map(|s| if s.single { 1 } else { items })
        .sum::<u128>()
        + def.merge.is_some() as u128
}

fn int(values: &BTreeMap<String, String>, name: &str) -> Option<i64> {
    values.get(name).and_then(|v| v.trim().parse().ok())
}

fn matching<'a>(inputs: &'a [AppInput], pattern: &str) -> Vec<&'a AppInput> {
    let Ok(p) = glob::Pattern::new(pattern) else {
        return vec![];
    };
    inputs.iter().filter(|i| p.matches(&i.name)).collect()
}

/// One split item: its index and placeholders, and the inputs that are
/// its alone.
struct Item {
    index: u64,
    label: String,
    values: Vec<(&'static str, String)>,
    own: Vec<ResourceFile>,
}

/// Where a run's files go in `lote-app-jobs`.
pub fn output_prefix(job: &JobId, kind: OutputKind, task: &str) -> String {
    match kind {
        OutputKind::Output | OutputKind::Intermediate => format!("{job}/{}/", kind.word()),
        OutputKind::Preview | OutputKind::Log => format!("{job}/tasks/{task}/{}/", kind.word()),
    }
}

/// Where the merge's result and preview go.
pub fn result_prefix(job: &JobId) -> String {
    format!("{job}/result/")
}

pub fn result_preview_prefix(job: &JobId) -> String {
    format!("{job}/result-preview/")
}

/// What a checked run becomes.
pub struct Expansion {
    pub job: JobSpec,
    pub tasks: Vec<TaskSpec>,
}

/// Where a run goes and what it carries.
pub struct RunTarget<'a> {
    pub account: &'a AccountName,
    pub job: &'a JobId,
    pub pool: &'a PoolId,
    pub inputs: &'a [AppInput],
    /// The lines of the `lines` split's file, when the app splits so.
    pub lines: Option<Vec<String>>,
}

/// The job and tasks of a run whose values `check_run` accepted.
pub fn expand(
    def: &AppDefinition,
    values: &BTreeMap<String, String>,
    target: RunTarget<'_>,
) -> Result<Expansion, Vec<String>> {
    let input = |i: &AppInput| ResourceFile {
        source: ResourceSource::Blob {
            container: INPUTS_CONTAINER.into(),
            name: i.sha256.to_lowercase(),
        },
        path: i.name.clone(),
        mode: None,
    };
    let (items, shared): (Vec<Item>, Vec<ResourceFile>) = match &def.split {
        Split::Single | Split::Splitter { .. } => (
            vec![Item {
                index: 1,
                label: String::new(),
                values: vec![],
                own: vec![],
            }],
            target.inputs.iter().map(input).collect(),
        ),
        Split::Range { from, to, chunk } => {
            let (a, b) = (int(values, from).unwrap_or(0), int(values, to).unwrap_or(0));
            let mut items = vec![];
            let mut start = a as i128;
            let mut index = 1;
            while start <= b as i128 {
                let end = (start + *chunk as i128 - 1).min(b as i128);
                items.push(Item {
                    index,
                    label: format!("{from} {start}-{end}"),
                    values: vec![
                        ("range.from", start.to_string()),
                        ("range.to", end.to_string()),
                    ],
                    own: vec![],
                });
                index += 1;
                start = end + 1;
            }
            (items, target.inputs.iter().map(input).collect())
        }
        Split::Files { pattern } => {
            let own = matching(target.inputs, pattern);
            let items = own
                .iter()
                .zip(1..)
                .map(|(i, index)| Item {
                    index,
                    label: i.name.clone(),
                    values: vec![("file", i.name.clone())],
                    own: vec![input(i)],
                })
                .collect();
            let shared = target
                .inputs
                .iter()
                .filter(|i| !own.iter().any(|o| o.name == i.name))
                .map(input)
                .collect();
            (items, shared)
        }
        Split::Lines { .. } => {
            let lines = target.lines.clone().unwrap_or_default();
            if lines.is_empty() {
                return Err(vec![
                    "the lines file has no non-empty line: no task to run".into()
                ]);
            }
            let items: Vec<Item> = lines
                .into_iter()
                .zip(1..)
                .map(|(line, index)| Item {
                    index,
                    label: format!("line {index}"),
                    values: vec![("line", line)],
                    own: vec![],
                })
                .collect();
            let mut problems = vec![];
            check_count(def, items.len() as u128, &mut problems);
            if !problems.is_empty() {
                return Err(problems);
            }
            (items, target.inputs.iter().map(input).collect())
        }
    };
    let package = PackageRef {
        id: def.name.clone(),
        version: Some(def.version.clone()),
    };
    let app_dir = format!("\"${}\"", super::package_env(def));
    let fill = |command: &str, task: &str, item: &Item| {
        super::definition::each_placeholder(command, |name| match name {
            "app" => app_dir.clone(),
            "index" => item.index.to_string(),
            "task" => task.to_string(),
            "job" => quote(target.job.as_str()),
            other => item
                .values
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, v)| quote(v))
                .or_else(|| values.get(other).map(|v| quote(v)))
                .unwrap_or_default(),
        })
    };
    let mut tasks: Vec<TaskSpec> = vec![];
    let mut previous: Option<TaskIdRange> = None;
    for stage in &def.stages {
        let first = tasks.len() as u64 + 1;
        let stage_items: Vec<&Item> = if stage.single {
            items.iter().take(1).collect()
        } else {
            items.iter().collect()
        };
        for item in stage_items {
            let id = (tasks.len() + 1).to_string();
            let mut t = TaskSpec::simple(
                TaskId::new(id.clone()).map_err(|e| vec![e.to_string()])?,
                CommandLine::Shell(fill(&stage.command, &id, item)),
            );
            t.display_name = if stage.single || item.label.is_empty() {
                stage.name.clone()
            } else {
                format!("{} {}", stage.name, item.label)
            };
            t.display_name.truncate(1024);
            if !stage.single {
                t.resource_files = item.own.clone();
            }
            if previous.is_some() {
                t.resource_files.push(ResourceFile {
                    source: ResourceSource::BlobPrefix {
                        container: JOBS_CONTAINER.into(),
                        prefix: output_prefix(target.job, OutputKind::Intermediate, &id),
                    },
                    path: "intermediate".into(),
                    mode: None,
                });
            }
            t.output_files = stage
                .outputs
                .iter()
                .map(|o| OutputFile {
                    pattern: o.pattern.clone(),
                    container: JOBS_CONTAINER.into(),
                    path_prefix: output_prefix(target.job, o.kind, &id),
                    upload_condition: if o.kind == OutputKind::Log {
                        UploadCondition::Completion
                    } else {
                        UploadCondition::Success
                    },
                })
                .collect();
            t.output_files.extend(std_logs(target.job, &id));
            t.required_slots = def.slots;
            t.application_packages = vec![package.clone()];
            if let Some(p) = previous {
                t.depends_on = TaskDependencies {
                    task_ids: vec![],
                    ranges: vec![p],
                };
            }
            t.exit_conditions = super::outcome_conditions(&def.outcomes);
            tasks.push(t);
        }
        previous = Some(TaskIdRange {
            start: first,
            end: tasks.len() as u64,
        });
    }
    if let Some(merge) = &def.merge {
        let id = (tasks.len() + 1).to_string();
        let item = Item {
            index: 1,
            label: String::new(),
            values: vec![],
            own: vec![],
        };
        let mut t = TaskSpec::simple(
            TaskId::new(id.clone()).map_err(|e| vec![e.to_string()])?,
            CommandLine::Shell(fill(&merge.command, &id, &item)),
        );
        t.display_name = "merge".into();
        t.resource_files.push(ResourceFile {
            source: ResourceSource::BlobPrefix {
                container: JOBS_CONTAINER.into(),
                prefix: output_prefix(target.job, OutputKind::Output, &id),
            },
            path: ".".into(),
            mode: None,
        });
        let mut outputs = vec![(merge.output.clone(), result_prefix(target.job))];
        if let Some(p) = &merge.preview {
            outputs.push((p.clone(), result_preview_prefix(target.job)));
        }
        t.output_files = outputs
            .into_iter()
            .map(|(pattern, prefix)| OutputFile {
                pattern,
                container: JOBS_CONTAINER.into(),
                path_prefix: prefix,
                upload_condition: UploadCondition::Success,
            })
            .collect();
        t.output_files.extend(std_logs(target.job, &id));
        t.required_slots = def.slots;
        t.application_packages = vec![package.clone()];
        if !tasks.is_empty() {
            t.depends_on = TaskDependencies {
                task_ids: vec![],
                ranges: vec![TaskIdRange {
                    start: 1,
                    end: tasks.len() as u64,
                }],
            };
        }
        t.exit_conditions = super::outcome_conditions(&def.outcomes);
        tasks.push(t);
    }
    let mut job = JobSpec::on_pool(
        target.job.clone(),
        target.account.clone(),
        target.pool.clone(),
    );
    job.display_name = format!("{} {}", def.name, def.version);
    job.max_task_retries = def.outcomes.max_retries;
    job.on_all_tasks_complete = OnAllTasksComplete::TerminateJob;
    job.on_task_failure = OnTaskFailure::NoAction;
    job.dependencies = Some(JobDependencies {
        on_failed_parent: DependencyAction::Cancel,
    });
    job.common_resource_files = shared;
    job.metadata = metadata(def, values);
    if let Split::Splitter { command } = &def.split {
        let mut manager = TaskSpec::simple(
            TaskId::new("splitter").map_err(|e| vec![e.to_string()])?,
            CommandLine::Shell(fill(command, "splitter", &items[0])),
        );
        manager.display_name = "splitter".into();
        manager.application_packages = vec![package];
        manager.output_files = std_logs(target.job, "splitter");
        job.job_manager = Some(Box::new(crate::domain::job::JobManager {
            task: manager,
            kill_job_on_completion: false,
            run_exclusive: false,
        }));
    }
    Ok(Expansion { job, tasks })
}

/// Every task's stdout and stderr, kept as its logs whatever its outcome.
fn std_logs(job: &JobId, task: &str) -> Vec<OutputFile> {
    ["../stdout.txt", "../stderr.txt"]
        .into_iter()
        .map(|pattern| OutputFile {
            pattern: pattern.into(),
            container: JOBS_CONTAINER.into(),
            path_prefix: output_prefix(job, OutputKind::Log, task),
            upload_condition: UploadCondition::Completion,
        })
        .collect()
}

fn metadata(def: &AppDefinition, values: &BTreeMap<String, String>) -> Vec<MetadataItem> {
    let mut out = vec![
        MetadataItem {
            name: META_APP.into(),
            value: def.name.clone(),
        },
        MetadataItem {
            name: META_VERSION.into(),
            value: def.version.clone(),
        },
    ];
    // In the definition's order, so `app job show` lists them as declared.
    for p in &def.parameters {
        if let Some(v) = values.get(&p.name) {
            out.push(MetadataItem {
                name: format!("{META_PARAM}{}", p.name),
                value: v.clone(),
            });
        }
    }
    out
}

/// A value as one shell word.
pub fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/=+@%".contains(&b))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}
