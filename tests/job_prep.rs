//! Job preparation and release tasks with real agents: the preparation
//! runs once per node before the job's tasks there (which see its working
//! directory), the release runs on each such node when the job is
//! terminated and the job completes only after it; a node where the
//! preparation failed gets none of the job's tasks and still runs other
//! jobs'; `job prep-status` says how each ended.

mod compute_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use lote::domain::job::JobStatus;
use lote::domain::task::TaskStatus;
use server_support::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn lines(path: &std::path::Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparation_gates_tasks_and_release_runs_before_the_job_completes() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("p").nodes(2).slots(2).await;
    let marks = shared_dir();
    let m = marks.path().display().to_string();
    // Both see the job's common variables ($SCENE) and its directories.
    let prep =
        format!("sleep 0.5; echo ok > ready; echo $SCENE:$LOTE_JOB_PREP_DIR >> {m}/prepared");
    let release = format!("echo $SCENE:$LOTE_JOB_PREP_DIR >> {m}/released");
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "frames",
            "--pool",
            "p",
            "--prep",
            &prep,
            "--release",
            &release,
            "--env",
            "SCENE=forest",
            "--env",
            "QUALITY=draft",
            "--metadata",
            "owner=render-team",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Each task fails unless the preparation finished on its node first,
    // and unless it sees the job's variables (its own QUALITY wins).
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut t = shell(
                &format!("f{i}"),
                "test -e \"$LOTE_JOB_PREP_WORKING_DIR/ready\" && [ \"$SCENE\" = forest ] \
                 && [ \"$QUALITY\" = final ] && sleep 0.2",
            );
            t.env.push(lote::domain::EnvVar {
                name: "QUALITY".into(),
                value: "final".into(),
            });
            t
        })
        .collect();
    add(&client, "frames", tasks).await;
    wait_job(&client, "frames", Duration::from_secs(120)).await;
    for i in 0..8 {
        let t = task(&client, "frames", &format!("f{i}")).await.state;
        assert!(t.last_result.as_ref().unwrap().succeeded(), "f{i}: {t:?}");
    }
    let prepared = lines(&marks.path().join("prepared"));
    assert!(
        !prepared.is_empty() && prepared.iter().all(|l| l.starts_with("forest:/")),
        "{prepared:?}"
    );
    let mut distinct = prepared.clone();
    distinct.dedup();
    assert_eq!(prepared, distinct, "a preparation ran twice on a node");
    let job = show_job(&client, "frames").await;
    assert_eq!(job.state.preparations.len(), prepared.len());
    assert!(job.state.preparations.values().all(|s| s.succeeded));
    assert!(lines(&marks.path().join("released")).is_empty());
    let out = cli(&server, &key, &["job", "prep-status", "frames"]);
    assert!(
        text(&out).contains("runs when the job ends"),
        "{}",
        text(&out)
    );

    let out = cli(&server, &key, &["job", "terminate", "frames"]);
    assert!(out.status.success(), "{}", text(&out));
    let job = eventually(Duration::from_secs(60), "the job completes", || async {
        let j = show_job(&client, "frames").await;
        (j.state.status == JobStatus::Completed)
            .then_some(j)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(
        lines(&marks.path().join("released")),
        prepared,
        "{:?}",
        job.state.releases
    );
    assert_eq!(job.state.releases.len(), prepared.len());
    // Each node marked the job released: its directory goes a retention
    // later.
    for line in &prepared {
        let prep_dir = std::path::Path::new(line.trim_start_matches("forest:"));
        let marker = prep_dir.parent().unwrap().join("released_at");
        assert!(marker.exists(), "{}", marker.display());
    }
    let out = cli(&server, &key, &["job", "prep-status", "frames"]);
    let status = text(&out);
    assert_eq!(
        status.matches("succeeded (exit 0)").count(),
        prepared.len(),
        "{status}"
    );
    // The job completed after the last release ended, not before.
    let history = stop_and_audit(server, &["job/acme/frames"]);
    let at = |what: &str| {
        history[0]
            .lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what}: {}", history[0]))
    };
    assert!(at("JobReleaseEnded") < at("JobCompleted"), "{}", history[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preparation_keeps_the_jobs_tasks_off_its_node() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("one").nodes(1).slots(1).await;
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "bad",
            "--pool",
            "one",
            "--prep",
            "exit 4",
            "--prep-retries",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    add(&client, "bad", vec![shell("t", "true")]).await;
    let failed = eventually(Duration::from_secs(60), "the preparation fails", || async {
        let j = show_job(&client, "bad").await;
        j.state
            .preparations
            .values()
            .next()
            .cloned()
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert!(!failed.succeeded);
    assert_eq!((failed.exit_code, failed.retries), (Some(4), 1));
    // The node runs another job's task; the first job's stays queued.
    create_job(&client, "good", "one").await;
    add(&client, "good", vec![shell("g", "true")]).await;
    wait_job(&client, "good", Duration::from_secs(60)).await;
    assert!(task(&client, "good", "g")
        .await
        .state
        .last_result
        .unwrap()
        .succeeded());
    let t = task(&client, "bad", "t").await.state;
    assert_eq!(t.status, TaskStatus::Active, "{t:?}");
    assert_eq!(t.retry_count, 0, "the task itself did not fail: {t:?}");
    let out = cli(&server, &key, &["task", "explain", "bad", "t"]);
    let why = text(&out);
    assert!(
        why.contains("the job's preparation failed on all of pool one's 1 nodes"),
        "{why}"
    );
    let out = cli(&server, &key, &["job", "prep-status", "bad"]);
    let status = text(&out);
    assert!(
        status.contains("failed: exit code 4") || status.contains("failed"),
        "{status}"
    );
    assert!(status.contains(" 4 "), "{status}");
    stop_and_replay(server);
}

/// After a reboot the preparation runs again before the job's next task
/// on the node, unless `--prep-once` and it had succeeded; a job that
/// completes when its tasks do terminates, runs its release, then
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_reruns_the_preparation_unless_told_once_and_a_finished_job_releases() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    Env::new(&client).pool("rb").nodes(1).slots(1).await;
    let marks = shared_dir();
    let m = marks.path().display().to_string();
    for (job, once) in [("again", false), ("once", true)] {
        let prep = format!("echo run >> {m}/{job}");
        let mut args = vec!["job", "create", job, "--pool", "rb", "--prep", &prep];
        if once {
            args.push("--prep-once");
        }
        let out = cli(&server, &key, &args);
        assert!(out.status.success(), "{}", text(&out));
        add(&client, job, vec![shell("before", "true")]).await;
        wait_job(&client, job, Duration::from_secs(60)).await;
    }
    let out = cli(&server, &key, &["node", "reboot", "rb", "node-0"]);
    assert!(out.status.success(), "{}", text(&out));
    // Wait for the reboot to be over: the node takes work again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes_up(&client, "rb", 1).await;
    for job in ["again", "once"] {
        add(&client, job, vec![shell("after", "true")]).await;
        wait_job(&client, job, Duration::from_secs(60)).await;
    }
    let runs = |job: &str| lines(&marks.path().join(job)).len();
    assert_eq!(runs("again"), 2, "the preparation did not run again");
    assert_eq!(runs("once"), 1, "--prep-once ran it again");

    let release = format!("echo released >> {m}/ended");
    let out = cli(
        &server,
        &key,
        &[
            "job",
            "create",
            "ends",
            "--pool",
            "rb",
            "--prep",
            "true",
            "--release",
            &release,
            "--on-all-tasks-complete",
            "terminate-job",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    add(&client, "ends", vec![shell("only", "true")]).await;
    let job = eventually(Duration::from_secs(60), "the job completes", || async {
        let j = show_job(&client, "ends").await;
        let status = j.state.status;
        (status == JobStatus::Completed)
            .then_some(j)
            .ok_or_else(|| format!("{status:?}"))
    })
    .await;
    assert_eq!(lines(&marks.path().join("ended")), ["released"]);
    assert_eq!(job.state.releases.len(), 1);
    assert_eq!(
        job.state.completion_reason.as_deref(),
        Some("all tasks finished")
    );
}
