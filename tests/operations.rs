//! Operations on running pools, nodes, jobs and tasks, end to end with the
//! real server and agent processes: resize, node removal with each
//! deallocation option, reboot, job terminate and wall-clock limit, task
//! output, bulk submission, retention, detached children, start tasks
//! that are not waited for.

mod compute_support;
mod server_support;

use std::time::{Duration, Instant};

use compute_support::*;
use lote::api::{ApiError, Request, Response};
use lote::client::{Client, ClientError};
use lote::domain::job::{JobSpec, JobStatus};
use lote::domain::node::NodeState;
use lote::domain::pool::{Deallocation, NodeProvider, ResizeState};
use lote::domain::task::{FailureCategory, TaskStatus};
use lote::types::{AccountName, JobId, NodeId, PoolId};
use server_support::*;

async fn resize(client: &Client, pool: &str, nodes: u32, deallocation: Deallocation) {
    client
        .call(&Request::ResizePool {
            pool: PoolId::new(pool).unwrap(),
            target_nodes: nodes,
            deallocation,
        })
        .await
        .unwrap();
}

async fn pool_state(client: &Client, pool: &str) -> lote::domain::pool::Pool {
    match client
        .call(&Request::ShowPool {
            pool: PoolId::new(pool).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::Pool(p) => p.state,
        other => panic!("{other:?}"),
    }
}

async fn steady(client: &Client, pool: &str) {
    eventually(Duration::from_secs(60), "pool steady", || async {
        let p = pool_state(client, pool).await;
        if p.resize == ResizeState::Steady {
            Ok(())
        } else {
            Err(format!("{:?}", p.resize))
        }
    })
    .await
}

async fn node_of(client: &Client, job: &str, task_id: &str) -> NodeId {
    task(client, job, task_id)
        .await
        .state
        .placement
        .expect("placed")
        .node
}

async fn remove_node(client: &Client, pool: &str, node: &NodeId, deallocation: Deallocation) {
    client
        .call(&Request::RemoveNode {
            pool: PoolId::new(pool).unwrap(),
            node: node.clone(),
            deallocation,
        })
        .await
        .unwrap();
}

async fn node_gone(client: &Client, pool: &str, node: &NodeId) {
    eventually(Duration::from_secs(30), "node removed", || async {
        let nodes = list_nodes(client, pool).await;
        match nodes.iter().find(|n| n.state.id.as_ref() == Some(node)) {
            None => Ok(()),
            Some(n) => Err(format!("{node} is {:?}", n.state.state)),
        }
    })
    .await
}

/// A shell task that records its pid under `dir` (as TASK.ATTEMPT.pid)
/// and then sleeps for good.
fn sleeper(dir: &std::path::Path, id: &str) -> lote::domain::task::TaskSpec {
    shell(
        id,
        &format!(
            "echo $$ > {}/$LOTE_TASK_ID.$LOTE_TASK_ATTEMPT.pid; exec sleep 300",
            dir.display()
        ),
    )
}

/// A server with account acme, a local pool of `nodes` x `slots` whose
/// nodes are up, a job `j` on it, and a directory for the tasks' marks.
async fn pool_with_job(
    pool: &str,
    nodes: u32,
    slots: u32,
) -> (ServerProcess, Client, String, tempfile::TempDir) {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool(pool).nodes(nodes).slots(slots).await;
    env.job("j").on(pool).await;
    (server, client, key, open_tempdir())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_pool_grows_and_shrinks_and_terminating_a_job_kills_its_tasks() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    Env::new(&client).pool("elastic").nodes(1).slots(1).await;
    steady(&client, "elastic").await;

    resize(&client, "elastic", 3, Deallocation::Requeue).await;
    let nodes = nodes_up(&client, "elastic", 3).await;
    steady(&client, "elastic").await;
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n.state.id.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["node-0", "node-1", "node-2"]);
    // Each registered with its machine's size and the address it reaches
    // the server from.
    for n in &nodes {
        let agent = n.state.agent.as_ref().unwrap();
        assert_eq!(agent.address, "127.0.0.1");
        assert!(agent.memory_mib > 0 && agent.cores > 0, "{agent:?}");
    }
    let pool_dir = server.data_dir.join("nodes/acme/elastic");
    let agent_pid = |n: &str| std::fs::read_to_string(pool_dir.join(n).join("agent.pid")).unwrap();
    let agents: Vec<String> = ids.iter().map(|n| agent_pid(n)).collect();

    // One sleeper per node.
    create_job(&client, "j", "elastic").await;
    let marks = open_tempdir();
    add(
        &client,
        "j",
        (0..3)
            .map(|i| sleeper(marks.path(), &format!("s{i}")))
            .collect(),
    )
    .await;
    let mut pids = Vec::new();
    for i in 0..3 {
        pids.push(pid_in(&marks.path().join(format!("s{i}.1.pid"))).await);
    }

    // Shrink to one node, requeueing: the two newest nodes go, with their
    // agents, their tasks' processes and their directories.
    resize(&client, "elastic", 1, Deallocation::Requeue).await;
    let left = nodes_up(&client, "elastic", 1).await;
    assert_eq!(left[0].state.id.as_ref().unwrap().as_str(), "node-0");
    steady(&client, "elastic").await;
    for (i, n) in ids.iter().enumerate().skip(1) {
        assert!(!pool_dir.join(n).exists(), "{n}'s directory is still there");
        assert!(!alive(&agents[i]), "{n}'s agent survived");
    }
    let mut queued = 0;
    for (i, pid) in pids.iter().enumerate() {
        let t = task(&client, "j", &format!("s{i}")).await.state;
        if t.status == TaskStatus::Active {
            queued += 1;
            assert_eq!((t.requeue_count, t.retry_count, t.attempt), (1, 0, 1));
            assert!(!alive(pid), "requeued s{i} still runs");
        } else {
            assert_eq!(t.status, TaskStatus::Running);
            assert!(alive(pid));
        }
    }
    assert_eq!(queued, 2, "two tasks lost their node");

    // Terminate: the running one is killed, the queued ones cancelled,
    // and the job completes.
    client
        .call(&Request::TerminateJob {
            job: JobId::new("j").unwrap(),
            reason: "enough".into(),
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "job completed", || async {
        let j = show_job(&client, "j").await;
        if j.state.status == JobStatus::Completed {
            Ok(())
        } else {
            Err(format!("{:?} {:?}", j.state.status, j.state.task_counts))
        }
    })
    .await;
    for (i, pid) in pids.iter().enumerate() {
        let t = task(&client, "j", &format!("s{i}")).await.state;
        let failure = t.last_result.unwrap().failure.unwrap();
        assert_eq!(failure.0, FailureCategory::Terminated, "s{i}");
        assert!(!alive(pid), "s{i} survived its job");
    }
    assert!(alive(&agents[0]), "the remaining node's agent died");
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_requeues_terminates_or_waits_for_its_tasks() {
    let (server, client, key, marks) = pool_with_job("ops", 3, 1).await;
    let done = marks.path().join("c.done");
    add(
        &client,
        "j",
        vec![
            sleeper(marks.path(), "a"),
            sleeper(marks.path(), "b"),
            shell(
                "c",
                &format!(
                    "echo $$ > {}/c.1.pid; sleep 2; echo done > {}",
                    marks.path().display(),
                    done.display()
                ),
            ),
        ],
    )
    .await;
    let pid_a = pid_in(&marks.path().join("a.1.pid")).await;
    let pid_b = pid_in(&marks.path().join("b.1.pid")).await;
    pid_in(&marks.path().join("c.1.pid")).await;
    let (node_a, node_b, node_c) = (
        node_of(&client, "j", "a").await,
        node_of(&client, "j", "b").await,
        node_of(&client, "j", "c").await,
    );

    // terminate: killed and failed.
    remove_node(&client, "ops", &node_a, Deallocation::Terminate).await;
    node_gone(&client, "ops", &node_a).await;
    let a = task(&client, "j", "a").await.state;
    assert_eq!(a.status, TaskStatus::Completed);
    assert_eq!(
        a.last_result.unwrap().failure.unwrap().0,
        FailureCategory::Terminated
    );
    assert!(!alive(&pid_a), "a's process survived its node");

    // taskcompletion, through the CLI: the node leaves only after c ends,
    // and c ends by itself, successfully.
    let out = cli(
        &server,
        &key,
        &[
            "node",
            "remove",
            "ops",
            node_c.as_str(),
            "--deallocation",
            "taskcompletion",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leaving = list_nodes(&client, "ops").await;
    let c_node = leaving
        .iter()
        .find(|n| n.state.id.as_ref() == Some(&node_c))
        .map(|n| n.state.state);
    assert!(
        done.exists() || c_node == Some(NodeState::LeavingPool),
        "{c_node:?}"
    );
    node_gone(&client, "ops", &node_c).await;
    assert!(done.exists(), "the node left before its task ended");
    assert!(task(&client, "j", "c")
        .await
        .state
        .last_result
        .unwrap()
        .succeeded());

    // requeue: killed, back in the queue, no retry used.
    remove_node(&client, "ops", &node_b, Deallocation::Requeue).await;
    node_gone(&client, "ops", &node_b).await;
    let b = task(&client, "j", "b").await.state;
    assert_eq!(b.status, TaskStatus::Active);
    assert_eq!((b.requeue_count, b.retry_count), (1, 0));
    assert!(!alive(&pid_b), "b's process survived its node");

    // Each removal lowered the target, so nothing replaced the nodes.
    steady(&client, "ops").await;
    assert_eq!(pool_state(&client, "ops").await.target_nodes, 0);
    assert!(list_nodes(&client, "ops").await.is_empty());
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebooted_node_requeues_its_task_reruns_its_start_task_and_carries_on() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let boot = start_task("echo boot >> \"$LOTE_NODE_SHARED_DIR/boots\"", true, 0);
    create_pool(&client, "rb", NodeProvider::Local, 1, 1, Some(boot)).await;
    nodes_up(&client, "rb", 1).await;
    create_job(&client, "j", "rb").await;
    let marks = open_tempdir();
    add(
        &client,
        "j",
        vec![shell(
            "t",
            &format!(
                "if [ \"$LOTE_TASK_ATTEMPT\" = 1 ]; then echo $$ > {dir}/t.pid; exec sleep 300; fi; echo again > {dir}/t.again",
                dir = marks.path().display()
            ),
        )],
    )
    .await;
    let first = pid_in(&marks.path().join("t.pid")).await;

    let out = cli(&server, &key, &["node", "reboot", "rb", "node-0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_job(&client, "j", Duration::from_secs(60)).await;
    let t = task(&client, "j", "t").await.state;
    assert!(t.last_result.unwrap().succeeded());
    assert_eq!((t.attempt, t.requeue_count, t.retry_count), (2, 1, 0));
    assert!(!alive(&first), "the first attempt survived the reboot");
    assert!(marks.path().join("t.again").exists());
    let boots =
        std::fs::read_to_string(server.data_dir.join("nodes/acme/rb/node-0/shared/boots")).unwrap();
    assert_eq!(boots.lines().count(), 2, "the start task ran {boots:?}");
    nodes_up(&client, "rb", 1).await;

    // A reimage is a reboot with the node's directories wiped: the task's
    // files and the old boots are gone, the credential stays, the start
    // task runs once on the fresh node.
    let node_dir = server.data_dir.join("nodes/acme/rb/node-0");
    assert!(node_dir.join("tasks/j/t").exists());
    // The pool's new start task is what the fresh node runs.
    let out = cli(
        &server,
        &key,
        &[
            "pool",
            "update",
            "rb",
            "--start-task",
            "echo fresh >> \"$LOTE_NODE_SHARED_DIR/boots\"",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, &key, &["node", "reimage", "rb", "node-0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let boots = eventually(Duration::from_secs(60), "a fresh boot", || async {
        let boots = std::fs::read_to_string(node_dir.join("shared/boots")).unwrap_or_default();
        if boots.lines().count() == 1 {
            Ok(boots)
        } else {
            Err(boots)
        }
    })
    .await;
    assert_eq!(boots, "fresh\n");
    nodes_up(&client, "rb", 1).await;
    assert!(!node_dir.join("tasks/j").exists(), "task files survived");
    assert!(
        node_dir.join("node.toml").exists(),
        "the credential is gone"
    );
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_output_is_read_from_the_node_and_add_many_submits_in_idempotent_batches() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("out").nodes(1).slots(2).without_waiting().await;
    env.job("j").on("out").await;
    let dir = open_tempdir();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &file,
        concat!(
            "// the talkative one first\n",
            r#"{"id": "talk", "command": "for i in 1 2 3; do echo line $i; sleep 0.4; done; echo oops >&2"}"#,
            "\n\n",
            r#"{"id": "argv", "argv": ["/bin/echo", "from", "argv"]}"#,
            "\n",
            r#"{"id": "env", "command": "echo $GREETING", "env": {"GREETING": "hi"}}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = cli(
        &server,
        &key,
        &[
            "task",
            "add-many",
            "j",
            "--from-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Follow the talkative task from while it runs to its end.
    eventually(Duration::from_secs(60), "talk running", || async {
        let t = task(&client, "j", "talk").await.state;
        match t.status {
            TaskStatus::Running => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let out = cli(&server, &key, &["task", "output", "j", "talk", "--follow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\n"
    );
    let out = cli(&server, &key, &["task", "output", "j", "talk", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oops\n");
    wait_job(&client, "j", Duration::from_secs(60)).await;
    let out = cli(
        &server,
        &key,
        &["task", "output", "j", "argv", "--output", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"], "from argv\n");
    assert_eq!(v["attempt"], 1);
    let out = cli(&server, &key, &["task", "output", "j", "env"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = cli(
        &server,
        &key,
        &["task", "output", "j", "talk", "--attempt", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no attempt 2"));

    // 1,234 tasks on a pool with no node: three batches, and running the
    // same command again adds nothing twice.
    create_pool(&client, "idle", NodeProvider::Remote, 0, 1, None).await;
    create_job(&client, "bulk", "idle").await;
    let big = dir.path().join("big.jsonl");
    let lines: String = (0..1234)
        .map(|i| format!("{{\"id\": \"n{i}\", \"command\": \"true\"}}\n"))
        .collect();
    std::fs::write(&big, lines).unwrap();
    for _ in 0..2 {
        let out = cli(
            &server,
            &key,
            &[
                "task",
                "add-many",
                "bulk",
                "--from-file",
                big.to_str().unwrap(),
                "--output",
                "json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(show_job(&client, "bulk").await.state.tasks_added, 1234);

    // A bad line adds nothing and says where it is.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"x1\", \"command\": \"true\"}\n{\"id\": \"x2\", \"command\": \"true\"}\n{\"id\": \"x3\"}\n",
    )
    .unwrap();
    let out = cli(
        &server,
        &key,
        &[
            "task",
            "add-many",
            "bulk",
            "--from-file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("command"), "{err}");
    assert_eq!(show_job(&client, "bulk").await.state.tasks_added, 1234);

    // A queued task has no output yet, and says so.
    let out = cli(&server, &key, &["task", "output", "bulk", "n7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not run yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_limits_retention_and_detached_children() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "w", 1, 2).await;
    let marks = open_tempdir();

    // A job past its wall-clock time is terminated with its tasks.
    let spec = JobSpec {
        max_wall_clock_secs: Some(2),
        ..JobSpec::on_pool(
            JobId::new("timed").unwrap(),
            AccountName::new("x").unwrap(),
            PoolId::new("w").unwrap(),
        )
    };
    let created = Instant::now();
    create_job_spec(&client, spec).await;
    add(&client, "timed", vec![sleeper(marks.path(), "long")]).await;
    let long = pid_in(&marks.path().join("long.1.pid")).await;
    eventually(Duration::from_secs(30), "job past its time", || async {
        let j = show_job(&client, "timed").await.state;
        if j.status == JobStatus::Completed {
            Ok(())
        } else {
            Err(format!("{:?}", j.status))
        }
    })
    .await;
    assert!(created.elapsed() >= Duration::from_secs(2));
    let t = task(&client, "timed", "long").await.state;
    let (category, why) = t.last_result.unwrap().failure.unwrap();
    assert_eq!(category, FailureCategory::Terminated);
    assert!(why.contains("wall-clock"), "{why}");
    assert!(!alive(&long));

    // A task past its own limit is killed with a child that left its
    // process group with setsid.
    create_job(&client, "j", "w").await;
    let detached = marks.path().join("detached.pid");
    let mut escapee = shell(
        "escapee",
        &format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 300",
            detached.display()
        ),
    );
    escapee.constraints.max_wall_clock_secs = Some(1);
    // Kept for one second after it completes.
    let mut brief = shell("brief", "echo kept");
    brief.constraints.retention_secs = Some(1);
    add(&client, "j", vec![escapee, brief]).await;
    let escaped = pid_in(&detached).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    let t = task(&client, "j", "escapee").await.state;
    assert_eq!(
        t.last_result.unwrap().failure.unwrap().0,
        FailureCategory::Timeout
    );
    eventually(Duration::from_secs(5), "detached child killed", || async {
        if alive(&escaped) {
            Err(format!("{escaped} alive"))
        } else {
            Ok(())
        }
    })
    .await;
    let brief_dir = server.data_dir.join("nodes/acme/w/node-0/tasks/j/brief/1");
    eventually(Duration::from_secs(10), "retention", || async {
        if brief_dir.exists() {
            Err(format!("{} still there", brief_dir.display()))
        } else {
            Ok(())
        }
    })
    .await;
    let out = cli(&server, &key, &["task", "output", "j", "brief"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retention"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_task_not_waited_for_runs_beside_the_work() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let slow = start_task(
        "sleep 8; echo done > \"$LOTE_NODE_SHARED_DIR/started\"",
        false,
        0,
    );
    create_pool(&client, "nw", NodeProvider::Local, 1, 1, Some(slow)).await;
    create_job(&client, "j", "nw").await;
    add(
        &client,
        "j",
        vec![shell(
            "early",
            "test ! -e \"$LOTE_NODE_SHARED_DIR/started\"",
        )],
    )
    .await;
    wait_job(&client, "j", Duration::from_secs(60)).await;
    assert!(
        task(&client, "j", "early")
            .await
            .state
            .last_result
            .unwrap()
            .succeeded(),
        "the task waited for the start task"
    );
    let result = server
        .data_dir
        .join("nodes/acme/nw/node-0/starttask/result.txt");
    let text = eventually(Duration::from_secs(30), "start task result", || async {
        std::fs::read_to_string(&result).map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(text, "succeeded\n");
}

/// A read of output from a node whose agent is gone fails within the
/// timeout instead of hanging, and names the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_output_from_a_silent_node_fails_clearly() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(
        &client,
        "far",
        1,
        lote::domain::pool::SchedulingPolicy::Pack,
    )
    .await;
    create_job(&client, "j", "far").await;
    let root = open_tempdir();
    let mut agents = start_agents(&server, "far", &token, &[root.path()], 1);
    add(&client, "j", vec![shell("t", "echo hello")]).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    let Response::TaskOutput {
        chunk, completed, ..
    } = client
        .call(&Request::ReadTaskOutput {
            job: JobId::new("j").unwrap(),
            task: lote::types::TaskId::new("t").unwrap(),
            attempt: 0,
            stream: lote::api::OutputStream::Stdout,
            offset: 0,
            max_bytes: 3,
        })
        .await
        .unwrap()
    else {
        panic!("output expected")
    };
    assert_eq!(
        (chunk.data.as_slice(), chunk.size, completed),
        (&b"hel"[..], 6, true)
    );
    // The agent is gone (SIGKILL: no goodbye).
    agents.kill_all();
    let started = Instant::now();
    let err = client
        .call(&Request::ReadTaskOutput {
            job: JobId::new("j").unwrap(),
            task: lote::types::TaskId::new("t").unwrap(),
            attempt: 0,
            stream: lote::api::OutputStream::Stdout,
            offset: 0,
            max_bytes: 3,
        })
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    let ClientError::Api(ApiError { message, .. }) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("did not answer"), "{message}");
}

/// Work prefetched onto a node behind a long task moves to a node that
/// goes idle: short tasks never wait for the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_waiting_behind_a_long_one_move_to_an_idle_node() {
    let (server, client, _, marks) = pool_with_job("pf", 2, 1).await;
    let mut tasks = vec![sleeper(marks.path(), "a-long")];
    // Enough short ones that the queue is long and work is prefetched.
    tasks.extend((0..300).map(|i| shell(&format!("short-{i:03}"), "true")));
    add(&client, "j", tasks).await;
    let long = pid_in(&marks.path().join("a-long.1.pid")).await;
    eventually(Duration::from_secs(120), "short tasks done", || async {
        let j = show_job(&client, "j").await.state;
        if j.unfinished() == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", j.task_counts))
        }
    })
    .await;
    assert!(alive(&long), "the long task ended first");
    let t = task(&client, "j", "a-long").await.state;
    assert_eq!(t.status, TaskStatus::Running);
    stop_and_replay(server);
}

/// A disabled node whose running task ends reports its load; that must
/// not make it schedulable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_node_gets_no_work_after_its_task_ends() {
    let (_server, client, _, marks) = pool_with_job("dn", 2, 1).await;
    let done = marks.path().join("first.done");
    add(
        &client,
        "j",
        vec![shell(
            "first",
            &format!(
                "echo $$ > {}/first.1.pid; sleep 1; touch {}",
                marks.path().display(),
                done.display()
            ),
        )],
    )
    .await;
    pid_in(&marks.path().join("first.1.pid")).await;
    let busy = node_of(&client, "j", "first").await;
    client
        .call(&Request::DisableNode {
            pool: PoolId::new("dn").unwrap(),
            node: busy.clone(),
        })
        .await
        .unwrap();
    wait_job(&client, "j", Duration::from_secs(30)).await;
    // Its agent has reported the task gone (a load change) by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    add(
        &client,
        "j",
        (0..20)
            .map(|i| shell(&format!("later-{i}"), "true"))
            .collect(),
    )
    .await;
    wait_job(&client, "j", Duration::from_secs(60)).await;
    for i in 0..20 {
        let node = node_of(&client, "j", &format!("later-{i}")).await;
        assert_ne!(node, busy, "later-{i} ran on the disabled node");
    }
}

/// Deleting a local pool at once after creating it, while its nodes are
/// still being started, leaves no agent running and no node directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_deleted_while_its_nodes_start_leaves_nothing_behind() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    local_pool(&client, "brief", 3, 1).await;
    client
        .call(&Request::DeletePool {
            pool: PoolId::new("brief").unwrap(),
            force: false,
        })
        .await
        .unwrap();
    let pool_dir = server.data_dir.join("nodes/acme/brief");
    let needle = pool_dir.to_string_lossy().to_string();
    eventually(Duration::from_secs(30), "nothing left", || async {
        let dirs = std::fs::read_dir(&pool_dir).map(|d| d.count()).unwrap_or(0);
        let agents = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let pid = e.file_name().to_string_lossy().to_string();
                String::from_utf8_lossy(&cmdline).contains(&needle) && alive(&pid)
            })
            .count();
        if dirs == 0 && agents == 0 {
            Ok(())
        } else {
            Err(format!("{dirs} node directories, {agents} agents"))
        }
    })
    .await;
    assert!(list_pools(&client).await.is_empty());
}

/// What a task leaves behind when it ends by itself dies with it, whether
/// it stayed in its group or left it (setsid). With an attempt cgroup
/// (root, controllers mounted) so does one that also cleared its
/// environment; without, that one escapes the tag sweep and outlives its
/// task. Either way the agent adopts and reaps it, so no zombie piles up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_finished_task_die_and_the_agent_reaps_what_it_adopts() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("w").nodes(1).slots(1).without_waiting().await;
    env.job("j").on("w").await;
    let marks = open_tempdir();
    let m = marks.path().display();
    add(
        &client,
        "j",
        vec![shell(
            "leaves",
            &format!(
                "echo $PPID > {m}/agent.pid; \
                 setsid sh -c 'echo $$ > {m}/detached.pid; exec sleep 300' & \
                 sleep 300 & echo $! > {m}/stayed.pid; \
                 env -i setsid sh -c 'echo $$ > {m}/untagged.pid; exec sleep 3' & \
                 while [ ! -s {m}/detached.pid ] || [ ! -s {m}/untagged.pid ]; do sleep 0.05; done"
            ),
        )],
    )
    .await;
    let agent = pid_in(&marks.path().join("agent.pid")).await;
    let detached = pid_in(&marks.path().join("detached.pid")).await;
    let stayed = pid_in(&marks.path().join("stayed.pid")).await;
    let untagged = pid_in(&marks.path().join("untagged.pid")).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    assert!(task(&client, "j", "leaves")
        .await
        .state
        .last_result
        .unwrap()
        .succeeded());
    eventually(Duration::from_secs(5), "leftovers killed", || async {
        match (alive(&detached), alive(&stayed)) {
            (false, false) => Ok(()),
            other => Err(format!("detached, stayed alive: {other:?}")),
        }
    })
    .await;
    if lote::agent::user::is_root() && lote::agent::cgroup::available().is_ok() {
        // The attempt's cgroup holds it, environment or not: it dies with
        // the rest.
        eventually(
            Duration::from_secs(5),
            "untagged leftover killed",
            || async {
                match alive(&untagged) {
                    true => Err("alive".to_string()),
                    false => Ok(()),
                }
            },
        )
        .await;
    } else {
        // Without cgroups the untagged one outlives its task, adopted by
        // the agent.
        let parent = |pid: &str| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .map(str::to_string)
        };
        assert!(alive(&untagged), "the untagged leftover died early");
        assert_eq!(parent(&untagged).as_deref(), Some(agent.as_str()));
        eventually(
            Duration::from_secs(10),
            "untagged leftover ended",
            || async {
                if alive(&untagged) {
                    Err("alive".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }
    // The next attempt's end reaps it: gone, not a zombie.
    add(&client, "j", vec![shell("next", "true")]).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    eventually(Duration::from_secs(5), "leftover reaped", || async {
        if std::path::Path::new(&format!("/proc/{untagged}")).exists() {
            Err(format!("{untagged} is still in the process table"))
        } else {
            Ok(())
        }
    })
    .await;
}

/// `--on-task-failure terminate-job` is acted on: a task that fails (with
/// no retries left) terminates its job, whose other tasks are terminated,
/// and the job completes with that task as its reason. A job terminated by
/// its user keeps the user's reason too, not "all tasks finished".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_terminates_a_job_that_asks_for_it_and_reasons_are_kept() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("p").nodes(1).slots(2).await;
    let spec = JobSpec {
        on_task_failure: lote::domain::job::OnTaskFailure::TerminateJob,
        ..JobSpec::on_pool(
            JobId::new("strict").unwrap(),
            AccountName::new("x").unwrap(),
            PoolId::new("p").unwrap(),
        )
    };
    create_job_spec(&client, spec).await;
    add(
        &client,
        "strict",
        vec![shell("long", "exec sleep 60"), shell("bad", "exit 3")],
    )
    .await;
    let completed = |job: &'static str| {
        let client = &client;
        async move {
            eventually(Duration::from_secs(30), "job completed", || async {
                let j = show_job(client, job).await;
                if j.state.status == JobStatus::Completed {
                    Ok(j)
                } else {
                    Err(format!("{:?}", j.state.status))
                }
            })
            .await
        }
    };
    let strict = completed("strict").await;
    let reason = strict.state.completion_reason.unwrap_or_default();
    assert!(reason.contains("task bad failed"), "{reason}");
    let long = task(&client, "strict", "long").await.state;
    assert_eq!(long.status, TaskStatus::Completed);
    assert_eq!(
        long.last_result.and_then(|r| r.failure).map(|f| f.0),
        Some(FailureCategory::Terminated)
    );

    // A job without the option runs on after a failure.
    env.job("lenient")
        .on("p")
        .tasks([shell("bad", "exit 3"), shell("good", "true")])
        .await;
    wait_job(&client, "lenient", Duration::from_secs(30)).await;
    let state = show_job(&client, "lenient").await.state;
    assert_ne!(state.status, JobStatus::Terminating);
    assert_eq!(
        task(&client, "lenient", "good").await.state.status,
        TaskStatus::Completed
    );

    // A user's termination keeps the user's reason.
    env.job("stopped")
        .on("p")
        .tasks([shell("long", "exec sleep 60")])
        .await;
    eventually(Duration::from_secs(30), "the long task running", || async {
        match task(&client, "stopped", "long").await.state.status {
            TaskStatus::Running => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .call(&Request::TerminateJob {
            job: JobId::new("stopped").unwrap(),
            reason: "enough for today".into(),
        })
        .await
        .unwrap();
    let stopped = completed("stopped").await;
    assert_eq!(
        stopped.state.completion_reason.as_deref(),
        Some("enough for today")
    );
    // A killed attempt's result says how long it ran, not 0.
    let killed = task(&client, "stopped", "long").await.state;
    let ran = killed
        .last_result
        .map(|r| r.duration_ms)
        .unwrap_or_default();
    assert!(
        ran >= 400,
        "terminated after 400 ms or more, reported {ran} ms"
    );
}

/// Logs written to a file carry no colour codes, and a deleted local pool
/// leaves no directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_logs_are_plain_and_a_deleted_pool_leaves_no_directory() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    // A failing start task makes the agent log a warning.
    Env::new(&client)
        .pool("plain")
        .start_task(start_task("exit 7", true, 0))
        .without_waiting()
        .await;
    let pool_dir = server.data_dir.join("nodes/acme/plain");
    let log = eventually(Duration::from_secs(30), "the agent's warning", || async {
        let node = std::fs::read_dir(&pool_dir)
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no node yet")?
            .map_err(|e| e.to_string())?;
        let log =
            std::fs::read_to_string(node.path().join("agent.log")).map_err(|e| e.to_string())?;
        if log.contains("WARN") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    assert!(!log.contains('\u{1b}'), "colour codes in {log:?}");
    client
        .call(&Request::DeletePool {
            pool: PoolId::new("plain").unwrap(),
            force: false,
        })
        .await
        .unwrap();
    assert!(!pool_dir.exists(), "{} is left", pool_dir.display());
    assert!(!server.data_dir.join("nodes/acme").exists());
}

/// Deleting a pool whose jobs still have queued or running tasks is
/// refused; with force, those jobs are terminated, their tasks end (none
/// is left queued for a pool that is gone) and the job completes with the
/// pool's deletion as its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_in_use_is_refused_unless_forced_and_then_ends_its_jobs() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("busy").nodes(1).slots(1).await;
    let job = env
        .job("j")
        .on("busy")
        .tasks([shell("running", "exec sleep 60"), shell("queued", "true")])
        .await;
    eventually(Duration::from_secs(30), "one task running", || async {
        let t = task(&client, "j", "running").await.state.status;
        if t == TaskStatus::Running {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await;
    let delete = |force| {
        let request = Request::DeletePool {
            pool: PoolId::new("busy").unwrap(),
            force,
        };
        let client = &client;
        async move { client.call(&request).await }
    };
    let refused = delete(false).await.unwrap_err();
    let ClientError::Api(ApiError { message, .. }) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(
        refused.api().and_then(|a| a.rejection),
        Some(lote::domain::RejectionCode::PoolInUse),
        "{message}"
    );
    assert!(message.contains("jobs j "), "{message}");
    delete(true).await.unwrap();
    let ended = job.wait(Duration::from_secs(30)).await;
    assert_eq!(ended.state.status, JobStatus::Completed);
    assert_eq!(
        ended.state.completion_reason.as_deref(),
        Some("pool busy was deleted")
    );
    for id in ["running", "queued"] {
        let t = task(&client, "j", id).await.state;
        assert_eq!(t.status, TaskStatus::Completed, "{id}");
        let (category, why) = t.last_result.unwrap().failure.unwrap();
        assert_eq!(category, FailureCategory::Terminated, "{id}");
        assert!(why.contains("pool busy was deleted"), "{id}: {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_settings_change_and_take_effect() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "p", 1, 1).await;
    create_job(&client, "slow", "p").await;
    add(&client, "slow", vec![shell("s1", "sleep 600")]).await;
    // Both queued behind the first: the later job's task is raised
    // above the earlier one's by its new priority.
    create_job(&client, "early", "p").await;
    add(&client, "early", vec![shell("e1", "true")]).await;
    create_job(&client, "late", "p").await;
    add(&client, "late", vec![shell("l1", "true")]).await;
    let out = cli(
        &server,
        &key,
        &["job", "update", "late", "--priority", "900"],
    );
    assert!(out.status.success(), "{out:?}");
    // A wall-clock limit set now ends the slow job (counted from its
    // creation, so at once).
    let out = cli(
        &server,
        &key,
        &["job", "update", "slow", "--max-wall-clock-secs", "1"],
    );
    assert!(out.status.success(), "{out:?}");
    eventually(
        Duration::from_secs(60),
        "the slow job is terminated",
        || async {
            let j = show_job(&client, "slow").await;
            match (&j.state.status, &j.state.completion_reason) {
                (JobStatus::Completed, Some(r)) if r.contains("wall-clock") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(Duration::from_secs(60), "both queued tasks ran", || async {
        let (e, l) = (
            task(&client, "early", "e1").await,
            task(&client, "late", "l1").await,
        );
        match (
            e.state.started_at.or(e.state.completed_at),
            l.state.started_at.or(l.state.completed_at),
        ) {
            (Some(a), Some(b)) => Ok((a, b)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (e, l) = (
        task(&client, "early", "e1").await,
        task(&client, "late", "l1").await,
    );
    let placed = |t: &lote::domain::Versioned<lote::domain::task::Task>| t.state.completed_at;
    assert!(
        placed(&l) <= placed(&e),
        "the raised job's task ran first: {:?} {:?}",
        placed(&l),
        placed(&e)
    );
    // Ending when its tasks have: a job whose tasks are done completes now.
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "update",
            "early",
            "--on-all-tasks-complete",
            "terminate-job",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    eventually(
        Duration::from_secs(30),
        "the early job completes",
        || async {
            match show_job(&client, "early").await.state.status {
                JobStatus::Completed => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // What a job was made with does not change; a completed job takes
    // nothing.
    let out = cli(
        &server,
        &key,
        &["job", "update", "early", "--priority", "1"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("completed"),
        "{out:?}"
    );
    stop_and_replay(server);
}
