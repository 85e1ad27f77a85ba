//! Job schedules end to end, through the CLI and a real server with a
//! local pool: a schedule every 2 s makes numbered jobs with its template's
//! tasks (which see `LOTE_SCHEDULE_ID`), keeps counting across a server
//! SIGKILL without a run made twice, and deletes its jobs with itself; an
//! overlap-skip schedule records the runs its long job held back, and
//! terminating it ends its active job.

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::api::{Request, Response};
use lote::client::Client;
use lote::domain::job::JobStatus;
use lote::domain::schedule::{Schedule, ScheduleStatus};
use lote::types::JobId;
use server_support::*;

const FAST: &[&str] = &["--schedule-min-interval-secs", "1"];

async fn schedule(client: &Client, id: &str) -> Schedule {
    match client
        .call(&Request::ShowSchedule {
            schedule: JobId::new(id).unwrap(),
        })
        .await
        .unwrap()
    {
        Response::Schedule(s) => s.state,
        other => panic!("{other:?}"),
    }
}

async fn job_status(client: &Client, id: &str) -> Option<JobStatus> {
    match client
        .call(&Request::ShowJob {
            job: JobId::new(id).unwrap(),
        })
        .await
    {
        Ok(Response::Job(j)) => Some(j.state.status),
        _ => None,
    }
}

