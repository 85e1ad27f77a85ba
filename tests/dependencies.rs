//! Task dependencies end to end, with real agents: chains and fan-in over
//! id ranges run in order; a failed parent cancels (transitively, so the
//! job ends), blocks (and `task explain` says so) or, by its exit
//! conditions, satisfies; a task's exit conditions can terminate or
//! disable its job; impossible work is refused at submission; a restarted
//! server keeps every dependent waiting until its parents end.

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::api::{Request, Response};
use lote::domain::job::{JobStatus, OnTaskFailure};
use lote::domain::task::{FailureCategory, TaskStatus};
use lote::domain::task_spec::{
    DependencyAction, ExitConditions, ExitOptions, TaskDependencies, TaskIdRange,
};
use lote::domain::RejectionCode;
use lote::types::{JobId, TaskId};
use server_support::*;

fn after(id: &str, line: &str, parents: &[&str]) -> lote::domain::task::TaskSpec {
    let mut t = shell(id, line);
    t.depends_on.task_ids = parents.iter().map(|p| TaskId::new(*p).unwrap()).collect();
    t
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_and_ranges_run_in_order_and_a_failed_parent_cancels_its_line() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("p").nodes(2).slots(4).await;
    let cli_ok = |args: &[&str]| {
        let out = cli(&server, &key, args);
        assert!(out.status.success(), "{args:?}: {}", stdout(&out));
        stdout(&out)
    };
    cli_ok(&[
        "job",
        "create",
        "dag",
        "--pool",
        "p",
        "--dependencies",
        "--on-all-tasks-complete",
        "terminate-job",
    ]);
    // Each task leaves a mark when it ends; a dependent checks its
    // parents' marks before anything else (so it fails if it ran early).
    let marks = open_tempdir();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let dir = marks.path().display().to_string();
    let mark = |id: &str, work: &str| shell(id, &format!("{work} && touch {dir}/{id}"));
    let check = |parents: &[&str]| {
        parents
            .iter()
            .map(|p| format!("test -e {dir}/{p}"))
            .collect::<Vec<_>>()
            .join(" && ")
    };
    // Twelve numbered frames (one zero-padded), a merge over 1-12 added
    // in the same batch as its last parents (and before them), a chain
    // a -> b -> c.
    let frames: Vec<_> = (1..=10)
        .map(|i| mark(&i.to_string(), "sleep 0.2"))
        .collect();
    add(&client, "dag", frames).await;
    let all: Vec<String> = (1..=10)
        .map(|i| i.to_string())
        .chain(["011".into(), "12".into()])
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut merge = shell("merge", &check(&all));
    merge.depends_on.ranges = vec![TaskIdRange { start: 1, end: 12 }];
    add(
        &client,
        "dag",
        vec![merge, mark("011", "sleep 0.3"), mark("12", "sleep 0.1")],
    )
    .await;
    cli_ok(&[
        "task",
        "add",
        "dag",
        "a",
        "--command",
        &format!("sleep 0.3 && touch {dir}/a"),
    ]);
    cli_ok(&[
        "task",
        "add",
        "dag",
        "b",
        "--depends-on",
        "a",
        "--command",
        &format!("{} && touch {dir}/b", check(&["a"])),
    ]);
    cli_ok(&[
        "task",
        "add",
        "dag",
        "c",
        "--depends-on",
        "b,a",
        "--command",
        &check(&["a", "b"]),
    ]);
    // A failing parent under the job's default (cancel): its dependents
    // and theirs fail at once, and the job can end.
    cli_ok(&["task", "add", "dag", "bad", "--command", "exit 3"]);
    cli_ok(&[
        "task",
        "add",
        "dag",
        "child",
        "--depends-on",
        "bad",
        "--",
        "true",
    ]);
    cli_ok(&[
        "task",
        "add",
        "dag",
        "grandchild",
        "--depends-on",
        "child,a",
        "--",
        "true",
    ]);
    env.existing_job("dag").wait(Duration::from_secs(120)).await;
    // Its last task ended; the job supervisor completes it just after.
    eventually(Duration::from_secs(30), "the job completes", || async {
        let j = show_job(&client, "dag").await;
        (j.state.status == JobStatus::Completed)
            .then_some(())
            .ok_or_else(|| format!("{:?}", j.state.status))
    })
    .await;
    for id in ["merge", "b", "c"] {
        let t = task(&client, "dag", id).await.state;
        assert!(
            t.last_result.as_ref().unwrap().succeeded(),
            "{id} ran before its parents ended: {t:?}"
        );
    }
    for (id, parent) in [("child", "bad"), ("grandchild", "child")] {
        let t = task(&client, "dag", id).await.state;
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.attempt, 0, "{id} never ran");
        let (category, why) = t.last_result.unwrap().failure.unwrap();
        assert_eq!(category, FailureCategory::ParentFailed);
        assert!(why.contains(&format!("a parent failed: {parent}")), "{why}");
    }
    let why = task(&client, "dag", "child")
        .await
        .state
        .last_result
        .unwrap()
        .failure
        .unwrap()
        .1;
    assert!(why.contains("exit code 3"), "{why}");
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_with_its_reason_satisfy_runs_and_explain_names_parents() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("one").nodes(1).slots(1).await;
    env.job("blocking")
        .on("one")
        .dependencies(DependencyAction::Block)
        .await;
    // A parent that exits 3: under block its dependent waits for good; a
    // parent whose exit conditions map 3 to satisfy lets its own run.
    let mut lenient = shell("lenient", "exit 3");
    lenient.exit_conditions = Some(Box::new(ExitConditions {
        exit_codes: vec![(
            3,
            ExitOptions {
                job_action: None,
                dependency_action: Some(DependencyAction::Satisfy),
                retry: None,
            },
        )],
        ..ExitConditions::default()
    }));
    add(
        &client,
        "blocking",
        vec![
            shell("strict", "exit 3"),
            after("stuck", "true", &["strict"]),
            lenient,
            after("runs", "true", &["lenient"]),
        ],
    )
    .await;
    let runs = eventually(Duration::from_secs(60), "runs completes", || async {
        let t = task(&client, "blocking", "runs").await.state;
        (t.status == TaskStatus::Completed)
            .then_some(t)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert!(runs.last_result.unwrap().succeeded());
    let stuck = task(&client, "blocking", "stuck").await.state;
    assert_eq!(stuck.status, TaskStatus::Active);
    let out = cli(&server, &key, &["task", "explain", "blocking", "stuck"]);
    let text = stdout(&out);
    assert!(
        text.contains("blocked: parent strict failed (exit code 3) and the policy is block"),
        "{text}"
    );
    let out = cli(&server, &key, &["job", "show", "blocking"]);
    let text = stdout(&out);
    assert!(
        text.contains("1 task waits: for their parents to end; 1 blocked for good"),
        "{text}"
    );

    // Waiting reasons name the parents and where they are: with one slot,
    // `long` runs while `queued` waits behind it, and `done` has ended.
    env.job("waits")
        .on("one")
        .dependencies(DependencyAction::Cancel)
        .await;
    add(
        &client,
        "waits",
        vec![
            shell("done", "true"),
            shell("long", "sleep 60"),
            shell("queued", "true"),
        ],
    )
    .await;
    eventually(Duration::from_secs(30), "long runs", || async {
        (task(&client, "waits", "long").await.state.status == TaskStatus::Running)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let out = cli(
        &server,
        &key,
        &[
            "task",
            "add",
            "waits",
            "fan-in",
            "--depends-on",
            "done,long,queued",
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let out = cli(&server, &key, &["task", "explain", "waits", "fan-in"]);
    let text = stdout(&out);
    assert!(
        text.contains("waits for 2 of 3 parents: long (running on node-0), queued (queued)"),
        "{text}"
    );
    // A job's terminate reaches tasks that wait for parents too.
    let out = cli(&server, &key, &["job", "terminate", "waits"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = cli(&server, &key, &["task", "terminate", "blocking", "stuck"]);
    assert!(out.status.success(), "{}", stdout(&out));
    for (job, id) in [("waits", "fan-in"), ("blocking", "stuck")] {
        eventually(Duration::from_secs(30), "terminated", || async {
            let t = task(&client, job, id).await.state;
            (t.status == TaskStatus::Completed)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
    }
    // A deleted job's tasks that wait for parents are ended too.
    env.job("gone")
        .on("one")
        .dependencies(DependencyAction::Block)
        .await;
    add(
        &client,
        "gone",
        vec![shell("fails", "exit 2"), after("held", "true", &["fails"])],
    )
    .await;
    eventually(Duration::from_secs(30), "fails ends", || async {
        let t = task(&client, "gone", "fails").await.state;
        (t.status == TaskStatus::Completed)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let out = cli(&server, &key, &["job", "delete", "gone"]);
    assert!(out.status.success(), "{}", stdout(&out));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = stop_and_audit(server, &["task/acme/gone/held"]);
    assert!(history[0].contains("TaskTerminated"), "{}", history[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_work_is_refused_at_submission_with_its_reason() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("p").nodes(0).slots(1).without_waiting().await;
    env.job("plain").on("p").await;
    env.job("dag")
        .on("p")
        .dependencies(DependencyAction::Cancel)
        .await;
    add(
        &client,
        "dag",
        vec![shell("x", "true"), shell("gone", "true")],
    )
    .await;
    let out = cli(&server, &key, &["task", "delete", "dag", "gone"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let refused = |args: &[&str], code: &str, words: &str| {
        let out = cli(&server, &key, args);
        let text = stdout(&out);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            text.contains(code) && text.contains(words),
            "{args:?}: {text}"
        );
    };
    refused(
        &[
            "task",
            "add",
            "plain",
            "t",
            "--depends-on",
            "x",
            "--",
            "true",
        ],
        "DependenciesNotEnabled",
        "--dependencies",
    );
    refused(
        &[
            "task",
            "add",
            "dag",
            "self",
            "--depends-on",
            "self",
            "--",
            "true",
        ],
        "DependencyCycle",
        "depends on itself",
    );
    refused(
        &[
            "task",
            "add",
            "dag",
            "orphan",
            "--depends-on",
            "x,nobody",
            "--",
            "true",
        ],
        "DependencyNotFound",
        "nobody",
    );
    refused(
        &[
            "task",
            "add",
            "dag",
            "late",
            "--depends-on",
            "gone",
            "--",
            "true",
        ],
        "DependencyNotFound",
        "or was deleted",
    );
    // A range that selects nothing (add-range names tasks task-1, ...).
    refused(
        &[
            "task",
            "add",
            "dag",
            "m",
            "--depends-on-range",
            "1-5",
            "--",
            "true",
        ],
        "DependencyNotFound",
        "selects no task of job dag",
    );
    refused(
        &[
            "task",
            "add",
            "dag",
            "r",
            "--depends-on-range",
            "9-1",
            "--",
            "true",
        ],
        "InvalidValue",
        "ends before it starts",
    );
    refused(
        &[
            "task",
            "add",
            "dag",
            "e",
            "--on-exit",
            "3=later",
            "--",
            "true",
        ],
        "",
        "satisfy, block, cancel",
    );
    // A cycle inside one batch: nothing of the batch is added.
    let result = client
        .call(&Request::AddTasks {
            job: JobId::new("dag").unwrap(),
            tasks: vec![
                after("c1", "true", &["c3"]),
                after("c2", "true", &["c1"]),
                after("c3", "true", &["c2"]),
                shell("innocent", "true"),
            ],
            request_id: None,
        })
        .await;
    let err = result.unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.rejection, Some(RejectionCode::DependencyCycle));
    assert!(
        api.message.contains("c1") && api.message.contains("c3"),
        "{}",
        api.message
    );
    let Response::Job(job) = client
        .call(&Request::ShowJob {
            job: JobId::new("dag").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        job.state.tasks_added, 2,
        "nothing of the refused batch was added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_conditions_disable_or_terminate_the_job() {
    let server = ServerProcess::start(&[]);
    let (client, _key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("p").nodes(1).slots(2).await;
    for (job, code) in [("disables", 5), ("terminates", 9)] {
        let mut spec = lote::domain::job::JobSpec::on_pool(
            JobId::new(job).unwrap(),
            lote::types::AccountName::new("acme").unwrap(),
            lote::types::PoolId::new("p").unwrap(),
        );
        spec.on_task_failure = OnTaskFailure::PerformExitOptionsJobAction;
        create_job_spec(&client, spec).await;
        let mut t = shell("t", &format!("exit {code}"));
        t.exit_conditions = Some(Box::new(ExitConditions {
            exit_codes: vec![(
                5,
                ExitOptions {
                    job_action: Some(lote::domain::task_spec::JobAction::Disable),
                    dependency_action: None,
                    retry: None,
                },
            )],
            ..ExitConditions::default()
        }));
        add(&client, job, vec![t, shell("ok", "true")]).await;
    }
    // Exit 5 maps to disable; exit 9 takes a failure's default, terminate.
    let wanted = [
        ("disables", JobStatus::Disabled),
        ("terminates", JobStatus::Completed),
    ];
    for (job, status) in wanted {
        let state = eventually(Duration::from_secs(60), "the job acts", || async {
            let j = show_job(&client, job).await;
            (j.state.status == status)
                .then_some(j)
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
        if status == JobStatus::Completed {
            let reason = format!("{:?}", state.state);
            assert!(reason.contains("task t failed (exit code 9)"), "{reason}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_dependents_waiting_until_their_parents_end() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("p").nodes(1).slots(2).await;
    env.job("dag")
        .on("p")
        .dependencies(DependencyAction::Cancel)
        .ends_with_its_tasks()
        .await;
    let gate = open_tempdir();
    let go = gate.path().join("go");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(gate.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let done = gate.path().join("gated-done");
    let wait_line = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; touch {}",
        go.display(),
        done.display()
    );
    let mut fan_in = shell("fan-in", "true");
    fan_in.depends_on = TaskDependencies {
        task_ids: vec![TaskId::new("gated").unwrap()],
        ranges: vec![TaskIdRange { start: 1, end: 3 }],
    };
    add(
        &client,
        "dag",
        vec![
            shell("gated", &wait_line),
            shell("1", "true"),
            shell("2", "true"),
            shell("3", "exit 4"),
        ],
    )
    .await;
    let after_gated = after(
        "after-gated",
        &format!("test -e {}", done.display()),
        &["gated"],
    );
    add(
        &client,
        "dag",
        vec![fan_in, after("after-3", "true", &["3"]), after_gated],
    )
    .await;
    eventually(Duration::from_secs(30), "3 fails", || async {
        (task(&client, "dag", "after-3").await.state.status == TaskStatus::Completed)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let server = server.crash_restart(&[]);
    let client = server.client(
        lote::api::Credential::Account {
            account: lote::types::AccountName::new("acme").unwrap(),
        },
        &key,
    );
    // fan-in waits for `gated` (still running) and is cancelled by 3: the
    // cancel was decided before the crash, and the restarted server
    // agrees; fan-in never ran.
    let fan_in = eventually(Duration::from_secs(30), "fan-in cancelled", || async {
        let t = task(&client, "dag", "fan-in").await.state;
        (t.status == TaskStatus::Completed)
            .then_some(t)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(fan_in.attempt, 0);
    assert_eq!(
        fan_in.last_result.unwrap().failure.unwrap().0,
        FailureCategory::ParentFailed
    );
    std::fs::write(&go, b"").unwrap();
    let gated = eventually(Duration::from_secs(60), "gated ends", || async {
        let t = task(&client, "dag", "gated").await.state;
        (t.status == TaskStatus::Completed)
            .then_some(t)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert!(gated.last_result.unwrap().succeeded());
    let job = env_wait(&client).await;
    // Held across the restart, released by its parent's end after it.
    let released = task(&client, "dag", "after-gated").await.state;
    assert!(
        released.last_result.unwrap().succeeded(),
        "after-gated ran early"
    );
    assert_eq!(job, JobStatus::Completed);
    stop_and_replay(server);
}

async fn env_wait(client: &lote::client::Client) -> JobStatus {
    eventually(Duration::from_secs(60), "the job completes", || async {
        let j = show_job(client, "dag").await;
        (j.state.status == JobStatus::Completed)
            .then_some(j.state.status)
            .ok_or_else(|| "not yet".to_string())
    })
    .await
}
