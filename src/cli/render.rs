//! A response as JSON (for scripts) and as text (for people).

use serde_json::{json, Value};

use super::output::{opt, table, trace_line, with_version, word};
use super::views;
use lote::api::{FileAnswer, FileKind, Response};

/// A response as (JSON, text).
pub fn render(response: Response) -> (Value, String) {
    use Response as R;
    match response {
        r @ (R::Pong { .. }
        | R::Whoami { .. }
        | R::Done { .. }
        | R::Created { .. }
        | R::TasksAdded { .. }
        | R::Subscribed { .. }
        | R::Work { .. }
        | R::Recorded
        | R::Registered { .. }
        | R::Reported { .. }
        | R::Joined { .. }) => acknowledgement(r),
        r @ (R::Account(_) | R::Accounts(_) | R::Keys { .. }) => accounts(r),
        r @ (R::Pool(_)
        | R::Pools(_)
        | R::JoinToken { .. }
        | R::Node(_)
        | R::Nodes(_)
        | R::Job(_)
        | R::Jobs(_)
        | R::Schedule(_)
        | R::Schedules(_)
        | R::Task(_)
        | R::Tasks { .. }
        | R::TaskOutput { .. }) => entities(r),
        r @ (R::TaskExplanation { .. } | R::JobWaits { .. }) => waits(r),
        r @ (R::AutoscaleEvaluation(_) | R::AutoscaleRuns(_) | R::AutoscaleReplay(_)) => {
            autoscale(r)
        }
        other => files(&other).unwrap_or_else(|| unshaped(&other)),
    }
}

/// A reply this client has no shape for (a newer server's): shown as is.
fn unshaped(other: &Response) -> (Value, String) {
    (
        json!({ "answer": format!("{other:?}") }),
        format!("{other:?}\n"),
    )
}

/// Replies that acknowledge: pong, done, created, recorded.
fn acknowledgement(response: Response) -> (Value, String) {
    match response {
        Response::Pong { server_time } => (
            json!({ "server_time": server_time }),
            format!("pong {server_time}\n"),
        ),
        Response::Whoami { principal } => {
            (json!({ "principal": principal }), format!("{principal}\n"))
        }
        Response::Done { entity, version } => (
            json!({ "entity": entity, "version": version }),
            format!("ok: {entity} is at version {version}\n"),
        ),
        Response::Created { entity } => {
            (json!({ "created": entity }), format!("created {entity}\n"))
        }
        Response::TasksAdded { job, count } => (
            json!({ "job": job, "tasks_added": count }),
            format!("added {count} task(s) to job {job}\n"),
        ),
        Response::Subscribed { from } => (
            json!({ "subscribed_from": from }),
            format!("subscribed from {from}\n"),
        ),
        Response::Work { assignments, .. } => (
            json!({ "assignments": assignments.len() }),
            format!("{} assignment(s)\n", assignments.len()),
        ),
        Response::Recorded | Response::Registered { .. } => {
            (json!({ "recorded": true }), "recorded\n".into())
        }
        Response::Reported { results } => {
            let refused = results.iter().filter(|r| r.is_err()).count();
            (
                json!({ "recorded": results.len() - refused, "refused": refused }),
                format!("{} recorded, {refused} refused\n", results.len() - refused),
            )
        }
        Response::Joined { node, credential } => (
            json!({ "node": node, "credential": credential }),
            format!("joined as node {node}\n"),
        ),
        other => unshaped(&other),
    }
}

/// Accounts and their keys.
fn accounts(response: Response) -> (Value, String) {
    match response {
        Response::Account(a) => {
            let value = serde_json::to_value(&a).unwrap_or(Value::Null);
            let text = format!(
                "account {}\n  status: {}\n  created: {}\n  keys rotated: {}\n",
                a.name,
                word(&a.status),
                opt(&a.created_at),
                opt(&a.keys_rotated_at)
            );
            (value, text)
        }
        Response::Accounts(list) => {
            let value = serde_json::to_value(&list).unwrap_or(Value::Null);
            let rows = list
                .iter()
                .map(|a| vec![a.name.to_string(), word(&a.status), opt(&a.created_at)])
                .collect();
            (value, table(&["name", "status", "created"], rows))
        }
        Response::Keys {
            account,
            primary,
            secondary,
        } => {
            // The same keys as Azure clients take them (base64), for the
            // Azure Batch gateway.
            let (az1, az2) = (
                lote::api::shared_key::azure_key(&primary),
                lote::api::shared_key::azure_key(&secondary),
            );
            (
                json!({ "account": account, "primary": primary, "secondary": secondary,
                    "azure_primary": az1, "azure_secondary": az2 }),
                format!(
                    "account {account}\n  primary:   {primary}\n  secondary: {secondary}\nUse one with: lote --account {account} --key KEY ...\nAs Azure Batch SDKs take them (lote server --azure-listen): {az1} / {az2}\n"
                ),
            )
        }
        other => unshaped(&other),
    }
}

