//! Autoscale end to end: the real server and agent processes, formulas
//! evaluated by the supervisor on schedule and applied through the pool,
//! evaluate-without-applying, history, replay over history, and errors.

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::api::{Request, Response};
use lote::client::Client;
use lote::domain::pool::{AutoscaleRun, PoolSpec, ScaleSettings};
use lote::domain::task::TaskStatus;
use lote::types::{AccountName, PoolId};
use server_support::*;

/// Samples every second; formulas may run every 5 s.
const FAST: &[&str] = &[
    "--autoscale-sample-secs",
    "1",
    "--autoscale-min-interval-secs",
    "5",
];

fn pool(id: &str) -> PoolId {
    PoolId::new(id).unwrap()
}

async fn autoscale_pool(client: &Client, id: &str, formula: &str, slots: u32) {
    let spec = PoolSpec {
        scale: ScaleSettings::Autoscale {
            formula: formula.into(),
            evaluation_interval_secs: 5,
        },
        node_count_max: 3,
        ..PoolSpec::fixed(pool(id), AccountName::new("x").unwrap(), 0, slots)
    };
    create_pool_spec(client, spec).await;
}

async fn runs(client: &Client, id: &str) -> Vec<AutoscaleRun> {
    match client
        .call(&Request::AutoscaleHistory {
            pool: pool(id),
            limit: 1000,
        })
        .await
        .unwrap()
    {
        Response::AutoscaleRuns(r) => r,
        other => panic!("{other:?}"),
    }
}

async fn node_count(client: &Client, id: &str) -> usize {
    list_nodes(client, id).await.len()
}

