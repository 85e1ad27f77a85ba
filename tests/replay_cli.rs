//! `lote demo`, `lote replay` and `lote audit` as a user runs them: the
//! real binary on a real data directory.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lote::domain::job::JobEvent;
use lote::domain::task::TaskBucket;
use lote::store::{EventStore, ExpectedVersion, StoreOptions, StreamAppend, StreamId};
use lote::types::{Causation, Principal, RequestId, TaskId};

fn lote(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lote"))
        .args(args)
        .env_remove("LOTE_DATA_DIR")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_demo(dir: &Path, tasks: &str) -> String {
    let out = lote(&[
        "demo",
        "--data-dir",
        dir.to_str().unwrap(),
        "--tasks",
        tasks,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Copies the log's files (the top level of the data directory; inputs,
/// outputs and node directories are not the log).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn demo_then_replay_and_audit_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_demo(&data, "60");
    assert!(
        out.contains("60 tasks, 60 succeeded, 0 failed, 4 attempts retried; job is completed"),
        "{out}"
    );
    assert!(
        out.contains("60 outputs in the tasks' manifests, 60 downloaded"),
        "{out}"
    );
    // The results came back from the blob store: one digest per frame,
    // the SHA-256 of the input that was uploaded.
    let result = std::fs::read_to_string(data.join("results/frame-00003.sha256")).unwrap();
    let input = std::fs::read(data.join("inputs/frame-00003.raw")).unwrap();
    use sha2::Digest;
    assert_eq!(
        result.trim(),
        lote::blob::hex(&sha2::Sha256::digest(&input))
    );
    assert!(out.contains("no mismatch"), "{out}");
    // Figure 5: the example app's run, merged into an animation with a
    // preview.
    assert!(
        out.contains("app mandelzoom 1.0 run succeeded: 7 tasks"),
        "{out}"
    );
    for png in ["zoom.png", "preview.png"] {
        let bytes = std::fs::read(data.join("results-app").join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
    }

    // Replay on a copy of the directory, as an auditor would.
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    let out = lote(&["replay", "--data-dir", copy.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mismatches"].as_array().unwrap().len(), 0);
    // The frames, then the app's run: 6 render tasks and the merge.
    assert_eq!(report["entities"]["task"]["completed"], 67);
    assert_eq!(report["entities"]["job"]["completed"], 2);
    assert_eq!(report["entities"]["app"]["published"], 1);
    // The demo deletes its pool at the end, and the run's pool goes with
    // its run: the 2 nodes of each were removed.
    assert_eq!(report["entities"]["node"]["removed"], 4);
    assert!(report["events"].as_u64().unwrap() > 60 * 4);
    assert!(
        report["snapshots_checked"].as_u64().unwrap() >= 1,
        "the job stream passed 100 events: {report}"
    );
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);

    // Find the demo's names from its log.
    let store = EventStore::open_read_only(&copy).unwrap();
    let first = store.read_all(1, 1).unwrap().remove(0);
    let account = first.stream.segments()[0].to_string();
    drop(store);

    let task = format!("task/{account}/frames/frame-00000");
    let out = lote(&[
        "audit",
        "--data-dir",
        copy.to_str().unwrap(),
        &task,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let trail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let history = trail["history"].as_array().unwrap();
    let types: Vec<&str> = history
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .filter(|t| *t != "TaskStarted")
        .collect();
    // frame 0 fails once (every 17th frame does) and is retried. (An
    // attempt that ends within the agent's start-report delay is recorded
    // without a TaskStarted; a slower one has it.)
    assert_eq!(
        types,
        [
            "TaskAdded",
            "TaskAssigned",
            "TaskCompleted",
            "TaskRetried",
            "TaskAssigned",
            "TaskOutputsUploaded",
            "TaskCompleted"
        ]
    );
    // The successful attempt's output is in the blob store, named in the
    // manifest recorded with its completion.
    let uploaded = history
        .iter()
        .find(|e| e["event_type"] == "TaskOutputsUploaded")
        .unwrap();
    let manifest = uploaded.to_string();
    assert!(manifest.contains("frames/frame-00000.sha256"), "{manifest}");
    assert_eq!(history[0]["principal"], format!("account:{account}"));
    let completed = history
        .iter()
        .find(|e| e["event_type"] == "TaskCompleted")
        .unwrap();
    let reported_by = completed["principal"].as_str().unwrap();
    assert!(
        reported_by.starts_with(&format!("node:{account}/render/node-")),
        "{reported_by}"
    );
    assert!(history[1]["changed"]["status"].is_array());
    assert_eq!(trail["state"]["status"], "completed");
    assert_eq!(trail["state"]["retry_count"], 1);

    // --at: the state as of the first event's time, before any attempt.
    let at = history[0]["recorded_at"].as_str().unwrap();
    let out = lote(&[
        "audit",
        "--data-dir",
        copy.to_str().unwrap(),
        &task,
        "--at",
        at,
        "--json",
    ]);
    let then: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(then["state"]["status"], "active");
    assert_eq!(then["history"].as_array().unwrap().len(), 1);

    // The account's keys never show in audit output.
    let out = lote(&[
        "audit",
        "--data-dir",
        copy.to_str().unwrap(),
        &format!("account/{account}"),
    ]);
    assert!(out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("<redacted>") && shown.contains("AccountCreated"),
        "{shown}"
    );

    // Clear errors: exit 2 for bad arguments, 1 for failures.
    let out = lote(&["audit", "--data-dir", copy.to_str().unwrap(), "widget/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not an entity name"), "{}", text(&out));
    let out = lote(&[
        "audit",
        "--data-dir",
        copy.to_str().unwrap(),
        &format!("job/{account}/nope"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no such entity"), "{}", text(&out));
    let out = lote(&[
        "audit",
        "--data-dir",
        copy.to_str().unwrap(),
        &task,
        "--at",
        "yesterday",
    ]);
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(2));
    let out = lote(&[
        "replay",
        "--data-dir",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not a lote data directory"),
        "{}",
        text(&out)
    );
}

#[test]
fn replay_reports_a_log_that_contradicts_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_demo(&data, "5");
    let account = {
        let store = EventStore::open_read_only(&data).unwrap();
        store.read_all(1, 1).unwrap().remove(0).stream.segments()[0].to_string()
    };
    // A count change for a task that never existed: the job's counts no
    // longer add up to its tasks.
    {
        let store =
            EventStore::open(&data, StoreOptions::default(), Arc::new(common::clock())).unwrap();
        let bogus = JobEvent::JobTaskCountsChanged {
            task: TaskId::new("ghost").unwrap(),
            from: None,
            to: Some(TaskBucket::Succeeded),
        };
        let stream = StreamId::parse(&format!("job/{account}/frames")).unwrap();
        store
            .append_blocking(
                vec![StreamAppend {
                    stream,
                    expected: ExpectedVersion::Any,
                    events: vec![lote::domain::to_new_event(&bogus).unwrap()],
                }],
                Causation {
                    request_id: RequestId(uuid::Uuid::from_u128(9)),
                    principal: Principal::Admin,
                },
            )
            .unwrap();
    }
    let out = lote(&["replay", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("job counts"), "{}", text(&out));
}

#[test]
fn help_teaches() {
    let out = lote(&["--help"]);
    let help = text(&out);
    for word in ["demo", "replay", "audit"] {
        assert!(help.contains(word), "{help}");
    }
    let out = lote(&["audit", "--help"]);
    assert!(
        text(&out).contains("task/ACCOUNT/JOB/TASK"),
        "{}",
        text(&out)
    );
}
