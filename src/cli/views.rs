//! One pool, node, job or task as people read it (table mode); JSON mode
//! prints the whole state instead.

use std::fmt::Write;

use super::output::{opt, word};
use lote::domain::job::Job;
use lote::domain::node::Node;
use lote::domain::pool::{Pool, ScaleSettings};
use lote::domain::spec::CommandLine;
use lote::domain::task::{Task, TaskBucket};

/// A command line as it would be typed.
fn command(line: &CommandLine) -> String {
    match line {
        CommandLine::Shell(line) => format!("sh -c {line:?}"),
        CommandLine::Argv(argv) => argv
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|".contains(c))
                {
                    format!("{a:?}")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

pub(super) fn pool(p: &Pool, version: u64) -> String {
    let mut out = String::new();
    let Some(spec) = &p.spec else {
        return format!("pool (none): {}\n", word(&p.status));
    };
    let _ = writeln!(
        out,
        "pool {} ({}), version {version}",
        spec.id,
        word(&p.status)
    );
    let scale = match &spec.scale {
        ScaleSettings::Fixed { .. } => format!("fixed at {}", p.target_nodes),
        ScaleSettings::Autoscale {
            evaluation_interval_secs,
            ..
        } => format!(
            "autoscale every {evaluation_interval_secs}s, target now {}",
            p.target_nodes
        ),
    };
    let _ = writeln!(
        out,
        "  nodes:      {scale} (at most {}), resize {}",
        spec.node_count_max,
        word(&p.resize)
    );
    let size = spec.node_size;
    let _ = writeln!(
        out,
        "  each node:  {} task slot(s), {} core(s), {} MiB; {}",
        size.task_slots, size.cores, size.memory_mib, spec.os
    );
    let _ = writeln!(
        out,
        "  placement:  {}; provider {}",
        word(&spec.scheduling),
        word(&spec.provider)
    );
    if let Some((formula, _)) = &p.autoscale {
        let _ = writeln!(
            out,
            "  formula:    {}",
            formula.replace('\n', "\n              ")
        );
    }
    if let Some(start) = &spec.start_task {
        let _ = writeln!(
            out,
            "  start task: {} ({} retries; {})",
            command(&start.command_line),
            start.retry_count_max,
            if start.wait_for_success {
                "nodes wait for it"
            } else {
                "nodes work meanwhile"
            }
        );
    }
    let t = &spec.task_settings;
    let limit = |v: Option<String>| v.unwrap_or_else(|| "the node's".into());
    let _ = writeln!(
        out,
        "  tasks run:  as {}, {}; start task {}; memory {}, processes {}, CPU weight {}",
        match t.user_scope {
            lote::domain::pool::UserScope::Task => "a user per task",
            lote::domain::pool::UserScope::Pool => "the pool's user",
        },
        word(&t.elevation),
        word(&t.start_task_elevation),
        limit(t.memory_mib.map(|m| format!("{m} MiB"))),
        limit(t.processes_max.map(|n| n.to_string())),
        limit(t.cpu_weight.map(|w| w.to_string())),
    );
    for secret in &spec.secrets {
        let _ = writeln!(
            out,
            "  secret:     {}{}",
            secret.name,
            if secret.start_task_env {
                " (also in the start task's environment)"
            } else {
                ""
            }
        );
    }
    for app in &spec.application_packages {
        let _ = writeln!(
            out,
            "  package:    {}{}",
            app.id,
            app.version
                .as_ref()
                .map(|v| format!(":{v}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "  created:    {}", opt(&p.created_at));
    out
}

pub(super) fn schedule(s: &lote::domain::schedule::Schedule, version: u64) -> String {
    use lote::domain::schedule::Recurrence;
    let mut out = String::new();
    let Some(spec) = &s.spec else {
        return format!("schedule (none): {}\n", word(&s.status));
    };
    let _ = writeln!(
        out,
        "schedule {} ({}), version {version}",
        spec.id,
        word(&s.status)
    );
    let when = match &spec.recurrence {
        Recurrence::Once => "once".to_string(),
        Recurrence::Every { secs } => format!("every {secs}s"),
        Recurrence::Cron {
            expression,
            time_zone,
        } => format!("cron '{expression}' in {time_zone}"),
    };
    let _ = writeln!(
        out,
        "  runs:       {when}; overlap {}; next {} (run {})",
        word(&spec.overlap),
        opt(&s.next_due),
        s.next_run
    );
    let _ = writeln!(
        out,
        "  jobs:       on pool {}, {} task(s) each; {} started",
        spec.job.pool,
        spec.tasks.len(),
        s.runs_started
    );
    let _ = writeln!(
        out,
        "  not run:    {} skipped (previous job active), {} missed (start window), {} while disabled",
        s.skipped_previous_active, s.missed_start_window, s.skipped_disabled
    );
    for r in s.recent.iter().rev() {
        let _ = writeln!(
            out,
            "  run {:<6}  {} started {}{}",
            r.run,
            r.job,
            r.started,
            r.ended
                .map(|e| format!(", ended {e}"))
                .unwrap_or_else(|| ", active".into())
        );
    }
    out
}

pub(super) fn node(n: &Node, version: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} of pool {} ({}), version {version}",
        opt(&n.id),
        opt(&n.pool),
        word(&n.state)
    );
    let _ = writeln!(out, "  name:          {}", n.name);
    if let Some(agent) = &n.agent {
        let _ = writeln!(
            out,
            "  machine:       {} ({}), {} core(s), {} MiB, {} task slot(s), agent {}",
            agent.hostname,
            agent.address,
            agent.cores,
            agent.memory_mib,
            agent.task_slots,
            agent.agent_version
        );
    }
    let _ = writeln!(out, "  running tasks: {}", n.running_tasks);
    if let Some(why) = &n.unusable_reason {
        let _ = writeln!(out, "  unusable:      {why}");
    }
    if n.start_task_failures > 0 {
        let _ = writeln!(
            out,
            "  start task:    failed {} time(s): {}",
            n.start_task_failures,
            n.last_start_task_message.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out, "  state since:   {}", opt(&n.state_since));
    out
}

pub(super) fn job(j: &Job, version: u64) -> String {
    let mut out = String::new();
    let Some(spec) = &j.spec else {
        return format!("job (none): {}\n", word(&j.status));
    };
    let _ = writeln!(
        out,
        "job {} on pool {} ({}), version {version}",
        spec.id,
        spec.pool,
        word(&j.status)
    );
    let _ = writeln!(
        out,
        "  tasks:      {} added: {} queued, {} running, {} succeeded, {} failed",
        j.tasks_added,
        j.count(TaskBucket::Active),
        j.count(TaskBucket::Running),
        j.count(TaskBucket::Succeeded),
        j.count(TaskBucket::Failed)
    );
    let _ = writeln!(
        out,
        "  priority:   {}; {} retries per task; when all tasks end: {}; when a task fails: {}",
        spec.priority,
        spec.max_task_retries,
        word(&spec.on_all_tasks_complete),
        word(&spec.on_task_failure)
    );
    if let Some(m) = &spec.job_manager {
        let _ = writeln!(
            out,
            "  manager:    task {}{}{}",
            m.task.id,
            if m.kill_job_on_completion {
                "; ends the job when it completes"
            } else {
                ""
            },
            if m.run_exclusive {
                "; alone on its node"
            } else {
                ""
            }
        );
    }
    if !spec.common_env.is_empty() {
        let names: Vec<&str> = spec.common_env.iter().map(|v| v.name.as_str()).collect();
        let _ = writeln!(out, "  env:        {} (every task)", names.join(", "));
    }
    for m in &spec.metadata {
        let _ = writeln!(out, "  metadata:   {} = {}", m.name, m.value);
    }
    if let Some(p) = &spec.preparation {
        let _ = writeln!(
            out,
            "  prepare:    {} on each node first{}; lote job prep-status {}",
            match &p.command_line {
                lote::domain::spec::CommandLine::Shell(line) => line.clone(),
                lote::domain::spec::CommandLine::Argv(argv) => argv.join(" "),
            },
            if spec.release.is_some() {
                ", released at the end"
            } else {
                ""
            },
            spec.id
        );
    }
    if let Some(d) = &spec.dependencies {
        let _ = writeln!(
            out,
            "  depends:    tasks may depend on others; a failed parent's dependents: {}",
            word(&d.on_failed_parent)
        );
    }
    if let Some(secs) = spec.max_wall_clock_secs {
        let _ = writeln!(out, "  wall clock: at most {secs}s");
    }
    if let Some(reason) = &j.completion_reason {
        let _ = writeln!(out, "  ended:      {reason} ({})", opt(&j.completed_at));
    }
    let _ = writeln!(out, "  created:    {}", opt(&j.created_at));
    out
}

pub(super) fn task(t: &Task, version: u64) -> String {
    let mut out = String::new();
    let Some(spec) = &t.spec else {
        return format!("task (none): {}\n", word(&t.status));
    };
    let _ = writeln!(
        out,
        "task {} of job {} ({}), version {version}",
        spec.id,
        opt(&t.job),
        task_state(t)
    );
    let _ = writeln!(out, "  command:  {}", command(&spec.command_line));
    let _ = writeln!(
        out,
        "  attempts: {} ({} retried of at most {}, {} requeued)",
        t.attempt, t.retry_count, t.max_task_retries, t.requeue_count
    );
    if let Some(p) = &t.placement {
        let _ = writeln!(out, "  node:     {} of pool {}", p.node, p.pool);
    }
    if let Some(r) = &t.last_result {
        let ended = match (&r.failure, r.exit_code, r.signal) {
            (Some((category, why)), _, _) => format!("failed ({}): {why}", word(category)),
            (None, Some(code), _) => format!("exit code {code}"),
            (None, None, Some(signal)) => format!("signal {signal}"),
            (None, None, None) => "ended".into(),
        };
        let _ = writeln!(out, "  result:   {ended}, after {} ms", r.duration_ms);
    }
    for o in &t.outputs {
        let _ = writeln!(
            out,
            "  output:   {} -> {}/{} ({} bytes)",
            o.path, o.container, o.name, o.size
        );
    }
    let _ = writeln!(
        out,
        "  added:    {}; started {}; completed {}",
        opt(&t.added_at),
        opt(&t.started_at),
        opt(&t.completed_at)
    );
    out
}

/// A task's state in words: queued, assigned, running, succeeded, failed
/// with its category, deleted.
pub(super) fn task_state(task: &lote::domain::task::Task) -> String {
    use lote::domain::task::TaskStatus as S;
    match task.status {
        S::Active => "queued".into(),
        S::Completed => match task.last_result.as_ref().and_then(|r| r.failure.as_ref()) {
            None => "succeeded".into(),
            Some((category, _)) => format!("failed: {}", word(category)),
        },
        other => word(&other),
    }
}
