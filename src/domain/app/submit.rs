//! A run of an app: its parameters checked against the definition (every
//! problem at once, before anything runs), then turned into a job and its
//! tasks: one per split item and stage, each stage waiting for the one
//! before, and the merge waiting for them all.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::definition::{check_value, AppDefinition, OutputKind, ParamKind, Split};
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
    let b = Builder {
        def,
        values,
        app_dir: format!("\"${}\"", super::package_env(def)),
        package: PackageRef {
            id: def.name.clone(),
            version: Some(def.version.clone()),
        },
        target,
    };
    let (items, shared) = b.items()?;
    let mut tasks: Vec<TaskSpec> = vec![];
    let mut previous: Option<TaskIdRange> = None;
    for stage in &def.stages {
        let first = tasks.len() as u64 + 1;
        let count = if stage.single { 1 } else { items.len() };
        for item in items.iter().take(count) {
            let t = b.stage_task(stage, item, tasks.len() + 1, previous)?;
            tasks.push(t);
        }
        previous = Some(TaskIdRange {
            start: first,
            end: tasks.len() as u64,
        });
    }
    if let Some(merge) = &def.merge {
        let t = b.merge_task(merge, tasks.len())?;
        tasks.push(t);
    }
    let job = b.job_spec(shared, &items[0])?;
    Ok(Expansion { job, tasks })
}

/// What every task of a run is made with.
struct Builder<'a> {
    def: &'a AppDefinition,
    values: &'a BTreeMap<String, String>,
    target: RunTarget<'a>,
    package: PackageRef,
    app_dir: String,
}

