//! Apps end to end, with real agents: publish a program with its
//! definition, run it with parameters and files, get the merged result;
//! each split kind, stages, outcomes, refusals, reprocess, auto pools.

mod compute_support;
mod server_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use compute_support::*;
use lote::api::{Request, Response};
use lote::types::JobId;
use serde_json::Value;
use server_support::*;

/// The example app's program, built beside `lote`.
fn mandelzoom_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mandelzoom")
}

/// A publishable directory: the example's app.toml (with `edit` applied)
/// and its program.
fn mandelzoom_dir(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = open_tempdir();
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mandelzoom/app.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("app.toml"), edit(toml)).unwrap();
    std::fs::copy(mandelzoom_bin(), dir.path().join("mandelzoom")).unwrap();
    dir
}

/// A publishable directory of shell scripts: `files` are (name, text),
/// scripts made executable.
fn script_app(toml: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_tempdir();
    std::fs::write(dir.path().join("app.toml"), toml).unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Runs the CLI; its stdout as JSON, or a panic with its stderr.
fn ok_json(server: &ServerProcess, key: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = cli(server, key, &all);
    assert!(
        out.status.success(),
        "lote {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs the CLI expecting a failure; its stderr.
fn refused(server: &ServerProcess, key: &str, args: &[&str]) -> String {
    let out = cli(server, key, args);
    assert!(
        !out.status.success(),
        "lote {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn publish(server: &ServerProcess, key: &str, dir: &Path, default: bool) -> Value {
    let path = dir.to_str().unwrap();
    let mut args = vec!["app", "publish", path];
    if default {
        args.push("--default");
    }
    ok_json(server, key, &args)
}

/// The run's job id from `app run`'s answer.
fn run_app(server: &ServerProcess, key: &str, args: &[&str]) -> String {
    let mut all = vec!["app", "run"];
    all.extend_from_slice(args);
    let v = ok_json(server, key, &all);
    v["job"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

fn wait_run(server: &ServerProcess, key: &str, job: &str) -> Value {
    let out = cli(
        server,
        key,
        &[
            "--output",
            "json",
            "app",
            "job",
            "wait",
            job,
            "--timeout-secs",
            "240",
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The same frames rendered and merged on this machine, in one go.
fn local_zoom(frames: u32, width: u32, height: u32, palette: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(mandelzoom_bin())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let (to, w, h) = (frames.to_string(), width.to_string(), height.to_string());
    run(&[
        "render", "--from", "1", "--to", &to, "--width", &w, "--height", &h,
    ]);
    run(&[
        "merge",
        "--out",
        "zoom.png",
        "--preview",
        "preview.png",
        "--palette",
        palette,
    ]);
    (
        std::fs::read(dir.path().join("zoom.png")).unwrap(),
        std::fs::read(dir.path().join("preview.png")).unwrap(),
    )
}

fn dest_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_app_runs_split_and_merged_as_a_local_run_would() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "render", 2, 2).await;
    let app = mandelzoom_dir(|t| t);
    let published = publish(&server, &key, app.path(), true);
    assert_eq!(published["app"], "mandelzoom");
    let list = ok_json(&server, &key, &["app", "list"]);
    assert_eq!(list["apps"][0]["default_version"], "1.0", "{list}");
    let show = ok_json(&server, &key, &["app", "show", "mandelzoom"]);
    assert_eq!(
        show["definition"]["parameters"][0]["name"], "frames",
        "{show}"
    );

    // 20 frames by 8: three render tasks, then the merge.
    let job = run_app(
        &server,
        &key,
        &[
            "mandelzoom",
            "--param",
            "frames=20",
            "--param",
            "width=64",
            "--param",
            "height=48",
            "--param",
            "palette=ice",
            "--pool",
            "render",
        ],
    );
    let done = wait_run(&server, &key, &job);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["tasks"], 4, "{done}");
    assert_eq!(done["percent_complete"], 100, "{done}");
    assert_eq!(done["parameters"]["palette"], "ice", "{done}");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 20, "{done}");

    let (_d, dest) = dest_dir();
    let dest_s = dest.to_str().unwrap();
    ok_json(
        &server,
        &key,
        &["app", "job", "download", &job, "--dest", dest_s],
    );
    ok_json(
        &server,
        &key,
        &[
            "app",
            "job",
            "download",
            &job,
            "--preview",
            "--dest",
            dest_s,
        ],
    );
    let (zoom, preview) = local_zoom(20, 64, 48, "ice");
    assert!(
        std::fs::read(dest.join("zoom.png")).unwrap() == zoom,
        "the merged result differs from a local run's"
    );
    assert!(std::fs::read(dest.join("preview.png")).unwrap() == preview);

    let runs = ok_json(&server, &key, &["app", "jobs", "mandelzoom"]);
    assert_eq!(runs["runs"][0]["job"], job.as_str(), "{runs}");
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_definition_is_refused_with_its_lines_and_bad_parameters_all_at_once() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "render", 1, 1).await;
    let bad = mandelzoom_dir(|t| {
        t.replace("type = \"choice\"", "type = \"colour\"")
            .replace("{range.from}", "{range.start}")
            .replace("{palette}", "fire")
    });
    let err = refused(
        &server,
        &key,
        &["app", "publish", bad.path().to_str().unwrap()],
    );
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("type \"colour\""), "{err}");
    assert!(err.contains("unknown placeholder {range.start}"), "{err}");
    let line_of = |needle: &str| {
        let text = std::fs::read_to_string(bad.path().join("app.toml")).unwrap();
        // The table the problem is reported at.
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    };
    assert!(
        err.contains(&format!("line {}:", line_of("[parameters.palette]"))),
        "{err}"
    );
    // Nothing was uploaded for it.
    let Response::Packages(p) = client.call(&Request::ListPackages).await.unwrap() else {
        panic!()
    };
    assert!(p.is_empty(), "{p:?}");

    publish(&server, &key, mandelzoom_dir(|t| t).path(), false);
    let err = refused(
        &server,
        &key,
        &[
            "app",
            "run",
            "mandelzoom",
            "--param",
            "frames=0",
            "--param",
            "palette=purple",
            "--param",
            "speed=3",
            "--param",
            "width=wide",
            "--pool",
            "render",
        ],
    );
    for expected in [
        "4 problems",
        "frames=\"0\" is below the minimum 1",
        "palette=\"purple\" is not one of fire, ice, grey",
        "speed: mandelzoom 1.0 has no such parameter",
        "width=\"wide\" is not an integer",
        "nothing was started",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
    let Response::Jobs(jobs) = client.call(&Request::ListJobs).await.unwrap() else {
        panic!()
    };
    assert!(jobs.is_empty(), "a refused run made a job: {jobs:?}");

    // A run sent twice with one request id is one run, named alike.
    let run = Request::RunApp {
        app: "mandelzoom".into(),
        version: None,
        job: None,
        params: vec![
            ("frames".into(), "1".into()),
            ("width".into(), "16".into()),
            ("height".into(), "16".into()),
        ],
        inputs: vec![],
        pool: Some(lote::types::PoolId::new("render").unwrap()),
        auto_pool: None,
        request_id: Some(uuid::Uuid::from_u128(0x1234_5678_9abc)),
    };
    let first = client.call(&run).await.unwrap();
    let again = client.call(&run).await.unwrap();
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    let Response::Jobs(jobs) = client.call(&Request::ListJobs).await.unwrap() else {
        panic!()
    };
    assert_eq!(jobs.len(), 1, "{jobs:?}");
}

/// One task per input file, a second stage that reads the first's
/// intermediate files, a merge; a retryable failure and a permanent one.
const WORDS: &str = r#"
name = "words"
version = "1.0"
description = "counts the words of text files"

[parameters.mode]
type = "choice"
choices = ["upper", "lower"]
default = "upper"

[split]
files = "*.txt"

[[stages]]
name = "count"
command = "{app}/count.sh {file} {mode}"
outputs = [
  { pattern = "*.count", kind = "intermediate" },
  { pattern = "*.out", kind = "output" },
  { pattern = "thumb.txt", kind = "preview" },
  { pattern = "count.log", kind = "log" },
]

[[stages]]
name = "sum"
single = true
command = "cat intermediate/*.count | paste -sd+ | bc > total.out"
outputs = [{ pattern = "total.out", kind = "output" }]

[outcomes]
retry_exit_codes = [75]
max_retries = 3

[merge]
command = "cat *.out > all.txt && echo merged > preview.txt"
output = "all.txt"
preview = "preview.txt"
"#;

/// `flaky.txt` fails retryably on its first attempt; `bad.txt` fails for
/// good, except in a reprocessing job (`-r1`).
const COUNT_SH: &str = r#"#!/bin/sh
name=$1
echo "counting $name (attempt $LOTE_TASK_ATTEMPT)" > count.log
if [ "$name" = flaky.txt ] && [ "$LOTE_TASK_ATTEMPT" = 1 ]; then exit 75; fi
case "$name:$LOTE_JOB_ID" in bad.txt:*-r1) ;; bad.txt:*) exit 3 ;; esac
base=${name%.txt}
wc -w < "$name" | tr -d ' ' > "$base.count"
if [ "$2" = upper ]; then tr a-z A-Z < "$name"; else cat "$name"; fi > "$base.out"
echo "$base" > thumb.txt
"#;

fn words_app(version: &str) -> tempfile::TempDir {
    script_app(
        &WORDS.replace("version = \"1.0\"", &format!("version = \"{version}\"")),
        &[("count.sh", COUNT_SH)],
    )
}

fn text_files(names: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in names {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stages_outcomes_and_reprocess() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "p", 2, 2).await;
    publish(&server, &key, words_app("1.0").path(), false);
    let files = text_files(&[
        ("a.txt", "one two three\n"),
        ("flaky.txt", "four five\n"),
        ("bad.txt", "six\n"),
        ("notes.md", "shared by every task, split by none\n"),
    ]);
    let input = |n: &str| files.path().join(n).display().to_string();
    let (a, flaky, bad, notes) = (
        input("a.txt"),
        input("flaky.txt"),
        input("bad.txt"),
        input("notes.md"),
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "words", "--input", &a, "--input", &flaky, "--input", &bad, "--input", &notes,
            "--pool", "p",
        ];
        args.extend_from_slice(extra);
        let mut all = vec!["app", "run"];
        all.extend_from_slice(&args);
        ok_json(&server, &key, &all)
    };
    let first = run(&[]);
    let job = first["job"].as_str().unwrap().to_string();
    assert_eq!(first["inputs_uploaded"], 4, "{first}");
    let failed = wait_run(&server, &key, &job);
    assert_eq!(failed["status"], "failed", "{failed}");
    // Tasks: count a, bad, flaky (files sorted by the run's order), sum, merge.
    let tasks = lote_tasks(&client, &job).await;
    let by_name = |display: &str| {
        tasks
            .iter()
            .find(|t| t.state.spec.as_ref().unwrap().display_name == display)
            .unwrap_or_else(|| panic!("no task {display}"))
            .clone()
    };
    assert_eq!(
        by_name("count flaky.txt").state.attempt,
        2,
        "a retryable failure runs again"
    );
    assert_eq!(
        by_name("count bad.txt").state.attempt,
        1,
        "a permanent failure is not retried though retries are left"
    );
    let sum = by_name("sum");
    assert_eq!(
        sum.state
            .last_result
            .as_ref()
            .unwrap()
            .failure
            .as_ref()
            .unwrap()
            .0,
        lote::domain::task::FailureCategory::ParentFailed
    );
    // The log of the failed task was kept; its output was not.
    assert!(failed["task_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"].as_str().unwrap().ends_with("/log/count.log")));
    let err = refused(&server, &key, &["app", "job", "download", &job]);
    assert!(
        err.contains("has no result") && err.contains("reprocess"),
        "{err}"
    );

    // The same files again: nothing is uploaded twice.
    let second = run(&["--param", "mode=lower"]);
    assert_eq!(second["inputs_uploaded"], 0, "{second}");
    let Response::Blobs { blobs: items, .. } = client
        .call(&Request::ListBlobs {
            container: "lote-app-inputs".into(),
            prefix: String::new(),
            after: None,
            limit: 1000,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(items.len(), 4);
    ok_json(
        &server,
        &key,
        &["app", "job", "cancel", second["job"].as_str().unwrap()],
    );

    // Reprocess: only the failed tasks (bad's count, then sum and merge).
    let again = ok_json(&server, &key, &["app", "job", "reprocess", &job]);
    assert_eq!(again["created"], format!("job/acme/{job}-r1"), "{again}");
    let done = wait_run(&server, &key, &job);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["jobs"].as_array().unwrap().len(), 2, "{done}");
    let rerun = lote_tasks(&client, &format!("{job}-r1")).await;
    let names: Vec<String> = rerun
        .iter()
        .map(|t| t.state.spec.as_ref().unwrap().display_name.clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in ["count bad.txt", "sum", "merge"] {
        assert!(names.iter().any(|x| x == n), "{names:?}");
    }
    let (_d, dest) = dest_dir();
    ok_json(
        &server,
        &key,
        &[
            "app",
            "job",
            "download",
            &job,
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    let all = std::fs::read_to_string(dest.join("all.txt")).unwrap();
    assert_eq!(all, "ONE TWO THREE\nSIX\nFOUR FIVE\n6\n", "{all}");
    let err = refused(&server, &key, &["app", "job", "reprocess", &job]);
    assert!(err.contains("succeeded"), "{err}");
    // Per task: what it left, by kind, from the job that ran it last.
    let show = ok_json(&server, &key, &["app", "job", "show", &job]);
    let task = |name: &str| {
        show["task_outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {show}"))
            .clone()
    };
    let mut kinds: Vec<String> = task("count a.txt")["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["intermediate", "log", "output", "preview"]);
    assert_eq!(task("count bad.txt")["job"], format!("{job}-r1"));
    assert_eq!(task("merge")["files"][0]["kind"], "result");
    stop_and_replay(server);
}

async fn lote_tasks(
    client: &lote::client::Client,
    job: &str,
) -> Vec<lote::domain::Versioned<lote::domain::task::Task>> {
    match client
        .call(&Request::ListTasks {
            job: JobId::new(job).unwrap(),
            after: None,
            limit: 1000,
        })
        .await
        .unwrap()
    {
        Response::Tasks { items, .. } => items,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_versions_defaults_cancel_and_an_auto_pool() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let lines = r#"
name = "shout"
version = "1.0"
[parameters.list]
type = "file"
required = true
[parameters.pause]
type = "integer"
default = 0
min = 0
[split]
lines = "list"
[[stages]]
command = "sleep {pause}; echo {line} | tr a-z A-Z > out-{index}.txt"
outputs = [{ pattern = "out-*.txt", kind = "output" }]
[merge]
command = "cat out-*.txt > all.txt"
output = "all.txt"
"#;
    let v1 = script_app(lines, &[]);
    let v2 = script_app(
        &lines.replace("1.0", "2.0").replace("tr a-z A-Z", "rev"),
        &[],
    );
    publish(&server, &key, v1.path(), false);
    publish(&server, &key, v2.path(), false);
    let list = files_of(&[("names.txt", "ana\n\n  bob  \ncarla\n")]);
    let path = list.path().join("names.txt").display().to_string();
    let param = format!("list={path}");

    // The first version published is the default; a run on an auto pool.
    let job = run_app(
        &server,
        &key,
        &["shout", "--param", &param, "--auto-pool", "nodes=1,slots=2"],
    );
    let Response::Pool(pool) = client
        .call(&Request::ShowPool {
            pool: lote::types::PoolId::new(&job).unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(pool.state.spec.unwrap().node_size.task_slots, 2);
    let done = wait_run(&server, &key, &job);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["version"], "1.0");
    assert_eq!(done["tasks"], 4, "three lines and the merge: {done}");
    let (_d, dest) = dest_dir();
    ok_json(
        &server,
        &key,
        &[
            "app",
            "job",
            "download",
            &job,
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("all.txt")).unwrap(),
        "ANA\nBOB\nCARLA\n"
    );
    // The run's pool goes with it, nodes and all.
    eventually(
        Duration::from_secs(60),
        "the auto pool is deleted",
        || async {
            let left = list_pools(&client).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pool(s) left", left.len()))
            }
        },
    )
    .await;
    assert!(!server.data_dir.join(format!("nodes/acme/{job}")).exists());

    // A named version, then the default moved to it.
    local_pool(&client, "p", 1, 2).await;
    let job2 = run_app(
        &server,
        &key,
        &["shout:2.0", "--param", &param, "--pool", "p"],
    );
    let done = wait_run(&server, &key, &job2);
    assert_eq!(done["version"], "2.0", "{done}");
    let (_d2, dest2) = dest_dir();
    ok_json(
        &server,
        &key,
        &[
            "app",
            "job",
            "download",
            &job2,
            "--dest",
            dest2.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dest2.join("all.txt")).unwrap(),
        "ana\nbob\nalrac\n"
    );
    ok_json(&server, &key, &["app", "set-default", "shout", "2.0"]);
    let show = ok_json(&server, &key, &["app", "show", "shout"]);
    assert_eq!(show["definition"]["version"], "2.0", "{show}");
    let err = refused(
        &server,
        &key,
        &["app", "run", "shout:3.0", "--param", &param, "--pool", "p"],
    );
    assert!(
        err.contains("no version 3.0 (published: 1.0, 2.0)"),
        "{err}"
    );
    let err = refused(
        &server,
        &key,
        &["app", "publish", v1.path().to_str().unwrap()],
    );
    assert!(err.contains("published already"), "{err}");

    // Cancel: a slow run stops, and says so.
    let slow = run_app(
        &server,
        &key,
        &[
            "shout",
            "--param",
            &param,
            "--param",
            "pause=600",
            "--pool",
            "p",
        ],
    );
    eventually(Duration::from_secs(60), "a task runs", || async {
        let v = ok_json(&server, &key, &["app", "job", "show", &slow]);
        if v["task_counts"]["running"].as_u64() > Some(0) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    ok_json(&server, &key, &["app", "job", "cancel", &slow]);
    let done = wait_run(&server, &key, &slow);
    assert_eq!(done["status"], "cancelled", "{done}");
    let runs = ok_json(&server, &key, &["app", "jobs", "shout"]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3, "{runs}");
    stop_and_replay(server);
}

fn files_of(names: &[(&str, &str)]) -> tempfile::TempDir {
    text_files(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splitter_adds_the_tasks_as_the_runs_job_manager() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "p", 1, 2).await;
    // The lote CLI where the task's user can run it.
    let bin = open_tempdir();
    let lote = bin.path().join("lote");
    std::fs::copy(lote_bin(), &lote).unwrap();
    let app = script_app(
        r#"
name = "fanout"
version = "1"
[parameters.lote]
type = "string"
required = true
[parameters.parts]
type = "integer"
default = 3
[split]
splitter = "{app}/split.sh {lote} {parts}"
"#,
        &[(
            "split.sh",
            "#!/bin/sh\ni=1; while [ $i -le $2 ]; do echo \"{\\\"id\\\": \\\"$i\\\", \\\"command\\\": \\\"echo part $i\\\"}\"; i=$((i+1)); done > tasks.jsonl\nexec $1 task add-many $LOTE_JOB_ID --from-file tasks.jsonl\n",
        )],
    );
    publish(&server, &key, app.path(), false);
    let lote_param = format!("lote={}", lote.display());
    let job = run_app(
        &server,
        &key,
        &["fanout", "--param", &lote_param, "--pool", "p"],
    );
    let done = wait_run(&server, &key, &job);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["tasks"], 4, "the splitter and its 3 tasks: {done}");
    let tasks = lote_tasks(&client, &job).await;
    assert!(tasks
        .iter()
        .any(|t| t.state.spec.as_ref().unwrap().id.as_str() == "splitter"));
    // A splitter's app declares no merge: refused at publish with its line.
    let bad = script_app(
        "name = \"fanout\"\nversion = \"2\"\n[split]\nsplitter = \"x\"\n[merge]\ncommand = \"y\"\noutput = \"o\"\n",
        &[],
    );
    let err = refused(
        &server,
        &key,
        &["app", "publish", bad.path().to_str().unwrap()],
    );
    assert!(
        err.contains("line 5") && err.contains("declares no [merge]"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_job_and_each_schedule_run_can_have_a_pool_of_its_own() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    // A job with its own pool: made with it, gone when it completes.
    ok_json(
        &server,
        &key,
        &[
            "job",
            "create",
            "burst",
            "--auto-pool",
            "nodes=1,slots=2",
            "--on-all-tasks-complete",
            "terminate-job",
        ],
    );
    let pools = list_pools(&client).await;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].state.spec.as_ref().unwrap().id.as_str(), "burst");
    ok_json(&server, &key, &["task", "add", "burst", "t1", "--", "true"]);
    wait_job(&client, "burst", Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(60),
        "the job's pool is deleted",
        || async {
            match list_pools(&client).await.len() {
                0 => Ok(()),
                n => Err(format!("{n} pools")),
            }
        },
    )
    .await;
    // A pool that is kept alive stays.
    ok_json(
        &server,
        &key,
        &[
            "job",
            "create",
            "kept",
            "--auto-pool",
            "nodes=1,slots=1,keep-alive",
            "--on-all-tasks-complete",
            "terminate-job",
        ],
    );
    ok_json(&server, &key, &["task", "add", "kept", "t1", "--", "true"]);
    wait_job(&client, "kept", Duration::from_secs(60)).await;
    // An auto pool takes its job's id: a pool of that name refuses it,
    // and no job is made.
    local_pool(&client, "shared", 0, 1).await;
    let err = refused(
        &server,
        &key,
        &["job", "create", "shared", "--auto-pool", "nodes=1,slots=1"],
    );
    assert!(err.contains("takes its job's id"), "{err}");
    assert!(refused(&server, &key, &["job", "show", "shared"]).contains("JobNotFound"));

    // Each run of a schedule makes its own pool, under its job's id.
    let tasks = open_tempdir();
    let file = tasks.path().join("t.jsonl");
    std::fs::write(&file, "{\"id\": \"t1\", \"command\": \"true\"}\n").unwrap();
    ok_json(
        &server,
        &key,
        &[
            "schedule",
            "create",
            "nightly",
            "--once",
            "--auto-pool",
            "nodes=1,slots=1",
            "--on-all-tasks-complete",
            "terminate-job",
            "--tasks-file",
            file.to_str().unwrap(),
        ],
    );
    eventually(
        Duration::from_secs(60),
        "the run's job completes",
        || async {
            match client
                .call(&Request::ShowJob {
                    job: JobId::new("nightly-job-1").unwrap(),
                })
                .await
            {
                Ok(Response::Job(j))
                    if j.state.status == lote::domain::job::JobStatus::Completed =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the run's pool is deleted",
        || async {
            let ids: Vec<String> = list_pools(&client)
                .await
                .iter()
                .map(|p| p.state.spec.as_ref().unwrap().id.to_string())
                .collect();
            if ids == ["kept", "shared"] {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;
    stop_and_replay(server);
}

/// A job that ended while its server was down (here: written to the log
/// with no server running, so no supervisor saw it end) has its auto pool
/// deleted when a server starts on the log.
#[test]
fn a_restart_deletes_the_pools_of_jobs_that_ended_while_it_was_down() {
    use lote::actors::{Core, CoreConfig};
    use lote::domain::account::{Account, AccountCommand};
    use lote::domain::job::{AutoPool, Job, JobCommand, JobSpec};
    use lote::domain::pool::PoolSpec;
    use lote::store::{EventStore, StoreOptions, StreamId};
    use lote::types::{AccountName, PoolId, Principal};
    let data = open_tempdir();
    {
        let clock = std::sync::Arc::new(lote::clock::SystemClock);
        let store = EventStore::open(data.path(), StoreOptions::default(), clock.clone()).unwrap();
        let core = Core::new(store, clock.clone(), CoreConfig::default());
        actix::System::new().block_on(async move {
            let ctx = || {
                lote::domain::Ctx::live(
                    clock.as_ref(),
                    Principal::Admin,
                    lote::clock::new_request_id(),
                )
            };
            let acme = AccountName::new("acme").unwrap();
            core.execute::<Account>(
                &StreamId::account(&acme),
                AccountCommand::CreateAccount { name: acme.clone() },
                ctx(),
            )
            .await
            .unwrap();
            let (job, pool) = (JobId::new("gone").unwrap(), PoolId::new("gone").unwrap());
            let mut spec = JobSpec::on_pool(job.clone(), acme.clone(), pool.clone());
            spec.auto_pool = Some(Box::new(AutoPool {
                pool: PoolSpec::fixed(pool, acme.clone(), 0, 1),
                keep_alive: false,
            }));
            core.create_job_with_tasks(spec, vec![], ctx(), vec![])
                .await
                .unwrap();
            let reason = "ended while no server ran".to_string();
            core.execute::<Job>(
                &StreamId::job(&acme, &job),
                JobCommand::TerminateJob { reason },
                ctx(),
            )
            .await
            .unwrap();
        });
    }
    let server = ServerProcess::start_in(data.path(), &[]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deleted = runtime.block_on(async {
        let Ok(Response::Keys { primary, .. }) = server
            .admin()
            .call(&Request::ShowKeys {
                name: AccountName::new("acme").unwrap(),
            })
            .await
        else {
            panic!("no keys")
        };
        let account = lote::api::Credential::Account {
            account: AccountName::new("acme").unwrap(),
        };
        let client = server.client(account, &primary);
        eventually(
            Duration::from_secs(30),
            "the ended job's pool is deleted",
            || async {
                match list_pools(&client).await.len() {
                    0 => Ok(true),
                    n => Err(format!("{n} pool(s) left")),
                }
            },
        )
        .await
    });
    let trail = stop_and_audit(server, &["pool/acme/gone"]).join("\n");
    assert!(deleted && trail.contains("PoolDeleted"), "{trail}");
}