/// Waits until the pool has exactly `count` nodes.
async fn wait_nodes(client: &Client, id: &str, count: usize) {
    eventually(Duration::from_secs(40), "node count", || async {
        let n = node_count(client, id).await;
        if n == count {
            Ok(())
        } else {
            Err(format!("{n} nodes, waiting for {count}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_grows_for_a_job_and_shrinks_to_zero_with_taskcompletion() {
    let server = ServerProcess::start(FAST);
    let (client, _, _) = server.account("acme").await;
    // Grow while tasks wait; once all run, keep one node; none when idle.
    // Shrinking with taskcompletion must leave the running tasks alone.
    let formula = "
        $TargetDedicatedNodes = $ActiveTasks > 0 ? min(3, $PendingTasks)
                              : ($RunningTasks > 0 ? 1 : 0);
        $NodeDeallocationOption = taskcompletion;";
    autoscale_pool(&client, "elastic", formula, 1).await;
    eventually(Duration::from_secs(20), "first run", || async {
        let r = runs(&client, "elastic").await;
        match r.first() {
            Some(run) if run.error.is_none() && run.target_after == Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(node_count(&client, "elastic").await, 0);

    create_job(&client, "j", "elastic").await;
    // Six tasks on at most three one-slot nodes: two waves.
    let tasks = (1..=6)
        .map(|i| shell(&format!("t{i}"), "sleep 10"))
        .collect();
    add(&client, "j", tasks).await;

    wait_nodes(&client, "elastic", 3).await;
    // Once the last wave runs and nothing waits, the formula wants 1
    // node; taskcompletion lets the two surplus nodes finish first.
    eventually(
        Duration::from_secs(30),
        "target 1 while tasks run",
        || async {
            let r = runs(&client, "elastic").await;
            match r.last() {
                Some(run) if run.target_after == Some(1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_job(&client, "j", Duration::from_secs(60)).await;
    for i in 1..=6 {
        let t = task(&client, "j", &format!("t{i}")).await.state;
        assert_eq!(t.status, TaskStatus::Completed, "t{i}");
        assert!(t.last_result.as_ref().unwrap().succeeded(), "t{i}: {t:?}");
        assert_eq!(
            (t.attempt, t.requeue_count, t.retry_count),
            (1, 0, 0),
            "t{i} ran once"
        );
    }
    wait_nodes(&client, "elastic", 0).await;
    let history = runs(&client, "elastic").await;
    let targets: Vec<u32> = history.iter().filter_map(|r| r.target_after).collect();
    assert!(targets.contains(&3) && targets.contains(&1), "{targets:?}");
    assert_eq!(targets.last(), Some(&0));
    assert!(history.iter().all(|r| r.error.is_none()));
    assert!(history
        .iter()
        .all(|r| r.results.contains("$NodeDeallocationOption=taskcompletion")));
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_formula_changes_nothing_is_recorded_and_keeps_running_across_a_restart() {
    let server = ServerProcess::start(FAST);
    let (client, key, _) = server.account("acme").await;
    // Never an hour of samples here: every run fails, none stops the next.
    let failing = "$TargetDedicatedNodes = avg($PendingTasks.GetSample(TimeInterval_Hour, 90));";
    autoscale_pool(&client, "strict", failing, 1).await;
    let before = eventually(Duration::from_secs(30), "two failed runs", || async {
        let r = runs(&client, "strict").await;
        if r.len() >= 2 {
            Ok(r)
        } else {
            Err(format!("{} runs", r.len()))
        }
    })
    .await;
    for run in &before {
        let e = run.error.as_ref().expect("an error");
        assert_eq!(e.code, "InsufficientSampleData");
        assert!(
            e.message.starts_with(
                "Line 1, Col 43: Insufficient data from data set: $PendingTasks wanted 90%"
            ),
            "{}",
            e.message
        );
        assert_eq!(run.target_after, None);
    }
    assert_eq!(node_count(&client, "strict").await, 0);

    // A restart rebuilds the schedule from the log; runs carry on.
    let server = server.restart_with(FAST);
    let client = server.client(
        lote::api::Credential::Account {
            account: AccountName::new("acme").unwrap(),
        },
        &key,
    );
    let n = before.len();
    eventually(Duration::from_secs(30), "runs after restart", || async {
        let r = runs(&client, "strict").await;
        if r.len() > n {
            Ok(())
        } else {
            Err(format!("{} runs", r.len()))
        }
    })
    .await;

    // Manual resize is refused while autoscale is on, as in Azure.
    let refused = client
        .call(&Request::ResizePool {
            pool: pool("strict"),
            target_nodes: 2,
            deallocation: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("disable autoscale"),
        "{refused}"
    );
    // Disabled: no more runs.
    client
        .call(&Request::DisableAutoscale {
            pool: pool("strict"),
        })
        .await
        .unwrap();
    let settled = runs(&client, "strict").await.len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(runs(&client, "strict").await.len(), settled);
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_history_and_replay_from_the_cli() {
    let server = ServerProcess::start(FAST);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("fixed").nodes(1).slots(2).await;
    create_job(&client, "j", "fixed").await;
    add(
        &client,
        "j",
        (1..=5)
            .map(|i| shell(&format!("w{i}"), "sleep 30"))
            .collect(),
    )
    .await;
    // Let a few samples be taken with 2 running and 3 waiting.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // `lote pool autoscale evaluate fixed --formula F`, after `global` flags.
    let evaluate = |global: &[&str], formula: &str| {
        let mut args = global.to_vec();
        args.extend([
            "pool",
            "autoscale",
            "evaluate",
            "fixed",
            "--formula",
            formula,
        ]);
        cli(&server, &key, &args)
    };
    let formula = "slots = $PendingTaskSlots;\n$TargetDedicatedNodes = (slots + $TaskSlotsPerNode - 1) / $TaskSlotsPerNode;";
    let out = evaluate(&[], formula);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("results: $TargetDedicatedNodes=3;$NodeDeallocationOption=requeue;slots=5"),
        "{text}"
    );
    assert!(
        text.contains("would set: 3 node(s) (target now 1)"),
        "{text}"
    );
    assert!(text.contains("1:9  read   $PendingTaskSlots = 5"), "{text}");
    assert!(text.contains("read   $TaskSlotsPerNode = 2"), "{text}");
    assert!(
        text.contains("2:1  set    $TargetDedicatedNodes = 3"),
        "{text}"
    );
    // Nothing changed: evaluation does not apply.
    assert_eq!(node_count(&client, "fixed").await, 1);

    let out = evaluate(
        &["--output", "json"],
        "n = $PendingTasks.GetSample(TimeInterval_Minute); $TargetDedicatedNodes = max(n);",
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["target_after"], 5);
    let samples = v["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t.get("sample"))
        .unwrap()
        .clone();
    assert!(samples["samples"].as_u64().unwrap() >= 2, "{samples}");

    // The node's agent reports its machine's figures.
    let out = evaluate(&[], "n = $SampleNodeCount; m = $MemoryBytes > 0; d = $DiskBytes > 0; c = $CPUPercent >= 0 && $CPUPercent <= 100");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(";c=1;d=1;m=1;n=1"), "{text}");

    // A broken formula: exit 1, with where and what.
    let out = evaluate(&[], "$TargetDedicatedNodes = 1 +;");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Line 1, Col 28: expected a value, found ';'"),
        "{err}"
    );
    // Enabling it is refused, with the same words; so is a short interval.
    let refused = |args: &[&str], words: &str| {
        let mut all = vec!["pool", "autoscale", "enable", "fixed", "--formula"];
        all.extend_from_slice(args);
        let out = cli(&server, &key, &all);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(words), "{err}");
    };
    refused(&["$PendingTasks = 1"], "$PendingTasks is read-only");
    refused(
        &["$TargetDedicatedNodes = 1", "--interval-secs", "1"],
        "under this server's minimum of 5s",
    );

    // Replay over what was recorded: each step shows what the formula
    // would have set beside the real target.
    let out = cli(
        &server,
        &key,
        &[
            "--output",
            "json",
            "pool",
            "autoscale",
            "replay",
            "fixed",
            "--formula",
            formula,
            "--from",
            "-3s",
            "--every",
            "1",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = steps.as_array().unwrap();
    assert!(steps.len() >= 3, "{text}");
    let last = steps.last().unwrap();
    assert_eq!(last["would_target"], 3, "{text}");
    assert_eq!(last["actual_target"], 1, "{text}");
    assert!(last["samples"].as_u64().unwrap() >= 2, "{text}");

    // History is empty for a pool that never autoscaled.
    let out = cli(&server, &key, &["pool", "autoscale", "history", "fixed"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no autoscale runs yet"));
    let help = cli(&server, &key, &["pool", "autoscale", "replay", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--every"));
    stop_and_replay(server);
}