/// Pools, nodes, jobs and tasks, one or a list; a task's output.
fn entities(response: Response) -> (Value, String) {
    match response {
        Response::Pool(p) => (with_version(&p), views::pool(&p.state, p.version)),
        Response::Pools(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|p| {
                    let spec = p.state.spec.as_ref();
                    vec![
                        spec.map(|s| s.id.to_string()).unwrap_or_default(),
                        word(&p.state.status),
                        p.state.target_nodes.to_string(),
                        spec.map(|s| s.node_size.task_slots.to_string())
                            .unwrap_or_default(),
                        word(&p.state.resize),
                    ]
                })
                .collect();
            (
                value,
                table(&["id", "status", "target", "slots", "resize"], rows),
            )
        }
        Response::JoinToken { pool, token } => (
            json!({ "pool": pool, "token": token }),
            format!("{token}\n"),
        ),
        Response::Node(n) => (with_version(&n), views::node(&n.state, n.version)),
        Response::Nodes(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|n| vec![opt(&n.state.id), word(&n.state.state), n.state.name.clone()])
                .collect();
            (value, table(&["id", "state", "name"], rows))
        }
        Response::Job(j) => (with_version(&j), views::job(&j.state, j.version)),
        Response::Schedule(s) => (with_version(&*s), views::schedule(&s.state, s.version)),
        Response::Schedules(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|s| {
                    let st = &s.state;
                    vec![
                        st.spec
                            .as_ref()
                            .map(|s| s.id.to_string())
                            .unwrap_or_default(),
                        word(&st.status),
                        opt(&st.next_due),
                        st.runs_started.to_string(),
                        (st.skipped_previous_active + st.missed_start_window + st.skipped_disabled)
                            .to_string(),
                    ]
                })
                .collect();
            (
                value,
                table(&["id", "status", "next run", "runs", "skipped"], rows),
            )
        }
        Response::Jobs(list) => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|j| {
                    let spec = j.state.spec.as_ref();
                    vec![
                        spec.map(|s| s.id.to_string()).unwrap_or_default(),
                        word(&j.state.status),
                        spec.map(|s| s.pool.to_string()).unwrap_or_default(),
                        j.state.tasks_added.to_string(),
                        j.state.unfinished().to_string(),
                    ]
                })
                .collect();
            (
                value,
                table(&["id", "status", "pool", "tasks", "unfinished"], rows),
            )
        }
        Response::Task(t) => (with_version(&t), views::task(&t.state, t.version)),
        Response::Tasks { items: list, .. } => {
            let value = Value::Array(list.iter().map(with_version).collect());
            let rows = list
                .iter()
                .map(|t| {
                    let s = &t.state;
                    let result = s.last_result.as_ref();
                    vec![
                        s.spec
                            .as_ref()
                            .map(|s| s.id.to_string())
                            .unwrap_or_default(),
                        views::task_state(s),
                        result
                            .and_then(|r| r.exit_code)
                            .map_or("-".into(), |c| c.to_string()),
                        s.placement
                            .as_ref()
                            .map_or("-".into(), |p| p.node.to_string()),
                        s.attempt.to_string(),
                    ]
                })
                .collect();
            (
                value,
                table(&["id", "state", "exit", "node", "attempts"], rows),
            )
        }
        Response::TaskOutput { chunk, .. } => (
            json!({ "offset": chunk.offset, "bytes": chunk.data.len(), "size": chunk.size }),
            String::from_utf8_lossy(&chunk.data).into_owned(),
        ),
        other => unshaped(&other),
    }
}

/// Why a task or a job's tasks wait, in words.
fn waits(response: Response) -> (Value, String) {
    match response {
        Response::TaskExplanation {
            job,
            task,
            status,
            waiting,
        } => {
            let value = json!({
                "job": job,
                "task": task,
                "status": status,
                "waiting": waiting.as_ref().map(|w| json!({
                    "slots": w.slots,
                    "reasons": w.reasons,
                    "in_words": w.reasons.iter().map(|r| r.words(&w.pool, job.as_str())).collect::<Vec<_>>(),
                })),
            });
            let text = match &waiting {
                None => format!(
                    "task {task} of job {job} is {}: it is not waiting (lote task show {job} {task})\n",
                    word(&status)
                ),
                Some(w) if w.reasons.is_empty() => format!(
                    "task {task} of job {job} waits for placement: a node has room and it is next\n"
                ),
                Some(w) => {
                    let mut t = format!(
                        "task {task} of job {job} waits (needs {} slot(s) in pool {}):\n",
                        w.slots, w.pool.pool
                    );
                    for r in &w.reasons {
                        t.push_str(&format!("  - {}\n", r.words(&w.pool, job.as_str())));
                    }
                    t
                }
            };
            (value, text)
        }
        Response::JobWaits { job, groups, pool } => {
            let lines: Vec<String> = groups
                .iter()
                .map(|g| lote::api::explain::summary(g, &pool, job.as_str()))
                .collect();
            let mut text = String::new();
            for l in &lines {
                text.push_str(&format!("waiting: {l}\n"));
            }
            (
                json!({ "job": job, "groups": groups, "summary": lines }),
                text,
            )
        }
        other => unshaped(&other),
    }
}

