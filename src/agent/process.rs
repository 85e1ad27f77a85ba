//! A task's process: spawned in its own group, waited for with a time
//! limit, its whole group killed, its end classified.

use super::*;

/// A task's running process, started by [`launch`] or, where that defers,
/// by tokio's `Command`.
pub(super) enum Proc {
    Launched(launch::Launched),
    /// The guard marks it as the agent's own while it is kept.
    Command {
        child: tokio::process::Child,
        _owned: proc_tree::Owned,
    },
}

impl Proc {
    /// Its pid until it has been waited for (then it may be reused).
    pub(super) fn id(&self) -> Option<u32> {
        match self {
            Proc::Launched(p) => Some(p.id()).filter(|_| !p.ended()),
            Proc::Command { child, .. } => child.id(),
        }
    }

    pub(super) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Launched(p) => p.wait().await,
            Proc::Command { child, .. } => child.wait().await,
        }
    }
}

/// What one process of a task or start task is started with.
pub(super) struct Run<'a> {
    pub command_line: &'a CommandLine,
    /// Its job's common variables, then its own (which win).
    pub job: &'a [crate::domain::EnvVar],
    pub own: &'a [crate::domain::EnvVar],
    /// The attempt's variables.
    pub vars: &'a [(String, String)],
    /// The attempt's directory (its output files go there) and working
    /// directory.
    pub dir: &'a Path,
    pub wd: &'a Path,
    pub group: Option<&'a cgroup::Lease>,
    /// Who it runs as; None: as the agent.
    pub user: Option<super::user::TaskUser>,
}

