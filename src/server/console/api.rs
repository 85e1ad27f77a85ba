//! The console's JSON API: any request of the message API, by the same
//! dispatcher, plus what a page needs that the wire protocol answers in
//! pieces (a filtered task page, a CSV export, an audit trail, a pool's
//! samples).

use hyper::body::Incoming;
use hyper::Request;

use super::http::{self, Reply};
use super::session::SignedIn;
use super::Console;
use crate::api::{Request as ApiRequest, Response as ApiResponse};
use crate::domain::task::Task;
use crate::domain::Versioned;
use crate::types::{json_name, JobId, NodeId, PoolId, TaskId, Timestamp};

/// Largest request body the console takes for a call (a batch of
/// `AddTasks` fits well within it).
const CALL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most tasks one filtered page looks at before it answers (with where to
/// go on), so that a rare state in a huge job never stalls a request.
const TASK_SCAN_MAX: usize = 20_000;
/// Most samples a pool chart gets.
const SAMPLES_MAX: usize = 2880;

fn bad(what: impl std::fmt::Display) -> Reply {
    Reply::error(400, &what.to_string())
}

/// A required query parameter, parsed as one of lote's ids.
pub(super) fn param<T>(
    q: &std::collections::HashMap<String, String>,
    name: &str,
    parse: impl Fn(String) -> Result<T, crate::types::IdError>,
) -> Result<T, Reply> {
    let raw = q
        .get(name)
        .ok_or_else(|| bad(format!("missing ?{name}=")))?;
    parse(raw.clone()).map_err(bad)
}

/// The state word a page filters by.
fn state_word(task: &Task) -> String {
    json_name(&task.status)
}

impl Console {
    /// `POST /api/call`: one message-API request as JSON.
    pub(super) async fn call(&self, req: Request<Incoming>, who: &SignedIn) -> Reply {
        let body = match http::body(req, CALL_BYTES_MAX).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let request: ApiRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(format!("not a request lote knows: {e}")),
        };
        match self.service.console_call(who.caller.clone(), request).await {
            Ok(response) => Reply::json(200, &response),
            Err(e) => Reply::api_error(&e),
        }
    }

    /// `GET /api/audit?entity=task/ACCOUNT/JOB/TASK[&at=RFC3339]`.
    pub(super) async fn audit(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let Some(entity) = q.get("entity") else {
            return bad("missing ?entity=");
        };
        let at = match q.get("at").filter(|a| !a.is_empty()) {
            None => None,
            Some(text) => match Timestamp::parse(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    return bad(format!(
                        "at={text}: {e} (RFC 3339, e.g. 2026-12-06T10:00:00Z)"
                    ))
                }
            },
        };
        match self.service.console_audit(&who.user, entity, at).await {
            Ok(audit) => Reply::json(200, &audit),
            Err(e) => Reply::api_error(&e),
        }
    }

    /// `GET /api/pool-samples?pool=P`: the pool's recorded load samples,
    /// with the names of their values.
    pub(super) async fn pool_samples(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let Some(account) = who.user.account() else {
            return Reply::error(
                403,
                "pools belong to accounts: sign in with an account's key",
            );
        };
        let q = http::query(req);
        let pool = match param(&q, "pool", PoolId::new) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        match self
            .service
            .console_pool_samples(account, &pool, SAMPLES_MAX)
            .await
        {
            Ok(samples) => {
                let names: Vec<&str> = crate::domain::autoscale::Metric::ALL
                    .iter()
                    .map(|m| m.name())
                    .collect();
                Reply::json(
                    200,
                    &serde_json::json!({ "names": names, "samples": samples }),
                )
            }
            Err(e) => Reply::api_error(&e),
        }
    }

    /// `GET /api/waits?job=J[&task=T]`: why a job's queued tasks (or one
    /// task) wait, in the same words as `lote task explain`.
    pub(super) async fn waits(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        use crate::api::explain;
        let q = http::query(req);
        let job = match param(&q, "job", JobId::new) {
            Ok(j) => j,
            Err(reply) => return reply,
        };
        let request = match q.get("task") {
            Some(task) => match TaskId::new(task.clone()) {
                Ok(task) => ApiRequest::ExplainTask {
                    job: job.clone(),
                    task,
                },
                Err(e) => return bad(e),
            },
            None => ApiRequest::ExplainJob { job: job.clone() },
        };
        let answer = match self.service.console_call(who.caller.clone(), request).await {
            Ok(a) => a,
            Err(e) => return Reply::api_error(&e),
        };
        match answer {
            ApiResponse::JobWaits { groups, pool, .. } => {
                let groups: Vec<serde_json::Value> = groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "tasks": g.tasks,
                            "slots": g.slots,
                            "reasons": g.reasons,
                            "text": explain::summary(g, &pool, job.as_str()),
                        })
                    })
                    .collect();
                Reply::json(200, &serde_json::json!({ "groups": groups, "pool": pool }))
            }
            ApiResponse::TaskExplanation {
                status, waiting, ..
            } => {
                let words: Vec<String> = waiting
                    .as_ref()
                    .map(|w| {
                        w.reasons
                            .iter()
                            .map(|r| r.words(&w.pool, job.as_str()))
                            .collect()
                    })
                    .unwrap_or_default();
                Reply::json(
                    200,
                    &serde_json::json!({ "status": status, "waiting": waiting, "reasons": words }),
                )
            }
            _ => Reply::error(500, "unexpected reply to an explanation"),
        }
    }

    /// `GET /api/node-tasks?pool=&node=`: what a node runs now.
    pub(super) async fn node_tasks(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let Some(account) = who.user.account() else {
            return Reply::error(
                403,
                "nodes belong to accounts: sign in with an account's key",
            );
        };
        let q = http::query(req);
        let (pool, node) = match (
            param(&q, "pool", PoolId::new),
            param(&q, "node", NodeId::new),
        ) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let show = ApiRequest::ShowNode {
            pool: pool.clone(),
            node: node.clone(),
        };
        if let Err(e) = self.service.console_call(who.caller.clone(), show).await {
            return Reply::api_error(&e);
        }
        match self.service.console_node_tasks(account, &pool, &node).await {
            Ok(tasks) => {
                let tasks: Vec<serde_json::Value> = tasks
                    .into_iter()
                    .map(|(job, task, attempt)| serde_json::json!({ "job": job, "task": task, "attempt": attempt }))
                    .collect();
                Reply::json(200, &serde_json::json!({ "tasks": tasks }))
            }
            Err(e) => Reply::api_error(&e),
        }
    }

    /// Up to `limit` tasks of `job` after `after` whose state is `state`
    /// (any when empty) and whose id contains `search`; and where to go on.
    async fn task_page(
        &self,
        who: &SignedIn,
        job: &JobId,
        mut after: Option<TaskId>,
        filter: (&str, &str),
        limit: usize,
    ) -> Result<(Vec<Versioned<Task>>, Option<TaskId>), Reply> {
        let (state, search) = filter;
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            // Unfiltered, a page is exactly a page of the listing; filtered,
            // the listing is read in its largest pages.
            let unfiltered = state.is_empty() && search.is_empty();
            let request = ApiRequest::ListTasks {
                job: job.clone(),
                after: after.clone(),
                limit: if unfiltered { limit as u32 } else { 1000 },
            };
            let (items, next) = match self.service.console_call(who.caller.clone(), request).await {
                Ok(ApiResponse::Tasks { items, next }) => (items, next),
                Ok(_) => return Err(Reply::error(500, "unexpected reply to ListTasks")),
                Err(e) => return Err(Reply::api_error(&e)),
            };
            for task in items {
                scanned += 1;
                let id = task.state.spec.as_ref().map(|s| s.id.clone());
                let matches = (state.is_empty() || state_word(&task.state) == state)
                    && (search.is_empty()
                        || id.as_ref().is_some_and(|i| i.as_str().contains(search)));
                after = id;
                if matches {
                    out.push(task);
                    if out.len() == limit {
                        return Ok((out, after));
                    }
                }
            }
            if next.is_none() {
                return Ok((out, None));
            }
            if scanned >= TASK_SCAN_MAX {
                return Ok((out, after));
            }
        }
    }

    /// `GET /api/tasks?job=J[&state=&q=&after=&limit=]`: a page of the
    /// job's task table, filtered on the server.
    pub(super) async fn tasks(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let job = match param(&q, "job", JobId::new) {
            Ok(j) => j,
            Err(reply) => return reply,
        };
        let after = match q.get("after").filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => match TaskId::new(a.clone()) {
                Ok(t) => Some(t),
                Err(e) => return bad(e),
            },
        };
        let limit = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100usize)
            .clamp(1, 1000);
        let filter = (
            q.get("state").map(String::as_str).unwrap_or_default(),
            q.get("q").map(String::as_str).unwrap_or_default(),
        );
        match self.task_page(who, &job, after, filter, limit).await {
            Ok((items, next)) => {
                Reply::json(200, &serde_json::json!({ "items": items, "next": next }))
            }
            Err(reply) => reply,
        }
    }

    /// `GET /api/tasks.csv?job=J[&state=&q=]`: every matching task as CSV,
    /// read page by page and answered whole (about 100 bytes a task).
    pub(super) async fn tasks_csv(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let job = match param(&q, "job", JobId::new) {
            Ok(j) => j,
            Err(reply) => return reply,
        };
        let state = q.get("state").cloned().unwrap_or_default();
        let search = q.get("q").cloned().unwrap_or_default();
        let mut text = String::from(
            "id,state,exit_code,failure,attempt,retries,node,added_at,started_at,completed_at,command\n",
        );
        let mut after = None;
        loop {
            let (items, next) = match self
                .task_page(who, &job, after, (&state, &search), 1000)
                .await
            {
                Ok(page) => page,
                Err(reply) => return reply,
            };
            for t in &items {
                csv_row(&mut text, &t.state);
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Reply::bytes(200, "text/csv; charset=utf-8", text.into_bytes()).header(
            hyper::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{job}-tasks.csv\""),
        )
    }
}