impl Builder<'_> {
    fn input(i: &AppInput) -> ResourceFile {
        ResourceFile {
            source: ResourceSource::Blob {
                container: INPUTS_CONTAINER.into(),
                name: i.sha256.to_lowercase(),
            },
            path: i.name.clone(),
            mode: None,
        }
    }

    /// The split's items, and the inputs every task gets.
    fn items(&self) -> Result<(Vec<Item>, Vec<ResourceFile>), Vec<String>> {
        let all = || self.target.inputs.iter().map(Self::input).collect();
        let item = |index, label, values, own| Item {
            index,
            label,
            values,
            own,
        };
        match &self.def.split {
            Split::Single | Split::Splitter { .. } => {
                Ok((vec![item(1, String::new(), vec![], vec![])], all()))
            }
            Split::Range { from, to, chunk } => {
                let (a, b) = (
                    int(self.values, from).unwrap_or(0) as i128,
                    int(self.values, to).unwrap_or(0) as i128,
                );
                let mut items = vec![];
                let mut start = a;
                while start <= b {
                    let end = (start + *chunk as i128 - 1).min(b);
                    let values = vec![
                        ("range.from", start.to_string()),
                        ("range.to", end.to_string()),
                    ];
                    let label = format!("{from} {start}-{end}");
                    items.push(item(items.len() as u64 + 1, label, values, vec![]));
                    start = end + 1;
                }
                Ok((items, all()))
            }
            Split::Files { pattern } => {
                let own = matching(self.target.inputs, pattern);
                let items = own
                    .iter()
                    .zip(1..)
                    .map(|(i, index)| {
                        let values = vec![("file", i.name.clone())];
                        item(index, i.name.clone(), values, vec![Self::input(i)])
                    })
                    .collect();
                let shared = self
                    .target
                    .inputs
                    .iter()
                    .filter(|i| !own.iter().any(|o| o.name == i.name))
                    .map(Self::input)
                    .collect();
                Ok((items, shared))
            }
            Split::Lines { .. } => {
                let lines = self.target.lines.clone().unwrap_or_default();
                if lines.is_empty() {
                    return Err(vec![
                        "the lines file has no non-empty line: no task to run".into()
                    ]);
                }
                let mut problems = vec![];
                check_count(self.def, lines.len() as u128, &mut problems);
                if !problems.is_empty() {
                    return Err(problems);
                }
                let items = lines
                    .into_iter()
                    .zip(1..)
                    .map(|(line, index)| {
                        item(index, format!("line {index}"), vec![("line", line)], vec![])
                    })
                    .collect();
                Ok((items, all()))
            }
        }
    }

    /// A command with its placeholders filled, each value one shell word.
    fn fill(&self, command: &str, task: &str, item: &Item) -> String {
        super::definition::each_placeholder(command, |name| match name {
            "app" => self.app_dir.clone(),
            "index" => item.index.to_string(),
            "task" => task.to_string(),
            "job" => quote(self.target.job.as_str()),
            other => item
                .values
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, v)| quote(v))
                .or_else(|| self.values.get(other).map(|v| quote(v)))
                .unwrap_or_default(),
        })
    }

    /// A task with what every task of the run has: its package, slots,
    /// outcomes and logs.
    fn task(&self, id: &str, command: String, display: String) -> Result<TaskSpec, Vec<String>> {
        let mut t = TaskSpec::simple(
            TaskId::new(id).map_err(|e| vec![e.to_string()])?,
            CommandLine::Shell(command),
        );
        t.display_name = display;
        t.display_name.truncate(1024);
        t.output_files = std_logs(self.target.job, id);
        t.required_slots = self.def.slots;
        t.application_packages = vec![self.package.clone()];
        t.exit_conditions = super::outcome_conditions(&self.def.outcomes);
        Ok(t)
    }

    fn stage_task(
        &self,
        stage: &super::definition::Stage,
        item: &Item,
        number: usize,
        previous: Option<TaskIdRange>,
    ) -> Result<TaskSpec, Vec<String>> {
        let id = number.to_string();
        let display = if stage.single || item.label.is_empty() {
            stage.name.clone()
        } else {
            format!("{} {}", stage.name, item.label)
        };
        let mut t = self.task(&id, self.fill(&stage.command, &id, item), display)?;
        if !stage.single {
            t.resource_files = item.own.clone();
        }
        if let Some(p) = previous {
            t.resource_files.push(ResourceFile {
                source: ResourceSource::BlobPrefix {
                    container: JOBS_CONTAINER.into(),
                    prefix: output_prefix(self.target.job, OutputKind::Intermediate, &id),
                },
                path: "intermediate".into(),
                mode: None,
            });
            t.depends_on = TaskDependencies {
                task_ids: vec![],
                ranges: vec![p],
            };
        }
        let outputs = stage.outputs.iter().map(|o| OutputFile {
            pattern: o.pattern.clone(),
            container: JOBS_CONTAINER.into(),
            path_prefix: output_prefix(self.target.job, o.kind, &id),
            upload_condition: if o.kind == OutputKind::Log {
                UploadCondition::Completion
            } else {
                UploadCondition::Success
            },
        });
        t.output_files.splice(0..0, outputs);
        Ok(t)
    }

    /// The merge: after tasks `1..=before`, with their outputs.
    fn merge_task(
        &self,
        merge: &super::definition::Merge,
        before: usize,
    ) -> Result<TaskSpec, Vec<String>> {
        let id = (before + 1).to_string();
        let item = Item {
            index: 1,
            label: String::new(),
            values: vec![],
            own: vec![],
        };
        let job = self.target.job;
        let mut t = self.task(&id, self.fill(&merge.command, &id, &item), "merge".into())?;
        t.resource_files.push(ResourceFile {
            source: ResourceSource::BlobPrefix {
                container: JOBS_CONTAINER.into(),
                prefix: output_prefix(job, OutputKind::Output, &id),
            },
            path: ".".into(),
            mode: None,
        });
        let mut results = vec![(merge.output.clone(), result_prefix(job))];
        if let Some(p) = &merge.preview {
            results.push((p.clone(), result_preview_prefix(job)));
        }
        let results = results.into_iter().map(|(pattern, prefix)| OutputFile {
            pattern,
            container: JOBS_CONTAINER.into(),
            path_prefix: prefix,
            upload_condition: UploadCondition::Success,
        });
        t.output_files.splice(0..0, results);
        if before > 0 {
            t.depends_on = TaskDependencies {
                task_ids: vec![],
                ranges: vec![TaskIdRange {
                    start: 1,
                    end: before as u64,
                }],
            };
        }
        Ok(t)
    }

    /// The run's job: ends when its tasks have; a failure cancels what
    /// depends on it; a splitter is its manager.
    fn job_spec(&self, shared: Vec<ResourceFile>, first: &Item) -> Result<JobSpec, Vec<String>> {
        let (def, target) = (self.def, &self.target);
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
        job.metadata = metadata(def, self.values);
        if let Split::Splitter { command } = &def.split {
            let mut manager = self.task(
                "splitter",
                self.fill(command, "splitter", first),
                "splitter".into(),
            )?;
            manager.exit_conditions = None;
            job.job_manager = Some(Box::new(crate::domain::job::JobManager {
                task: manager,
                kill_job_on_completion: false,
                run_exclusive: false,
            }));
        }
        Ok(job)
    }
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
