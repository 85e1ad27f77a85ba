//! Job manager tasks end to end: a manager that splits its job into 1,000
//! tasks with the `lote` CLI and the job-scoped key it is given, and is
//! refused everything beyond its own job; a manager whose completion ends
//! its job.

mod compute_support;
mod server_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use compute_support::*;
use lote::api::{Request, Response};
use lote::domain::job::JobStatus;
use lote::domain::task::{FailureCategory, TaskStatus};
use lote::types::JobId;
use server_support::*;

/// The lote binary where a task's user can run it (the build directory
/// is under root's home, closed to task users).
fn open_lote(dir: &Path) -> PathBuf {
    let copy = dir.join("lote");
    std::fs::copy(lote_bin(), &copy).unwrap();
    copy
}

/// The manager's working directory on the pool's one local node.
fn manager_wd(server: &ServerProcess, pool: &str, job: &str) -> PathBuf {
    let nodes = server.data_dir.join(format!("nodes/acme/{pool}"));
    let node = std::fs::read_dir(&nodes).unwrap().next().unwrap().unwrap();
    node.path().join(format!("tasks/{job}/jobmanager/1/wd"))
}

async fn job_status(client: &lote::client::Client, id: &str) -> JobStatus {
    match client
        .call(&Request::ShowJob {
            job: JobId::new(id).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::Job(j) => j.state.status,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_manager_splits_its_job_and_reaches_nothing_else() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(1).slots(4).await;
    create_job(&client, "other", "p").await;
    let bin = open_tempdir();
    let lote = open_lote(bin.path()).display().to_string();
    let script = format!(
        "i=1; while [ $i -le 1000 ]; do echo \"{{\\\"id\\\": \\\"w$i\\\", \\\"command\\\": \\\"true\\\"}}\"; i=$((i+1)); done > tasks.jsonl; \
         {lote} task add-many $LOTE_JOB_ID --from-file tasks.jsonl > added.out 2>&1 || exit 1; \
         for probe in 'job list' 'pool list' 'task add other sneaky -- true' 'account list' \"job show $LOTE_JOB_ID\"; do \
           name=$(echo $probe | cut -d' ' -f1-2 | tr ' ' _); \
           if {lote} $probe > $name.out 2>&1; then echo allowed > $name.rc; else echo refused > $name.rc; fi; \
         done"
    );
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "split",
            "--pool",
            "p",
            "--job-manager",
            &script,
            "--job-manager-keeps-job",
            "--on-all-tasks-complete",
            "terminate-job",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    wait_job(&client, "split", Duration::from_secs(180)).await;
    assert_eq!(job_status(&client, "split").await, JobStatus::Completed);
    let manager = task(&client, "split", "jobmanager").await.state;
    let wd = manager_wd(&server, "p", "split");
    assert!(
        manager.last_result.as_ref().unwrap().succeeded(),
        "{manager:?}\n{}",
        std::fs::read_to_string(wd.join("added.out")).unwrap_or_default()
    );
    let Response::Job(job) = client
        .call(&Request::ShowJob {
            job: JobId::new("split").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(job.state.tasks_added, 1001);
    let last = task(&client, "split", "w1000").await.state;
    assert_eq!(last.status, TaskStatus::Completed);

    let rc = |name: &str| {
        std::fs::read_to_string(wd.join(format!("{name}.rc")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .to_string()
    };
    for refused in ["job_list", "pool_list", "task_add", "account_list"] {
        assert_eq!(rc(refused), "refused", "{refused}");
    }
    let why = std::fs::read_to_string(wd.join("task_add.out")).unwrap();
    assert!(why.contains("job manager"), "{why}");
    assert_eq!(rc("job_show"), "allowed");
    // Nothing reached the other job.
    let Response::Job(other) = client
        .call(&Request::ShowJob {
            job: JobId::new("other").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(other.state.tasks_added, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_managers_completion_ends_its_job() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(1).slots(2).await;
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "led",
            "--pool",
            "p",
            "--job-manager",
            "printf %s \"$LOTE_JOB_KEY\" > key.txt; sleep 2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let shown = cli(&server, &key, &["job", "show", "led"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(
            "manager:    task jobmanager; ends the job when it completes; alone on its node"
        ),
        "{shown}"
    );
    add(&client, "led", vec![shell("long", "sleep 120")]).await;
    wait_job(&client, "led", Duration::from_secs(60)).await;
    assert_eq!(job_status(&client, "led").await, JobStatus::Completed);
    let long = task(&client, "led", "long").await.state;
    assert_eq!(long.status, TaskStatus::Completed);
    let failure = long.last_result.unwrap().failure.unwrap();
    assert_eq!(failure.0, FailureCategory::Terminated, "{failure:?}");
    assert!(failure.1.contains("job manager complete"), "{failure:?}");

    // The manager's key worked for its job while it ran, and stops when
    // the job has ended.
    let key_text =
        std::fs::read_to_string(manager_wd(&server, "p", "led").join("key.txt")).unwrap();
    assert!(!key_text.is_empty());
    let as_job = server.client(
        lote::api::Credential::Job {
            account: lote::types::AccountName::new("acme").unwrap(),
            job: JobId::new("led").unwrap(),
        },
        &key_text,
    );
    let err = as_job
        .call(&Request::ShowJob {
            job: JobId::new("led").unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.api().map(|a| a.kind),
        Some(lote::api::ErrorKind::BadSignature),
        "{err:?}"
    );
}

/// A job and its manager are one write: the audit shows both recorded in
/// the same round (one time stamp), so no crash can leave the job without
/// its manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_and_its_manager_are_recorded_together() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client)
        .pool("idle")
        .nodes(0)
        .slots(1)
        .without_waiting()
        .await;
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "one",
            "--pool",
            "idle",
            "--job-manager",
            "true",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let history = stop_and_audit(server, &["job/acme/one", "task/acme/one/jobmanager"]);
    let stamp = |text: &str, event: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no {event} in {text}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(
        stamp(&history[0], "JobCreated"),
        stamp(&history[1], "TaskAdded"),
        "{}\n{}",
        history[0],
        history[1]
    );
    assert_eq!(
        stamp(&history[0], "JobCreated"),
        stamp(&history[0], "JobTaskAdded")
    );
}