/// A field as CSV wants it: quoted when it holds a separator, a quote or
/// a line break; and never read as a formula by a spreadsheet.
fn csv_field(out: &mut String, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@']);
    if formula || text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_row(out: &mut String, t: &Task) {
    let json = serde_json::to_value(t).unwrap_or_default();
    let pick = |path: &[&str]| {
        let mut v = &json;
        for p in path {
            v = &v[*p];
        }
        match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    };
    let fields = [
        pick(&["spec", "id"]),
        state_word(t),
        pick(&["last_result", "exit_code"]),
        t.last_result
            .as_ref()
            .and_then(|r| r.failure.as_ref())
            .map(|(category, _)| json_name(category))
            .unwrap_or_default(),
        t.attempt.to_string(),
        t.retry_count.to_string(),
        pick(&["placement", "node"]),
        pick(&["added_at"]),
        pick(&["started_at"]),
        pick(&["completed_at"]),
        t.spec
            .as_ref()
            .map(|s| match &s.command_line {
                crate::domain::spec::CommandLine::Shell(text) => text.clone(),
                crate::domain::spec::CommandLine::Argv(argv) => argv.join(" "),
            })
            .unwrap_or_default(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        let f = |t: &str| {
            let mut s = String::new();
            csv_field(&mut s, t);
            s
        };
        assert_eq!(f("plain"), "plain");
        assert_eq!(f("a,b"), "\"a,b\"");
        assert_eq!(f("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(f("=cmd()"), "\"'=cmd()\"");
    }
}
