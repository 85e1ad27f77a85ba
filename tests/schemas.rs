//! `schemas/` and `docs/rejections.md` are generated from the Rust types;
//! these tests fail when they are stale. Regenerate with
//! `LOTE_UPDATE_SCHEMAS=1 cargo test --test schemas`.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_or_update(path: PathBuf, expected: &str, stale: &mut Vec<String>) {
    let update = std::env::var_os("LOTE_UPDATE_SCHEMAS").is_some();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != expected {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, expected).unwrap();
        } else {
            stale.push(path.display().to_string());
        }
    }
}

#[test]
fn schemas_are_current() {
    let mut stale = Vec::new();
    let all = lote::schema::all();
    for (name, text) in &all {
        // Every schema is valid JSON with a title.
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(
            value.get("title").is_some() || value.get("$schema").is_some(),
            "{name}"
        );
        check_or_update(root().join("schemas").join(name), text, &mut stale);
    }
    // Each event type of each aggregate appears in its schema.
    let task = &all
        .iter()
        .find(|(n, _)| *n == "events/task.json")
        .unwrap()
        .1;
    for variant in [
        "TaskAdded",
        "TaskAssigned",
        "TaskStarted",
        "TaskCompleted",
        "TaskRetried",
        "TaskRequeued",
        "TaskTerminated",
        "TaskDeleted",
    ] {
        assert!(
            task.contains(variant),
            "{variant} missing from the task event schema"
        );
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run LOTE_UPDATE_SCHEMAS=1 cargo test --test schemas): {stale:?}"
    );
}

#[test]
fn rejection_table_is_current() {
    let mut stale = Vec::new();
    let table = lote::domain::rejection::rejection_table_markdown();
    assert!(table.contains("| 25 | StaleAttempt | no |"), "{table}");
    check_or_update(root().join("docs/rejections.md"), &table, &mut stale);
    assert!(
        stale.is_empty(),
        "stale: {stale:?} (run LOTE_UPDATE_SCHEMAS=1 cargo test --test schemas)"
    );
}
