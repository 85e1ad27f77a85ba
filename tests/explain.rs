//! Why a task waits: each reason `lote task explain` gives, produced by a
//! real situation (real server, real agents), and the summary `lote job
//! show` prints.

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::api::Request;
use lote::domain::job::{DisableTasks, JobSpec};
use lote::domain::node::NodeState;
use lote::domain::pool::{NodeProvider, PoolSpec, SchedulingPolicy};
use lote::domain::task::TaskStatus;
use lote::types::{AccountName, JobId, PoolId};
use server_support::*;

/// `lote task explain` as text.
fn explain(server: &ServerProcess, key: &str, job: &str, task: &str) -> String {
    let out = cli(server, key, &["task", "explain", job, task]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `lote task explain` says `words`.
async fn explains(server: &ServerProcess, key: &str, job: &str, task: &str, words: &str) -> String {
    eventually(Duration::from_secs(30), words, || async {
        let text = explain(server, key, job, task);
        if text.contains(words) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
}

async fn node_state(client: &lote::client::Client, pool: &str, state: NodeState) {
    eventually(Duration::from_secs(30), "node state", || async {
        let nodes = list_nodes(client, pool).await;
        if nodes.len() == 1 && nodes[0].state.state == state {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                nodes.iter().map(|n| n.state.state).collect::<Vec<_>>()
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wait_reason_from_a_real_situation() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;

    // No node at all: an empty pool.
    let env = Env::new(&client);
    env.pool("empty").nodes(0).slots(1).without_waiting().await;
    env.job("je").on("empty").await;
    add(&client, "je", vec![shell("e1", "true")]).await;
    explains(
        &server,
        &key,
        "je",
        "e1",
        "pool empty is empty: its target is 0 nodes",
    )
    .await;

    // Full: one node, one slot, taken by a long task.
    Env::new(&client).pool("full").nodes(1).slots(1).await;
    create_job(&client, "jf", "full").await;
    add(
        &client,
        "jf",
        vec![shell("busy", "sleep 60"), shell("f2", "true")],
    )
    .await;
    eventually(Duration::from_secs(30), "busy running", || async {
        match task(&client, "jf", "busy").await.state.status {
            TaskStatus::Running => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let text = explains(
        &server,
        &key,
        "jf",
        "f2",
        "its only node is full (1 of 1 slots in use)",
    )
    .await;
    assert!(text.contains("needs 1 slot(s) in pool full"), "{text}");

    // Higher-priority work ahead, and earlier work of the same priority.
    let low = JobSpec::on_pool(
        JobId::new("jl").unwrap(),
        AccountName::new("x").unwrap(),
        PoolId::new("full").unwrap(),
    );
    create_job_spec(&client, low).await;
    add(&client, "jl", vec![shell("l1", "true")]).await;
    let high = JobSpec {
        priority: 10,
        ..JobSpec::on_pool(
            JobId::new("jh").unwrap(),
            AccountName::new("x").unwrap(),
            PoolId::new("full").unwrap(),
        )
    };
    create_job_spec(&client, high).await;
    add(
        &client,
        "jh",
        vec![shell("h1", "true"), shell("h2", "true")],
    )
    .await;
    let text = explains(
        &server,
        &key,
        "jl",
        "l1",
        "2 tasks of higher-priority jobs wait ahead of it",
    )
    .await;
    assert!(
        text.contains("1 task submitted earlier waits ahead of it"),
        "{text}"
    );
    assert!(text.contains("its only node is full"), "{text}");
    let text = explain(&server, &key, "jh", "h2");
    assert!(
        text.contains("1 task submitted earlier waits ahead of it"),
        "{text}"
    );
    assert!(!text.contains("higher-priority"), "{text}");

    // A disabled job holds its queued tasks.
    create_job(&client, "jd", "full").await;
    client
        .call(&Request::DisableJob {
            job: JobId::new("jd").unwrap(),
            disable_tasks: DisableTasks::Wait,
        })
        .await
        .unwrap();
    add(&client, "jd", vec![shell("d1", "true")]).await;
    explains(
        &server,
        &key,
        "jd",
        "d1",
        "job jd is disabled, so its queued tasks are held (lote job enable jd)",
    )
    .await;

    // One of two nodes disabled, the other full: both said.
    Env::new(&client).pool("half").nodes(2).slots(1).await;
    let nodes = list_nodes(&client, "half").await;
    let off = nodes[0].state.id.clone().unwrap();
    client
        .call(&Request::DisableNode {
            pool: PoolId::new("half").unwrap(),
            node: off.clone(),
        })
        .await
        .unwrap();
    create_job(&client, "jh2", "half").await;
    add(
        &client,
        "jh2",
        vec![shell("busy", "sleep 60"), shell("next", "true")],
    )
    .await;
    let text = explains(
        &server,
        &key,
        "jh2",
        "next",
        "1 of pool half's 2 nodes takes no work now: 1 disabled (offline) (lote node list half)",
    )
    .await;
    assert!(
        text.contains("the one node taking work is full (1 of 1 slots in use)"),
        "{text}"
    );

    // Needs more slots than the nodes that joined have.
    let spec = PoolSpec {
        provider: NodeProvider::Remote,
        scheduling: SchedulingPolicy::Pack,
        ..PoolSpec::fixed(
            PoolId::new("small").unwrap(),
            AccountName::new("x").unwrap(),
            0,
            4,
        )
    };
    create_pool_spec(&client, spec).await;
    let token = join_token(&client, "small").await;
    let root = open_tempdir();
    let _agents = start_agents(&server, "small", &token, &[root.path()], 2);
    nodes_up(&client, "small", 1).await;
    create_job(&client, "js", "small").await;
    let mut wide = shell("w1", "true");
    wide.required_slots = 3;
    add(&client, "js", vec![wide]).await;
    explains(&server, &key, "js", "w1", "needs 3 slots; nodes have 2").await;

    // The start task failed on every node; nodes exist but none works
    // yet (the start task still runs).
    let cases = [
        (
            "broken",
            "exit 3",
            NodeState::StartTaskFailed,
            "the start task failed on its only node of pool broken",
        ),
        (
            "slow",
            "sleep 60",
            NodeState::WaitingForStartTask,
            "no node of pool slow takes work now: 1 running its start task",
        ),
    ];
    for (pool, line, state, words) in cases {
        let start = Some(start_task(line, true, 0));
        create_pool(&client, pool, NodeProvider::Local, 1, 1, start).await;
        node_state(&client, pool, state).await;
        let job = format!("j-{pool}");
        create_job(&client, &job, pool).await;
        add(&client, &job, vec![shell("t", "true")]).await;
        explains(&server, &key, &job, "t", words).await;
    }

    // A task that is not waiting says so.
    let text = explain(&server, &key, "jf", "busy");
    assert!(text.contains("is running: it is not waiting"), "{text}");

    // `lote job show` sums the reasons over the job's queued tasks (a
    // long queue also gets work prefetched onto the node, so the count of
    // waiting tasks is read from the same answer).
    add(
        &client,
        "jf",
        (3..=1002)
            .map(|i| shell(&format!("f{i}"), "true"))
            .collect(),
    )
    .await;
    // The counts and the summary come from two calls; an assignment of
    // prefetched work may land between them, so they must agree once
    // placement has settled, not at every instant.
    let expected = eventually(
        Duration::from_secs(30),
        "counts and summary agree",
        || async {
            let out = cli(&server, &key, &["--output", "json", "job", "show", "jf"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let active = v["task_counts"]["active"].as_u64().unwrap();
            // The node's slot and the work prefetched behind it, and the
            // job's two earlier tasks, are not queued.
            let held = 2 + 1 + u64::from(lote::server::supervisors::scheduler::PREFETCH_PER_SLOT);
            if active < 1002 - held {
                return Err(format!("too few waiting: {v}"));
            }
            let expected = format!(
                "{} tasks wait: its only node is full (1 of 1 slots in use)",
                lote::api::explain::grouped(active)
            );
            if v["waiting"][0] == expected.as_str() {
                Ok(expected)
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    let out = cli(&server, &key, &["job", "show", "jf"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("waiting: {expected}")), "{text}");
    // Each change of reasons was recorded once, not once per round (the
    // recorder looks every second; let it look a few times).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let trail = stop_and_audit(server, &["job/acme/jf", "job/acme/jd"]);
    assert_eq!(
        trail[0].matches("JobTasksWaiting ").count(),
        1,
        "{}",
        trail[0]
    );
    assert!(trail[0].contains("nodes_full"), "{}", trail[0]);
    assert!(trail[1].contains("job_disabled"), "{}", trail[1]);
}