/// Autoscale evaluations, run history and replays.
fn autoscale(response: Response) -> (Value, String) {
    match response {
        Response::AutoscaleEvaluation(e) => {
            let value = serde_json::to_value(&e).unwrap_or(Value::Null);
            let run = &e.run;
            let mut text = format!("results: {}\n", run.results);
            match (&run.error, run.target_after) {
                (Some(err), _) => text.push_str(&format!(
                    "error: {} ({}); the pool would be left as it is\n",
                    err.message, err.code
                )),
                (None, Some(t)) => text.push_str(&format!(
                    "would set: {t} node(s) (target now {}), deallocation {}\n",
                    run.target_before,
                    word(&run.deallocation)
                )),
                (None, None) => text.push_str("would set: nothing (the formula sets no target)\n"),
            }
            if e.stopped {
                text.push_str("stopped by stop()\n");
            }
            text.push_str(&format!("inputs: {}\ntrace:\n", run.inputs));
            for t in &e.trace {
                text.push_str(&format!("  {}\n", trace_line(t)));
            }
            if e.trace_dropped > 0 {
                text.push_str(&format!("  ... and {} more\n", e.trace_dropped));
            }
            (
                json!({ "run": value["run"], "stopped": e.stopped, "trace": value["trace"], "trace_dropped": e.trace_dropped }),
                text,
            )
        }
        Response::AutoscaleRuns(runs) => {
            let value = serde_json::to_value(&runs).unwrap_or(Value::Null);
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.at.to_string(),
                        r.target_before.to_string(),
                        r.target_after.map_or("-".into(), |t| t.to_string()),
                        match &r.error {
                            Some(e) => format!("error: {}", e.message),
                            None => r.results.clone(),
                        },
                    ]
                })
                .collect();
            let mut text = table(&["at", "before", "after", "results"], rows);
            if runs.is_empty() {
                text = "no autoscale runs yet (enable with: lote pool autoscale enable POOL --formula ...)\n".into();
            }
            (value, text)
        }
        Response::AutoscaleReplay(steps) => {
            let value = serde_json::to_value(&steps).unwrap_or(Value::Null);
            let rows = steps
                .iter()
                .map(|s| {
                    vec![
                        s.at.to_string(),
                        s.would_target.map_or("-".into(), |t| t.to_string()),
                        s.actual_target.to_string(),
                        s.actual_nodes.to_string(),
                        s.samples.to_string(),
                        s.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            (
                value,
                table(
                    &[
                        "at",
                        "would set",
                        "real target",
                        "real nodes",
                        "samples",
                        "error",
                    ],
                    rows,
                ),
            )
        }
        other => unshaped(&other),
    }
}

/// Renders the file-related answers.
fn files(response: &Response) -> Option<(Value, String)> {
    Some(match response {
        Response::Packages(list) => {
            let mut rows = Vec::new();
            for p in list {
                for v in &p.versions {
                    let default = p.default_version.as_deref() == Some(v.version.as_str());
                    rows.push(vec![
                        p.id.clone(),
                        v.version.clone(),
                        if default { "yes".into() } else { String::new() },
                        v.size.to_string(),
                        v.uploaded_at.to_string(),
                    ]);
                }
            }
            (
                json!({ "packages": list }),
                table(&["id", "version", "default", "bytes", "uploaded"], rows),
            )
        }
        Response::Files {
            node,
            answer: FileAnswer::Listing(entries),
            ..
        } => {
            let rows = entries
                .iter()
                .map(|e| {
                    let kind = match e.kind {
                        FileKind::File => "file",
                        FileKind::Directory => "dir",
                        FileKind::Symlink => "link",
                    };
                    vec![
                        e.path.clone(),
                        kind.to_string(),
                        e.size.to_string(),
                        e.modified.to_string(),
                    ]
                })
                .collect();
            let value = json!({ "node": node, "files": entries.iter().map(|e| json!({
                "path": e.path, "kind": e.kind, "size": e.size, "modified": e.modified,
            })).collect::<Vec<_>>() });
            (value, table(&["path", "kind", "bytes", "modified"], rows))
        }
        _ => return None,
    })
}
