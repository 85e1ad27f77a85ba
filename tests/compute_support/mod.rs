//! Helpers shared by the tests that run real agents (`compute`,
//! `operations`).
#![allow(dead_code)]

pub mod scenario;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lote::api::{Request, Response};
use lote::client::Client;
use lote::domain::job::JobSpec;
use lote::domain::node::{Node, NodeState};
use lote::domain::pool::{NodeProvider, PoolSpec, SchedulingPolicy};
use lote::domain::spec::{CommandLine, StartTask};
use lote::domain::task::{Task, TaskSpec};
use lote::domain::Versioned;
use lote::types::{AccountName, JobId, PoolId, TaskId};

use crate::server_support::*;
#[allow(unused_imports)]
pub use scenario::{nodes_ready, Env};

/// Agent processes, killed when dropped.
pub struct Agents(Vec<Child>);

impl Agents {
    /// The process id of the `i`th agent.
    pub fn pid(&self, i: usize) -> u32 {
        self.0[i].id()
    }

    /// SIGKILLs every agent now (no goodbye, as when a machine dies).
    pub fn kill_all(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn remote_pool(
    client: &Client,
    id: &str,
    slots: u32,
    policy: SchedulingPolicy,
) -> String {
    let spec = PoolSpec {
        provider: NodeProvider::Remote,
        scheduling: policy,
        ..PoolSpec::fixed(
            PoolId::new(id).unwrap(),
            AccountName::new("x").unwrap(),
            0,
            slots,
        )
    };
    create_pool_spec(client, spec).await;
    join_token(client, id).await
}

pub fn start_agents(
    server: &ServerProcess,
    pool: &str,
    token: &str,
    roots: &[&Path],
    slots: u32,
) -> Agents {
    start_agents_with(server, pool, token, roots, slots, &[])
}

/// [`start_agents`] with more `lote agent` flags.
pub fn start_agents_with(
    server: &ServerProcess,
    pool: &str,
    token: &str,
    roots: &[&Path],
    slots: u32,
    extra: &[&str],
) -> Agents {
    Agents(
        roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                Command::new(lote_bin())
                    .args([
                        "agent",
                        "--server",
                        &server.addr,
                        "--pool-account",
                        "acme",
                        "--pool",
                        pool,
                    ])
                    .args(["--join-token", token, "--slots", &slots.to_string()])
                    .args(["--name", &format!("agent-{i}")])
                    .args(extra)
                    .arg("--root")
                    .arg(root)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

pub async fn create_job(client: &Client, id: &str, pool: &str) {
    Env::new(client).job(id).on(pool).await;
}

pub async fn create_job_spec(client: &Client, spec: JobSpec) {
    client
        .call(&Request::CreateJob {
            spec,
            request_id: None,
        })
        .await
        .unwrap();
}

pub async fn list_nodes(client: &Client, pool: &str) -> Vec<Versioned<lote::domain::node::Node>> {
    match client
        .call(&Request::ListNodes {
            pool: PoolId::new(pool).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::Nodes(n) => n,
        other => panic!("{other:?}"),
    }
}

pub async fn join_token(client: &Client, pool: &str) -> String {
    match client
        .call(&Request::ShowJoinToken {
            pool: PoolId::new(pool).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::JoinToken { token, .. } => token,
        other => panic!("{other:?}"),
    }
}

pub async fn add(client: &Client, job: &str, tasks: Vec<TaskSpec>) {
    client
        .call(&Request::AddTasks {
            job: JobId::new(job).unwrap(),
            tasks,
            request_id: None,
        })
        .await
        .unwrap();
}

pub fn shell(id: &str, line: &str) -> TaskSpec {
    TaskSpec::simple(TaskId::new(id).unwrap(), CommandLine::Shell(line.into()))
}

/// Waits until no task of the job is queued or running.
pub async fn wait_job(client: &Client, job: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let j = show_job(client, job).await;
        if j.state.tasks_added > 0 && j.state.unfinished() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} unfinished: {:?}",
            j.state.task_counts
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn task(client: &Client, job: &str, id: &str) -> Versioned<Task> {
    match client
        .call(&Request::ShowTask {
            job: JobId::new(job).unwrap(),
            task: TaskId::new(id).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::Task(t) => t,
        other => panic!("{other:?}"),
    }
}

pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

impl Agents {
    /// The agents' pids, in the order of their roots.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.id()).collect()
    }
}

/// Polls `check` every 100 ms until it returns Some, or panics with
/// `what` and the last value seen after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("{what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A pool of `nodes` × `slots` from `provider`, with a start task when
/// given.
pub async fn create_pool(
    client: &Client,
    id: &str,
    provider: NodeProvider,
    nodes: u32,
    slots: u32,
    start_task: Option<StartTask>,
) {
    let spec = PoolSpec {
        provider,
        start_task,
        ..PoolSpec::fixed(
            PoolId::new(id).unwrap(),
            AccountName::new("x").unwrap(),
            nodes,
            slots,
        )
    };
    create_pool_spec(client, spec).await;
}

pub async fn create_pool_spec(client: &Client, spec: PoolSpec) {
    client
        .call(&Request::CreatePool {
            spec,
            request_id: None,
        })
        .await
        .unwrap();
}

/// A local pool (agents started by the server) of `nodes` × `slots`.
pub async fn local_pool(client: &Client, id: &str, nodes: u32, slots: u32) {
    Env::new(client)
        .pool(id)
        .nodes(nodes)
        .slots(slots)
        .without_waiting()
        .await;
}

/// A start task running a shell line.
pub fn start_task(line: &str, wait_for_success: bool, retry_count_max: u32) -> StartTask {
    StartTask {
        command_line: CommandLine::Shell(line.into()),
        env: vec![],
        resource_files: vec![],
        wait_for_success,
        retry_count_max,
    }
}

/// Waits until the pool has exactly `count` nodes, all idle or running.
pub async fn nodes_up(client: &Client, pool: &str, count: usize) -> Vec<Versioned<Node>> {
    eventually(Duration::from_secs(60), "nodes up", || async {
        let n = list_nodes(client, pool).await;
        let up = n
            .iter()
            .filter(|n| matches!(n.state.state, NodeState::Idle | NodeState::Running))
            .count();
        if n.len() == count && up == count {
            Ok(n)
        } else {
            Err(format!(
                "{:?}",
                n.iter()
                    .map(|n| (&n.state.id, n.state.state))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await
}

/// Waits until a file holds a pid (written by a task) and returns it.
pub async fn pid_in(path: &Path) -> String {
    eventually(Duration::from_secs(60), "pid file", || async {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => Err(format!("{} not written", path.display())),
        }
    })
    .await
}

/// Runs the `lote` CLI as an account of `server`.
pub fn cli(server: &ServerProcess, key: &str, args: &[&str]) -> std::process::Output {
    cli_command(server, key, args).output().unwrap()
}

/// The `lote` CLI as an account of `server`, ready to run.
pub fn cli_command(server: &ServerProcess, key: &str, args: &[&str]) -> Command {
    let mut command = Command::new(lote_bin());
    command
        .args(args)
        .env("LOTE_SERVER", &server.addr)
        .env("LOTE_ACCOUNT", "acme")
        .env("LOTE_KEY", key)
        .env("XDG_CONFIG_HOME", server.data_dir.join("no-profiles"))
        .env_remove("LOTE_ADMIN_KEY")
        .env_remove("LOTE_ADMIN_KEY_FILE")
        .env_remove("LOTE_PROFILE")
        .env_remove("LOTE_OUTPUT");
    command
}

/// Stops the server and checks that `lote replay` rebuilds its whole log
/// without a mismatch.
pub fn stop_and_replay(server: ServerProcess) {
    let mut server = server;
    let _data = server.take_temp();
    assert!(server.terminate().success());
    // Before the directory (and the agents' pid files in it) goes.
    stop_local_agents(&server.data_dir);
    let out = Command::new(lote_bin())
        .args(["replay", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no mismatch"), "{text}");
}

/// Stops the server, checks that `lote replay` finds no mismatch, and
/// returns each entity's history as `lote audit` prints it.
pub fn stop_and_audit(server: ServerProcess, entities: &[&str]) -> Vec<String> {
    let mut server = server;
    let _data = server.take_temp();
    assert!(server.terminate().success());
    // Before the directory (and the agents' pid files in it) goes.
    stop_local_agents(&server.data_dir);
    let run = |args: &[&str]| {
        let out = Command::new(lote_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert!(run(&["replay"]).contains("no mismatch"));
    entities.iter().map(|e| run(&["audit", e])).collect()
}
