//! `job create --prep/--release`, `job prep-status`, and a job's common
//! variables and metadata (`--env`, `--metadata`).

use clap::Args;
use serde_json::{json, Value};

use lote::domain::job::Job;
use lote::domain::job_prep::{JobPreparation, JobRelease, NodeTaskStatus, RELEASE_SECS_MAX};
use lote::domain::spec::CommandLine;

/// A job's common variables and metadata.
#[derive(Args, Debug, Clone, Default)]
pub struct JobEnvArgs {
    /// A variable every task of the job gets: NAME=VALUE (repeatable; a
    /// task's own --env of the same name wins).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A name and value the job carries for its users (repeatable; lote
    /// does not read them): NAME=VALUE.
    #[arg(long = "metadata", value_name = "NAME=VALUE")]
    metadata: Vec<String>,
}

impl JobEnvArgs {
    pub fn specs(
        &self,
    ) -> Result<
        (
            Vec<lote::domain::EnvVar>,
            Vec<lote::domain::job_prep::MetadataItem>,
        ),
        String,
    > {
        let pair = |flag: &str, text: &str| -> Result<(String, String), String> {
            text.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .ok_or_else(|| format!("--{flag} {text:?}: expected NAME=VALUE"))
        };
        let mut env = Vec::new();
        for e in &self.env {
            let (name, value) = pair("env", e)?;
            env.push(lote::domain::EnvVar { name, value });
        }
        let mut metadata = Vec::new();
        for m in &self.metadata {
            let (name, value) = pair("metadata", m)?;
            metadata.push(lote::domain::job_prep::MetadataItem { name, value });
        }
        Ok((env, metadata))
    }
}

/// A job's preparation and release tasks.
#[derive(Args, Debug, Clone, Default)]
pub struct JobPrepArgs {
    /// Run LINE (with /bin/sh -c, as the pool's user) on each node before
    /// the job's first task there. Its directory is in LOTE_JOB_PREP_DIR
    /// and its working directory in LOTE_JOB_PREP_WORKING_DIR, for the
    /// job's tasks too. No task of the job starts on a node until it
    /// succeeded there; a node where it failed gets none of the job's
    /// tasks (but runs other jobs').
    #[arg(long = "prep", value_name = "LINE")]
    prep: Option<String>,
    /// Retries of a failed preparation on a node.
    #[arg(long, default_value_t = 0, requires = "prep")]
    prep_retries: u32,
    /// Longest one try of the preparation, seconds [default: no limit].
    #[arg(long, value_name = "SECS", requires = "prep")]
    prep_max_secs: Option<u64>,
    /// The job's tasks run on a node once its preparation ended there,
    /// even when it failed.
    #[arg(long, requires = "prep")]
    prep_no_wait: bool,
    /// After a node reboots, a preparation that succeeded there is not
    /// run again.
    #[arg(long, requires = "prep")]
    prep_once: bool,
    /// Run LINE on each node where the preparation ran when the job ends
    /// (terminated, completed, deleted, past its wall clock), with no task
    /// slot; the job completes once every one has ended.
    #[arg(long = "release", value_name = "LINE", requires = "prep")]
    release: Option<String>,
    /// Longest the release runs, seconds (at most 900).
    #[arg(long, value_name = "SECS", default_value_t = RELEASE_SECS_MAX, requires = "release")]
    release_max_secs: u64,
}

impl JobPrepArgs {
    pub fn specs(&self) -> (Option<Box<JobPreparation>>, Option<Box<JobRelease>>) {
        let prep = self.prep.as_ref().map(|line| {
            Box::new(JobPreparation {
                command_line: CommandLine::Shell(line.clone()),
                env: vec![],
                resource_files: vec![],
                max_wall_clock_secs: self.prep_max_secs,
                retry_count_max: self.prep_retries,
                wait_for_success: !self.prep_no_wait,
                rerun_on_reboot_after_success: !self.prep_once,
            })
        });
        let release = self.release.as_ref().map(|line| {
            Box::new(JobRelease {
                command_line: CommandLine::Shell(line.clone()),
                env: vec![],
                max_wall_clock_secs: self.release_max_secs,
            })
        });
        (prep, release)
    }
}

fn words(s: Option<&NodeTaskStatus>) -> (String, String) {
    match s {
        None => ("-".into(), "".into()),
        Some(s) if s.succeeded => ("succeeded".into(), code(s)),
        Some(s) => (
            format!("failed: {}", s.failure.as_deref().unwrap_or("?")),
            code(s),
        ),
    }
}

fn code(s: &NodeTaskStatus) -> String {
    s.exit_code.map(|c| c.to_string()).unwrap_or_default()
}

/// Per node: how the job's preparation and release ended there.
pub fn prep_status(job: &Job) -> (Value, String) {
    let spec = job.spec.as_ref();
    if spec.is_none_or(|s| s.preparation.is_none()) {
        let id = spec.map(|s| s.id.to_string()).unwrap_or_default();
        return (
            json!({ "nodes": [] }),
            format!("job {id} has no preparation task (job create --prep LINE)\n"),
        );
    }
    let mut nodes = Vec::new();
    let mut text =
        String::from("NODE          PREPARATION                          EXIT  RETRIES  RELEASE\n");
    for (node, prep) in &job.preparations {
        let release = job.releases.get(node);
        let (p, pe) = words(Some(prep));
        let (r, re) = match (release, spec.is_some_and(|s| s.release.is_some())) {
            (None, true) if job.status == lote::domain::job::JobStatus::Active => {
                ("runs when the job ends".into(), String::new())
            }
            (None, true) => ("pending".into(), String::new()),
            (None, false) => ("-".into(), String::new()),
            (Some(r), _) => words(Some(r)),
        };
        let release_text = if re.is_empty() {
            r.clone()
        } else {
            format!("{r} (exit {re})")
        };
        text.push_str(&format!(
            "{:<13} {:<36} {:<5} {:<8} {}\n",
            node.as_str(),
            p,
            pe,
            prep.retries,
            release_text
        ));
        nodes.push(json!({
            "node": node,
            "preparation": prep,
            "release": release,
        }));
    }
    if job.preparations.is_empty() {
        text.push_str("(no node has run it yet: it runs before the job's first task on a node)\n");
    }
    (json!({ "nodes": nodes }), text)
}