/// Starts a command in `wd` with its output beside it, in a process group
/// of its own, with the node's `LOTE_*` variables, `vars` and `own`,
/// marked as the agent's own while it is kept.
pub(super) fn spawn(env: &TaskEnv, run: Run<'_>) -> Result<Proc, String> {
    let Run {
        command_line,
        job,
        own,
        vars,
        dir,
        wd,
        group,
        user,
    } = run;
    let cgroup_fds = group.map(|g| g.join_fds()).unwrap_or_default();
    // Without a group, the memory limit falls back to an address-space
    // rlimit of the first process (see `cgroup`).
    let address_space_max = group.is_none().then(|| env.limits().memory_bytes).flatten();
    let open = |name: &str| {
        std::fs::File::create(dir.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
    };
    let (program, args): (&OsStr, Vec<&OsStr>) = match command_line {
        CommandLine::Shell(line) => ("/bin/sh".as_ref(), vec!["-c".as_ref(), line.as_ref()]),
        CommandLine::Argv(argv) => (
            argv[0].as_ref(),
            argv[1..].iter().map(|a| a.as_ref()).collect(),
        ),
    };
    let fixed: [(&OsStr, &OsStr); 9] = [
        ("LOTE_ACCOUNT".as_ref(), env.cred.account.as_str().as_ref()),
        ("LOTE_POOL_ID".as_ref(), env.cred.pool.as_str().as_ref()),
        ("LOTE_NODE_ID".as_ref(), env.cred.node.as_str().as_ref()),
        ("LOTE_TASK_DIR".as_ref(), dir.as_os_str()),
        ("LOTE_TASK_WORKING_DIR".as_ref(), wd.as_os_str()),
        ("LOTE_NODE_ROOT_DIR".as_ref(), env.root.as_os_str()),
        ("LOTE_NODE_SHARED_DIR".as_ref(), env.shared.as_os_str()),
        ("LOTE_NODE_STARTUP_DIR".as_ref(), env.startup.as_os_str()),
        ("LOTE_SECRETS_DIR".as_ref(), env.secrets.as_os_str()),
    ];
    // Over the base environment (never the agent's), later entries win:
    // HOME (the working directory unless the task sets its own), the
    // job's common variables, the task's own, then the attempt's, then
    // the node's.
    let home: [(&OsStr, &OsStr); 1] = [("HOME".as_ref(), wd.as_os_str())];
    let vars: Vec<(&OsStr, &OsStr)> = home
        .into_iter()
        .chain(job.iter().map(|v| (v.name.as_ref(), v.value.as_ref())))
        .chain(own.iter().map(|v| (v.name.as_ref(), v.value.as_ref())))
        .chain(vars.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
        .chain(fixed)
        .collect();
    let cannot = |e: std::io::Error| match command_line {
        CommandLine::Argv(argv) => format!("cannot start {:?}: {e}", argv[0]),
        CommandLine::Shell(_) => format!("cannot start /bin/sh: {e}"),
    };
    let stdin = dev_null_file();
    if let Some(stdin) = stdin {
        let (stdout, stderr) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        let spec = launch::Launch {
            program,
            args: &args,
            dir: wd,
            stdin,
            stdout: &stdout,
            stderr: &stderr,
            env: &vars,
            user: user.map(|u| (u.uid, u.gid, u.processes_max)),
            cgroup: &cgroup_fds,
            address_space_max,
        };
        if let Some(started) = launch::launch(&spec) {
            // The child creates its output files; when the launch fails,
            // creating them here tells whether they were the cause.
            return started.map(Proc::Launched).map_err(|e| {
                match open("stdout.txt").and_then(|_| open("stderr.txt")) {
                    Err(why) => why,
                    Ok(_) => cannot(e),
                }
            });
        }
    }
    let (stdout, stderr) = (open("stdout.txt")?, open("stderr.txt")?);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&args)
        .current_dir(wd)
        .stdin(
            stdin
                .and_then(|f| f.try_clone().ok())
                .map_or_else(std::process::Stdio::null, std::process::Stdio::from),
        )
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a timeout or a kill takes every child.
        .process_group(0)
        .kill_on_drop(false)
        .env_clear()
        .envs(launch::BASE_ENV)
        .envs(vars);
    if let Some(user) = user {
        // As root, std also drops every supplementary group.
        cmd.uid(user.uid).gid(user.gid);
    }
    let processes_max = user.map(|u| u.processes_max as libc::rlim_t);
    // SAFETY: write and setrlimit are async-signal-safe and touch only the
    // child's own membership and limits; the descriptors stay open (the
    // lease outlives the spawn).
    unsafe {
        cmd.pre_exec(move || {
            for fd in &cgroup_fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let limits = [
                (
                    libc::RLIMIT_AS,
                    address_space_max.map(|b| b as libc::rlim_t),
                ),
                (libc::RLIMIT_NPROC, processes_max),
            ];
            for (resource, max) in limits {
                let Some(max) = max else { continue };
                let limit = libc::rlimit {
                    rlim_cur: max,
                    rlim_max: max,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    proc_tree::spawn_owned(&mut cmd)
        .map(|(child, _owned)| Proc::Command { child, _owned })
        .map_err(cannot)
}

/// /dev/null for a task's stdin, opened once: posix_spawn duplicates it
/// into the child, `Command` gets a copy.
pub(super) fn dev_null_file() -> Option<&'static std::fs::File> {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
}

pub(super) fn kill_group(child: &Proc) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads (it was started with process_group(0)).
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

pub(super) async fn wait(
    child: &mut Proc,
    limit: Option<Duration>,
    started: Instant,
) -> TaskResult {
    let status = match limit {
        Some(limit) => {
            match tokio::time::timeout(limit.saturating_sub(started.elapsed()), child.wait()).await
            {
                Ok(status) => status,
                Err(_) => {
                    kill_group(child);
                    let _ = child.wait().await;
                    return TaskResult {
                        exit_code: None,
                        signal: Some(libc::SIGKILL),
                        duration_ms: started.elapsed().as_millis() as u64,
                        failure: Some((
                            FailureCategory::Timeout,
                            format!(
                                "ran past its limit of {}s; killed with its process group",
                                limit.as_secs()
                            ),
                        )),
                    };
                }
            }
        }
        None => child.wait().await,
    };
    // What it left behind is the caller's: a task's attempt is swept by
    // its `proc_tree::Tracked`. (The process has no pid here any more: a
    // group kill by it could reach a stranger that took the pid.)
    classify(status, started)
}

/// What an attempt's exit status means.
pub(super) fn classify(
    status: std::io::Result<std::process::ExitStatus>,
    started: Instant,
) -> TaskResult {
    let duration_ms = started.elapsed().as_millis() as u64;
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.success() => TaskResult {
            exit_code: Some(0),
            signal: None,
            duration_ms,
            failure: None,
        },
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => TaskResult {
                exit_code: Some(code),
                signal: None,
                duration_ms,
                failure: Some((FailureCategory::NonZeroExit, format!("exit code {code}"))),
            },
            (None, signal) => TaskResult {
                exit_code: None,
                signal,
                duration_ms,
                failure: Some((
                    FailureCategory::Signal,
                    format!("killed by signal {}", signal.unwrap_or(0)),
                )),
            },
        },
        Err(e) => TaskResult {
            exit_code: None,
            signal: None,
            duration_ms,
            failure: Some((
                FailureCategory::LaunchFailure,
                format!("lost the process: {e}"),
            )),
        },
    }
}
