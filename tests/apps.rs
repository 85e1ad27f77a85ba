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

async fn task_attempts(client: &lote::client::Client, job: &str, task: &str) -> u32 {
    let t = compute_support::task(client, job, task).await;
    t.state.attempt
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
}
