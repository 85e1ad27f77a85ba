//! The pool's start task: run when a node registers (and after a reboot),
//! retried as the pool says, reported to the server.

use super::*;

/// Runs the pool's start task (with its retries) and reports each try; the
/// server keeps the node out of placement unless it succeeds.
pub(super) async fn run_start_task(
    client: &Client,
    env: &TaskEnv,
    start_task: &crate::domain::spec::StartTask,
) -> Result<(), AgentError> {
    for attempt in 0..=start_task.retry_count_max {
        report_until_recorded(client, &Request::AgentStartTaskBegin).await?;
        let result = run_start_task_once(env, start_task, attempt).await;
        let success = result.succeeded();
        let report = Request::AgentStartTaskFinished {
            success,
            exit_code: result.exit_code,
            message: result
                .failure
                .map(|(_, why)| why)
                .unwrap_or_else(|| "succeeded".into()),
        };
        report_until_recorded(client, &report).await?;
        if success {
            return Ok(());
        }
    }
    tracing::warn!("the start task failed; this node gets no tasks");
    Ok(())
}

pub(super) async fn run_start_task_once(
    env: &TaskEnv,
    start_task: &crate::domain::spec::StartTask,
    attempt: u32,
) -> TaskResult {
    let mut vars = vec![(
        "LOTE_START_TASK_ATTEMPT".to_string(),
        (attempt + 1).to_string(),
    )];
    // Secrets the pool marked for it, under their own names.
    vars.extend(super::secrets::start_task_vars());
    let task = NodeTask {
        dir: env.startup.clone(),
        command_line: &start_task.command_line,
        job: &[],
        own: &start_task.env,
        resource_files: &start_task.resource_files,
        vars,
        limit: None,
        mode: 0o700,
    };
    run_node_task(env, task).await
}

/// A task of the node rather than of a job's queue: the start task, a
/// job's preparation or release. It runs as the pool's user in a
/// directory of its own (`DIR/wd`), with the pool's packages.
pub(super) struct NodeTask<'a> {
    pub dir: PathBuf,
    pub command_line: &'a crate::domain::spec::CommandLine,
    /// Its job's common variables (none for the start task).
    pub job: &'a [crate::domain::EnvVar],
    pub own: &'a [crate::domain::EnvVar],
    pub resource_files: &'a [crate::domain::spec::ResourceFile],
    pub vars: Vec<(String, String)>,
    pub limit: Option<Duration>,
    /// The directory's mode: 0o750 lets the pool's other users (its
    /// tasks) read what a preparation leaves.
    pub mode: u32,
}

pub(super) async fn run_node_task(env: &TaskEnv, task: NodeTask<'_>) -> TaskResult {
    let dir = task.dir;
    let wd = dir.join("wd");
    let started = Instant::now();
    if let Err(e) = std::fs::create_dir_all(&wd) {
        return launch_failure(format!("cannot create {}: {e}", wd.display()));
    }
    let packages = env.pool_packages();
    let staged = match env.stager.packages(&packages).await {
        Ok(apps) => env
            .stager
            .fetch_resources(task.resource_files, &wd)
            .await
            .map(|_| apps),
        Err(why) => Err(why),
    };
    let apps = match staged {
        Ok(apps) => apps,
        Err(why) => return resource_failure(why),
    };
    let user = env.run_as(None);
    let handed = super::user::give(&dir, user, task.mode)
        .and_then(|_| super::user::give_tree(&wd, user, true));
    if let Err(e) = handed {
        return launch_failure(format!("cannot hand {} to its task: {e}", dir.display()));
    }
    // Its own group, not emptied when it ends: a start task may leave a
    // service running for the node's tasks. The agent's stop, a reboot or
    // the watchdog kills what is left.
    let lease = match env.attempt_group() {
        Ok(lease) => lease,
        Err(failed) => return failed,
    };
    let spawned = {
        let mut vars = task.vars;
        vars.extend(apps);
        let run = Run {
            command_line: task.command_line,
            job: task.job,
            own: task.own,
            vars: &vars,
            dir: &dir,
            wd: &wd,
            group: lease.as_ref(),
            user,
        };
        spawn(env, run)
    };
    match spawned {
        Ok(mut child) => {
            let result = wait(&mut child, task.limit, started).await;
            out_of_memory(result, lease.as_ref(), env)
        }
        Err(why) => launch_failure(why),
    }
}
