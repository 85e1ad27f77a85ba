//! Faults, end to end with the real server and agent processes: a node
//! whose agent dies or goes silent is declared lost, its tasks are
//! requeued (not retried) and finish elsewhere, a local pool replaces the
//! node, and an agent that comes back is told to drop its stale work and
//! rejoins clean.

mod compute_support;
mod server_support;

use std::time::{Duration, Instant};

use compute_support::*;
use lote::domain::node::NodeState;
use lote::domain::pool::SchedulingPolicy;
use lote::domain::task::TaskStatus;
use lote::types::NodeId;
use server_support::*;

/// Nodes are lost after 3 s of silence.
const LOST_AFTER: &[&str] = &["--node-lost-after-secs", "3"];

/// Waits until the node is in `state`.
async fn node_in(client: &lote::client::Client, pool: &str, node: &NodeId, state: NodeState) {
    eventually(Duration::from_secs(20), "node state", || async {
        let nodes = list_nodes(client, pool).await;
        match nodes.iter().find(|n| n.state.id.as_ref() == Some(node)) {
            Some(n) if n.state.state == state => Ok(()),
            other => Err(format!(
                "{node}: {:?}, waiting for {state:?}",
                other.map(|n| n.state.state)
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_local_agent_is_lost_its_task_requeued_and_its_node_replaced() {
    let server = ServerProcess::start(LOST_AFTER);
    let (client, _, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(2).slots(1).await;
    create_job(&client, "j", "p").await;
    // The first attempt of t1 would run on for a minute: it must die with
    // its agent, not outlive it beside its requeued attempt.
    let marks = open_tempdir();
    let first = format!(
        "if [ \"$LOTE_TASK_ATTEMPT\" = 1 ]; then env -i setsid sleep 61 & echo $! > {m}/t1.child; echo $$ > {m}/t1.pid; exec sleep 60; fi; sleep 5",
        m = marks.path().display()
    );
    add(
        &client,
        "j",
        vec![shell("t1", &first), shell("t2", "sleep 5")],
    )
    .await;
    let victim = eventually(Duration::from_secs(30), "t1 running", || async {
        let t = task(&client, "j", "t1").await.state;
        match (t.status, t.placement) {
            (TaskStatus::Running, Some(p)) => Ok(p.node),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let pid_file = server
        .data_dir
        .join(format!("nodes/acme/p/{victim}/agent.pid"));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let first_attempt = pid_in(&marks.path().join("t1.pid")).await;
    let escaped = pid_in(&marks.path().join("t1.child")).await;
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    if lote::agent::user::is_root() {
        // Its tasks run as the pool's user and die with it: the first
        // process by its death signal, one that left its session with a
        // cleared environment by the agent's watchdog killing its cgroup.
        eventually(
            Duration::from_secs(3),
            "the attempt dead with its agent",
            || async {
                match (alive(&first_attempt), alive(&escaped)) {
                    (false, false) => Ok(()),
                    _ => Err(format!(
                        "pid {first_attempt} or its escaped child {escaped} still runs"
                    )),
                }
            },
        )
        .await;
    }

    // Within the timeout and a second it is no longer a working node.
    eventually(Duration::from_secs(10), "node lost", || async {
        let nodes = list_nodes(&client, "p").await;
        match nodes.iter().find(|n| n.state.id.as_ref() == Some(&victim)) {
            Some(n) if matches!(n.state.state, NodeState::Idle | NodeState::Running) => {
                Err(format!("{victim} is {:?}", n.state.state))
            }
            _ => Ok(()),
        }
    })
    .await;
    let lost_in = killed.elapsed();
    assert!(
        lost_in <= Duration::from_secs(4) + Duration::from_millis(300),
        "{lost_in:?}"
    );

    // Both tasks finish; t1 once more, elsewhere, as a requeue.
    wait_job(&client, "j", Duration::from_secs(60)).await;
    let t1 = task(&client, "j", "t1").await.state;
    assert_eq!(t1.status, TaskStatus::Completed);
    assert!(t1.last_result.as_ref().unwrap().succeeded(), "{t1:?}");
    assert_eq!(
        (t1.retry_count, t1.requeue_count, t1.attempt),
        (0, 1, 2),
        "{t1:?}"
    );
    assert_ne!(t1.placement.unwrap().node, victim);
    let t2 = task(&client, "j", "t2").await.state;
    assert_eq!(
        (t2.status, t2.retry_count, t2.requeue_count),
        (TaskStatus::Completed, 0, 0)
    );

    // The pool is back to two nodes, the lost one replaced.
    let nodes = nodes_up(&client, "p", 2).await;
    let ids: Vec<NodeId> = nodes.iter().filter_map(|n| n.state.id.clone()).collect();
    assert!(!ids.contains(&victim), "{ids:?}");
    let history = stop_and_audit(server, &[&format!("node/acme/p/{victim}")]).remove(0);
    assert!(history.contains("NodeUnusable"), "{history}");
    assert!(history.contains("no heartbeat"), "{history}");
    assert!(history.contains("NodeRemoved"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_remote_agent_is_lost_then_rejoins_and_its_stale_attempt_is_refused_and_killed() {
    let server = ServerProcess::start(LOST_AFTER);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "r", 1, SchedulingPolicy::Spread).await;
    let roots = [open_tempdir(), open_tempdir()];
    let marks = open_tempdir();
    let paths: Vec<&std::path::Path> = roots.iter().map(|r| r.path()).collect();
    let agents = start_agents(&server, "r", &token, &paths, 1);
    nodes_up(&client, "r", 2).await;
    create_job(&client, "j", "r").await;
    // Its first attempt hangs (and records its pid); any later one ends
    // at once.
    let line = format!(
        "echo $$ > {}/$LOTE_TASK_ATTEMPT.pid; if [ $LOTE_TASK_ATTEMPT = 1 ]; then exec sleep 60; fi",
        marks.path().display()
    );
    add(&client, "j", vec![shell("t1", &line)]).await;
    let (victim, first_pid) = eventually(Duration::from_secs(30), "t1 running", || async {
        let t = task(&client, "j", "t1").await.state;
        let pid = std::fs::read_to_string(marks.path().join("1.pid")).unwrap_or_default();
        match (t.status, t.placement, pid.trim()) {
            (TaskStatus::Running, Some(p), pid) if !pid.is_empty() => Ok((p.node, pid.to_string())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Which agent runs it: its root holds the node's credential.
    let agent_index = paths
        .iter()
        .position(|root| {
            std::fs::read_to_string(root.join("node.toml"))
                .unwrap_or_default()
                .contains(&format!("\"{victim}\""))
        })
        .expect("the node's agent");
    let agent_pid = agents.pid(agent_index);
    // Cut it off: the agent stops calling; its task keeps running.
    signal(agent_pid, libc::SIGSTOP);
    node_in(&client, "r", &victim, NodeState::Unusable).await;
    // Requeued, not retried, and finished on the other node.
    wait_job(&client, "j", Duration::from_secs(30)).await;
    let t1 = task(&client, "j", "t1").await.state;
    assert_eq!(
        (t1.retry_count, t1.requeue_count, t1.attempt),
        (0, 1, 2),
        "{t1:?}"
    );
    assert!(t1.last_result.as_ref().unwrap().succeeded());
    assert_ne!(t1.placement.as_ref().unwrap().node, victim);
    assert!(
        alive(&first_pid),
        "the stale attempt runs on while its agent is stopped"
    );

    // Back: it is told to drop its stale attempt (killed, its report
    // refused) and rejoins clean.
    signal(agent_pid, libc::SIGCONT);
    eventually(Duration::from_secs(20), "stale attempt killed", || async {
        if alive(&first_pid) {
            Err(format!("{first_pid} still runs"))
        } else {
            Ok(())
        }
    })
    .await;
    node_in(&client, "r", &victim, NodeState::Idle).await;
    // Exactly one outcome: attempt 2's, unchanged by the late agent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = task(&client, "j", "t1").await;
    assert_eq!(after.state.attempt, 2);
    assert_eq!(after.state.status, TaskStatus::Completed);
    assert!(after.state.last_result.as_ref().unwrap().succeeded());
    drop(agents);
    let history = stop_and_audit(server, &["task/acme/j/t1"]).remove(0);
    assert_eq!(history.matches("TaskCompleted").count(), 1, "{history}");
    assert_eq!(history.matches("TaskRequeued").count(), 1, "{history}");
}

/// An agent's calls are its heartbeat, and a working agent's only call is
/// its poll; while a start task keeps the poll loop away, its usage report
/// goes alone, once per heartbeat period (a third of the timeout). With
/// the shortest timeout (2 s) and a start task of 5 s, a missing report
/// would have the node taken for lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_task_longer_than_the_lost_node_timeout_keeps_its_node_alive() {
    let server = ServerProcess::start(&["--node-lost-after-secs", "2"]);
    let (client, _, _) = server.account("acme").await;
    let start = lote::domain::spec::StartTask {
        command_line: lote::domain::spec::CommandLine::Shell("sleep 5".into()),
        env: vec![],
        resource_files: vec![],
        wait_for_success: true,
        retry_count_max: 0,
    };
    let provider = lote::domain::pool::NodeProvider::Remote;
    create_pool(&client, "s", provider, 0, 1, Some(start)).await;
    let token = join_token(&client, "s").await;
    let root = open_tempdir();
    let agents = start_agents(&server, "s", &token, &[root.path()], 1);
    let began = Instant::now();
    let node = nodes_up(&client, "s", 1).await.remove(0);
    assert!(
        began.elapsed() >= Duration::from_secs(4),
        "the start task was waited for"
    );
    // Idle a while on polls alone: parked for at most 0.67 s each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = node.state.id.clone().unwrap();
    node_in(&client, "s", &id, NodeState::Idle).await;
    drop(agents);
    let history = stop_and_audit(server, &[&format!("node/acme/s/{id}")]).remove(0);
    assert!(history.contains("NodeWaitingForStartTask"), "{history}");
    assert!(history.contains("NodeIdle"), "{history}");
    assert!(!history.contains("NodeUnusable"), "{history}");
}

/// A pool's changed secrets reach an idle node when they change: the
/// change wakes the node's parked poll, which answers with the pool's new
/// secrets epoch. With a 60 s timeout a poll is parked for 20 s, so a node
/// that learned of it only from its next poll would miss the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_reaches_an_idle_node_at_once_not_at_its_next_poll() {
    let server = ServerProcess::start(&["--node-lost-after-secs", "60"]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "k", 1, SchedulingPolicy::Spread).await;
    let root = open_tempdir();
    let agents = start_agents(&server, "k", &token, &[root.path()], 1);
    nodes_up(&client, "k", 1).await;
    // Its first poll was answered at once (no epoch seen yet); the next
    // is parked.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_node = root.path().join("secrets/db");
    assert!(!on_node.exists());
    for value in ["first", "second"] {
        let set = lote::api::Request::SetPoolSecret {
            pool: lote::types::PoolId::new("k").unwrap(),
            secret: lote::domain::pool::PoolSecret {
                name: "db".into(),
                value: lote::types::Secret::new(value),
                start_task_env: false,
            },
        };
        client.call(&set).await.unwrap();
        let asked = Instant::now();
        eventually(Duration::from_secs(5), "the value on the node", || async {
            match std::fs::read_to_string(&on_node) {
                Ok(v) if v == value => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(asked.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(agents);
}