fn tasks_file(dir: &std::path::Path, line: &str) -> String {
    let path = dir.join("tasks.jsonl");
    std::fs::write(&path, format!("{{\"id\": \"t\", \"command\": {line:?}}}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_makes_numbered_jobs_survives_a_crash_and_deletes_them() {
    let server = ServerProcess::start(FAST);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(1).slots(2).await;
    let files = open_tempdir();
    let tasks = tasks_file(files.path(), "echo \"run of $LOTE_SCHEDULE_ID\"");
    // Refused with the floor named: every 0s is no duration, and the
    // cron needs five fields.
    let out = cli(
        &server,
        &key,
        &[
            "schedule", "create", "bad", "--pool", "p", "--cron", "* * *",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 fields"),
        "{out:?}"
    );
    let out = cli(
        &server,
        &key,
        &[
            "schedule",
            "create",
            "tick",
            "--pool",
            "p",
            "--every",
            "2s",
            "--tasks-file",
            &tasks,
        ],
    );
    assert!(out.status.success(), "{out:?}");

    let s = eventually(Duration::from_secs(20), "two runs done", || async {
        let s = schedule(&client, "tick").await;
        let ended = s.recent.iter().filter(|r| r.ended.is_some()).count();
        if ended >= 2 {
            Ok(s)
        } else {
            Err(format!("{} runs ended", ended))
        }
    })
    .await;
    assert_eq!(s.recent[0].job.as_str(), "tick-job-1");
    assert_eq!(
        job_status(&client, "tick-job-1").await,
        Some(JobStatus::Completed)
    );
    let printed = task(&client, "tick-job-1", "t").await.state;
    assert!(printed.last_result.unwrap().succeeded());
    let out = cli(&server, &key, &["task", "output", "tick-job-1", "t"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "run of tick");

    // A SIGKILL while runs fall due: counting goes on, no run twice.
    let server = server.crash_restart_after(Duration::from_secs(3), FAST, || {});
    let client = server.client(
        lote::api::Credential::Account {
            account: lote::types::AccountName::new("acme").unwrap(),
        },
        &key,
    );
    let s = eventually(
        Duration::from_secs(20),
        "runs after the restart",
        || async {
            let s = schedule(&client, "tick").await;
            if s.runs_started >= s.recent[0].run + 4 || s.runs_started >= 6 {
                Ok(s)
            } else {
                Err(format!("{} runs started", s.runs_started))
            }
        },
    )
    .await;
    // Every run started has its job, with its template's one task; the
    // runs the server was down for are recorded as not started.
    for r in &s.recent {
        assert!(
            job_status(&client, r.job.as_str()).await.is_some(),
            "{}",
            r.job
        );
        let t = task(&client, r.job.as_str(), "t").await;
        assert!(t.state.attempt <= 1, "{} ran its task twice", r.job);
    }
    assert_eq!(
        s.runs_started + s.missed_start_window + s.skipped_previous_active,
        s.next_run - 1,
        "every run is started or recorded as not started: {s:?}"
    );

    let out = cli(&server, &key, &["schedule", "delete", "tick"]);
    assert!(out.status.success(), "{out:?}");
    eventually(Duration::from_secs(20), "its jobs deleted", || async {
        match job_status(&client, "tick-job-1").await {
            None | Some(JobStatus::Deleted) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Then the schedule itself, once all its jobs are gone.
    eventually(Duration::from_secs(20), "the schedule deleted", || async {
        let shown = client
            .call(&Request::ShowSchedule {
                schedule: JobId::new("tick").unwrap(),
            })
            .await;
        match shown {
            Err(e)
                if e.api().and_then(|a| a.rejection)
                    == Some(lote::domain::RejectionCode::ScheduleNotFound) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for run in 1..s.next_run {
        let job = job_status(&client, &format!("tick-job-{run}")).await;
        assert!(
            matches!(job, None | Some(JobStatus::Deleted)),
            "tick-job-{run}: {job:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_records_held_back_runs_and_terminate_ends_the_active_job() {
    let server = ServerProcess::start(FAST);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(1).slots(2).await;
    let files = open_tempdir();
    let tasks = tasks_file(files.path(), "sleep 30");
    let out = cli(
        &server,
        &key,
        &[
            "schedule",
            "create",
            "slow",
            "--pool",
            "p",
            "--every",
            "1s",
            "--overlap",
            "skip",
            "--tasks-file",
            &tasks,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let s = eventually(Duration::from_secs(20), "runs skipped", || async {
        let s = schedule(&client, "slow").await;
        if s.skipped_previous_active >= 2 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    assert_eq!(s.runs_started, 1, "one job at a time");
    let shown = cli(&server, &key, &["schedule", "show", "slow"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("skipped (previous job active)"), "{shown}");

    let out = cli(&server, &key, &["schedule", "terminate", "slow"]);
    assert!(out.status.success(), "{out:?}");
    eventually(Duration::from_secs(20), "terminated", || async {
        let s = schedule(&client, "slow").await;
        let job = job_status(&client, "slow-job-1").await;
        match (s.status, job) {
            (ScheduleStatus::Completed, Some(JobStatus::Completed)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // A run by hand is refused once the schedule has ended.
    let out = cli(&server, &key, &["schedule", "run-now", "slow"]);
    assert!(!out.status.success(), "{out:?}");

    // The schedule's history is in the log, for the audit.
    let data_dir = server.data_dir.clone();
    let mut server = server;
    assert!(server.terminate().success());
    let audit = std::process::Command::new(lote_bin())
        .args(["audit", "--data-dir"])
        .arg(&data_dir)
        .arg("schedule/acme/slow")
        .output()
        .unwrap();
    assert!(audit.status.success(), "{audit:?}");
    let text = String::from_utf8_lossy(&audit.stdout);
    for event in [
        "ScheduleCreated",
        "ScheduleRunStarted",
        "ScheduleRunsSkipped",
        "ScheduleTerminating",
        "ScheduleCompleted",
    ] {
        assert!(text.contains(event), "{event} missing from:\n{text}");
    }
    // And its state at a past moment: --at the first run's start, the
    // schedule was active with run 1 under way.
    let json = |extra: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(lote_bin())
            .args(["audit", "--data-dir"])
            .arg(&data_dir)
            .arg("schedule/acme/slow")
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let whole = json(&[]);
    let started = whole["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "ScheduleRunStarted")
        .expect("a run started");
    let at = started["recorded_at"].as_str().unwrap().to_string();
    let then = json(&["--at", &at]);
    assert_eq!(then["state"]["status"], "active", "{then}");
    assert_eq!(whole["state"]["status"], "completed");
}
