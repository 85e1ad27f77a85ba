//! The gateway's operations: one Azure route, one or a few message-API
//! requests through the dispatcher, and Azure's reply.

use hyper::Method;
use serde_json::{json, Value};

use super::common::{
    call, caller_account, check_if_match, empty, entity, id, live_nodes, no_route, page,
    pool_value, pool_vm_size, show_pool, unexpected,
};
use super::model;
use super::{AzError, Call};
use crate::api::{Request, Response};
use crate::domain::job::{DisableTasks, Job, TaskBucket};
use crate::domain::pool::Deallocation;
use crate::domain::Versioned;
use crate::server::console::http::Reply;
use crate::server::Service;
use crate::types::{JobId, PoolId, TaskId};

/// Routes one authenticated request.
pub async fn dispatch(s: &Service, c: &Call) -> Result<Reply, AzError> {
    let seg: Vec<&str> = c.segments.iter().map(String::as_str).collect();
    match (&c.method, seg.as_slice()) {
        (&Method::POST, ["pools"]) => create_pool(s, c).await,
        (_, ["pools", _, "nodes", _, ..] | ["pools", _, "removenodes"]) => {
            super::nodes::route(s, c, &seg).await
        }
        (&Method::GET, ["pools"]) => list_pools(s, c).await,
        (&Method::GET, ["pools", p]) => entity(c, pool_value(s, c, p).await?),
        (&Method::DELETE, ["pools", p]) => {
            check_if_match(c, &model::etag(show_pool(s, c, p).await?.version))?;
            let pool = id(p, "pool", PoolId::new)?;
            call(s, c, Request::DeletePool { pool, force: true }).await?;
            Ok(empty(s, 202, None, None))
        }
        (&Method::PATCH, ["pools", p]) => update_pool(s, c, p, false).await,
        (&Method::POST, ["pools", p, "updateproperties"]) => update_pool(s, c, p, true).await,
        (&Method::POST, ["pools", p, action]) => pool_action(s, c, p, action).await,
        (&Method::GET, ["nodecounts"]) => node_counts(s, c).await,
        (&Method::GET, ["pools", p, "nodes"]) => list_nodes(s, c, p).await,
        (&Method::POST, ["jobs"]) => create_job(s, c).await,
        (&Method::GET, ["jobs"]) => {
            let Response::Jobs(jobs) = call(s, c, Request::ListJobs).await? else {
                return Err(unexpected("ListJobs"));
            };
            let items = jobs.iter().map(|j| model::job_json(&c.base, j)).collect();
            page(c, "/jobs", items)
        }
        (&Method::GET, ["jobs", j]) => entity(c, job_value(s, c, j).await?),
        (&Method::DELETE, ["jobs", j]) => {
            check_if_match(
                c,
                job_value(s, c, j).await?["eTag"]
                    .as_str()
                    .unwrap_or_default(),
            )?;
            call(
                s,
                c,
                Request::DeleteJob {
                    job: id(j, "job", JobId::new)?,
                },
            )
            .await?;
            Ok(empty(s, 202, None, None))
        }
        (&Method::PATCH | &Method::PUT, ["jobs", j]) => update_job(s, c, j).await,
        (&Method::GET, ["jobs", j, "taskcounts"]) => task_counts(s, c, j).await,
        (&Method::POST, ["jobs", j, action])
            if *action != "tasks" && *action != "addtaskcollection" =>
        {
            job_action(s, c, j, action).await
        }
        (&Method::POST, ["jobs", j, "tasks"]) => {
            let body = c.json()?;
            let spec = model::task_spec(&body)?;
            let url = format!("{}/jobs/{j}/tasks/{}", c.base, spec.id);
            let job = id(j, "job", JobId::new)?;
            call(
                s,
                c,
                Request::AddTasks {
                    job,
                    tasks: vec![spec],
                    request_id: c.request_id(),
                },
            )
            .await?;
            Ok(empty(s, 201, Some(&url), Some(model::etag(1))))
        }
        (&Method::POST, ["jobs", j, "addtaskcollection"]) => add_collection(s, c, j).await,
        (&Method::GET, ["jobs", j, "tasks"]) => list_tasks(s, c, j).await,
        (&Method::GET, ["jobs", j, "tasks", t]) => entity(c, task_value(s, c, j, t).await?),
        (&Method::POST, ["jobs", j, "tasks", t, "terminate"]) => {
            let (job, task) = (id(j, "job", JobId::new)?, id(t, "task", TaskId::new)?);
            let reason = "terminated through the Azure Batch API".to_string();
            call(s, c, Request::TerminateTask { job, task, reason }).await?;
            Ok(empty(s, 204, None, None))
        }
        (&Method::DELETE, ["jobs", j, "tasks", t]) => {
            let (job, task) = (id(j, "job", JobId::new)?, id(t, "task", TaskId::new)?);
            call(s, c, Request::DeleteTask { job, task }).await?;
            Ok(empty(s, 200, None, None))
        }
        (&Method::GET, ["jobs", j, "tasks", t, "files"]) => {
            super::files::list(s, c, &super::files::Owner::task(j, t)?).await
        }
        (&Method::GET | &Method::HEAD, ["jobs", j, "tasks", t, "files", path]) => {
            super::files::read(s, c, &super::files::Owner::task(j, t)?, path).await
        }
        (_, ["jobschedules", ..]) => super::schedules::route(s, c, &seg).await,
        (&Method::GET, ["jobs", j, "jobpreparationandreleasetaskstatus"]) => {
            super::nodes::prep_status(s, c, j).await
        }
        (&Method::GET, ["applications"]) => super::nodes::applications(s, c, None).await,
        (&Method::GET, ["applications", a]) => super::nodes::applications(s, c, Some(a)).await,
        _ => Err(no_route(c)),
    }
}

async fn create_pool(s: &Service, c: &Call) -> Result<Reply, AzError> {
    let account = caller_account(c)?;
    let spec = model::pool_spec(&c.json()?, &account, &c.sizes)?;
    let url = format!("{}/pools/{}", c.base, spec.id);
    call(
        s,
        c,
        Request::CreatePool {
            spec,
            request_id: c.request_id(),
        },
    )
    .await?;
    Ok(empty(s, 201, Some(&url), Some(model::etag(1))))
}

async fn list_pools(s: &Service, c: &Call) -> Result<Reply, AzError> {
    let Response::Pools(pools) = call(s, c, Request::ListPools).await? else {
        return Err(unexpected("ListPools"));
    };
    let mut items = vec![];
    for p in &pools {
        let Some(spec) = &p.state.spec else { continue };
        let nodes = live_nodes(s, c, &spec.id).await?.len() as u32;
        items.push(model::pool_json(&c.base, p, nodes, &c.sizes));
    }
    page(c, "/pools", items)
}

async fn list_nodes(s: &Service, c: &Call, p: &str) -> Result<Reply, AzError> {
    let pool = id(p, "pool", PoolId::new)?;
    let size = pool_vm_size(s, c, p).await?;
    let nodes = live_nodes(s, c, &pool).await?;
    let items = nodes
        .iter()
        .map(|n| model::node_json(&c.base, p, n, &size))
        .collect();
    page(c, &format!("/pools/{p}/nodes"), items)
}

/// resize, stopresize (202, the pool `resizing` or back to `steady`);
/// enableautoscale, disableautoscale (200); evaluateautoscale (200 and
/// the run).
async fn pool_action(s: &Service, c: &Call, p: &str, action: &str) -> Result<Reply, AzError> {
    let pool = id(p, "pool", PoolId::new)?;
    let body = c.json()?;
    let request = match action {
        "resize" => {
            if body
                .get("targetLowPriorityNodes")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                > 0
            {
                return Err(model::invalid(
                    "targetLowPriorityNodes",
                    "lote's nodes are all dedicated",
                )
                .into());
            }
            Request::ResizePool {
                pool,
                target_nodes: body
                    .get("targetDedicatedNodes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as u32,
                deallocation: match body.get("nodeDeallocationOption").and_then(Value::as_str) {
                    Some("terminate") => Deallocation::Terminate,
                    // Retained data: a removed node's files go with it.
                    Some("taskcompletion" | "retaineddata") => Deallocation::TaskCompletion,
                    _ => Deallocation::Requeue,
                },
            }
        }
        "stopresize" => Request::StopResize { pool },
        "enableautoscale" => Request::EnableAutoscale {
            pool,
            formula: body
                .get("autoScaleFormula")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            evaluation_interval_secs: body
                .get("autoScaleEvaluationInterval")
                .and_then(Value::as_str)
                .and_then(model::parse_duration)
                .unwrap_or(900),
        },
        "disableautoscale" => Request::DisableAutoscale { pool },
        "evaluateautoscale" => {
            let formula = body
                .get("autoScaleFormula")
                .and_then(Value::as_str)
                .map(String::from);
            let Response::AutoscaleEvaluation(e) =
                call(s, c, Request::EvaluateAutoscale { pool, formula }).await?
            else {
                return Err(unexpected("EvaluateAutoscale"));
            };
            let mut run = json!({"timestamp": e.run.at.to_string(), "results": e.run.results});
            if let Some(err) = &e.run.error {
                run["error"] = json!({"code": err.code, "message": err.message, "values": []});
            }
            return Ok(Reply::bytes(
                200,
                "application/json;odata=minimalmetadata",
                run.to_string().into_bytes(),
            ));
        }
        other => {
            return Err(AzError::new(
                404,
                "ResourceNotFound",
                format!("no pool action {other}"),
            ));
        }
    };
    let status = if matches!(action, "resize" | "stopresize") {
        202
    } else {
        200
    };
    call(s, c, request).await?;
    Ok(empty(s, status, None, None))
}

async fn create_job(s: &Service, c: &Call) -> Result<Reply, AzError> {
    let account = caller_account(c)?;
    let body = c.json()?;
    let job = id(
        body.get("id").and_then(Value::as_str).unwrap_or_default(),
        "id",
        JobId::new,
    )?;
    let spec = model::job_spec(&body, job.clone(), &account, &c.sizes)?;
    let url = format!("{}/jobs/{job}", c.base);
    call(
        s,
        c,
        Request::CreateJob {
            spec,
            request_id: c.request_id(),
        },
    )
    .await?;
    Ok(empty(s, 201, Some(&url), Some(model::etag(1))))
}

/// The caller's job `j`.
async fn show_job(s: &Service, c: &Call, j: &str) -> Result<Versioned<Job>, AzError> {
    let job = id(j, "job", JobId::new)?;
    match call(s, c, Request::ShowJob { job }).await? {
        Response::Job(job) => Ok(job),
        _ => Err(unexpected("ShowJob")),
    }
}

async fn job_value(s: &Service, c: &Call, j: &str) -> Result<Value, AzError> {
    Ok(model::job_json(&c.base, &show_job(s, c, j).await?))
}

/// terminate, disable, enable: 202, the job `terminating` (or
/// `disabled`) before the answer, as the SDK's pollers expect.
async fn job_action(s: &Service, c: &Call, j: &str, action: &str) -> Result<Reply, AzError> {
    let job = id(j, "job", JobId::new)?;
    let body = c.json()?;
    let request = match action {
        "terminate" => Request::TerminateJob {
            job,
            reason: body
                .get("terminateReason")
                .and_then(Value::as_str)
                .unwrap_or("UserTerminate")
                .to_string(),
        },
        "disable" => Request::DisableJob {
            job,
            disable_tasks: match body.get("disableTasks").and_then(Value::as_str) {
                Some("terminate") => DisableTasks::Terminate,
                Some("wait") => DisableTasks::Wait,
                _ => DisableTasks::Requeue,
            },
        },
        "enable" => Request::EnableJob { job },
        other => {
            return Err(AzError::new(
                404,
                "ResourceNotFound",
                format!("no job action {other}"),
            ))
        }
    };
    call(s, c, request).await?;
    Ok(empty(s, 202, None, None))
}

async fn task_counts(s: &Service, c: &Call, j: &str) -> Result<Reply, AzError> {
    let job = show_job(s, c, j).await?;
    let st = &job.state;
    let counts = json!({
        "active": st.count(TaskBucket::Active),
        "running": st.count(TaskBucket::Running),
        "completed": st.count(TaskBucket::Succeeded) + st.count(TaskBucket::Failed),
        "succeeded": st.count(TaskBucket::Succeeded),
        "failed": st.count(TaskBucket::Failed),
    });
    let body = json!({"taskCounts": counts, "taskSlotCounts": counts});
    Ok(Reply::bytes(
        200,
        "application/json;odata=minimalmetadata",
        body.to_string().into_bytes(),
    ))
}

/// Up to 100 tasks: added in one atomic step when they can all be; else
/// one by one, each with its own result, as Azure answers.
async fn add_collection(s: &Service, c: &Call, j: &str) -> Result<Reply, AzError> {
    let job = id(j, "job", JobId::new)?;
    let body = c.json()?;
    let list = body
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.len() > 100 {
        return Err(AzError::new(
            413,
            "RequestBodyTooLarge",
            "at most 100 tasks per addtaskcollection",
        ));
    }
    let mut specs = vec![];
    let mut results = vec![];
    for t in &list {
        let task_id = t
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match model::task_spec(t) {
            Ok(spec) => specs.push(spec),
            Err(e) => results.push(json!({"status": "clienterror", "taskId": task_id,
                "error": {"code": e.code, "message": {"lang": "en-US", "value": e.message}}})),
        }
    }
    let ok = |t: &crate::domain::task::TaskSpec| {
        json!({"status": "success", "taskId": t.id, "eTag": model::etag(1),
            "location": format!("{}/jobs/{j}/tasks/{}", c.base, t.id)})
    };
    let batch = Request::AddTasks {
        job: job.clone(),
        tasks: specs.clone(),
        request_id: None,
    };
    if !specs.is_empty() && call(s, c, batch).await.is_ok() {
        results.extend(specs.iter().map(ok));
    } else {
        for spec in specs {
            let one = Request::AddTasks {
                job: job.clone(),
                tasks: vec![spec.clone()],
                request_id: None,
            };
            match call(s, c, one).await {
                Ok(_) => results.push(ok(&spec)),
                Err(e) => {
                    let status = if e.status >= 500 {
                        "servererror"
                    } else {
                        "clienterror"
                    };
                    results.push(json!({"status": status, "taskId": spec.id,
                        "error": {"code": e.code, "message": {"lang": "en-US", "value": e.message}}}));
                }
            }
        }
    }
    let body = json!({ "value": results });
    Ok(Reply::bytes(
        200,
        "application/json;odata=minimalmetadata",
        body.to_string().into_bytes(),
    ))
}

async fn task_value(s: &Service, c: &Call, j: &str, t: &str) -> Result<Value, AzError> {
    let (job, task) = (id(j, "job", JobId::new)?, id(t, "task", TaskId::new)?);
    let Response::Task(task) = call(s, c, Request::ShowTask { job, task }).await? else {
        return Err(unexpected("ShowTask"));
    };
    Ok(model::task_json(&c.base, j, &task))
}

async fn list_tasks(s: &Service, c: &Call, j: &str) -> Result<Reply, AzError> {
    let job = id(j, "job", JobId::new)?;
    let mut items = vec![];
    let mut after = None;
    loop {
        let Response::Tasks {
            items: page_items,
            next,
        } = call(
            s,
            c,
            Request::ListTasks {
                job: job.clone(),
                after: after.take(),
                limit: 0,
            },
        )
        .await?
        else {
            return Err(unexpected("ListTasks"));
        };
        items.extend(page_items.iter().map(|t| model::task_json(&c.base, j, t)));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    page(c, &format!("/jobs/{j}/tasks"), items)
}

/// `PATCH /jobs/{id}` (the given properties) or `PUT` (all of them, the
/// absent ones back to their defaults): priority, constraints, what the
/// job does when its tasks end or fail, metadata.
async fn update_job(s: &Service, c: &Call, j: &str) -> Result<Reply, AzError> {
    let current = show_job(s, c, j).await?;
    check_if_match(c, &model::etag(current.version))?;
    let Some(old) = current.state.spec.clone() else {
        return Err(unexpected("ShowJob"));
    };
    let spec = model::job_update(&c.json()?, old, c.method == Method::PUT)?;
    call(s, c, Request::UpdateJob { spec }).await?;
    Ok(empty(s, 200, Some(&format!("{}/jobs/{j}", c.base)), None))
}

/// `PATCH /pools/{id}` (200) and `POST /pools/{id}/updateproperties`
/// (204, absent start task and packages removed): `pool update`.
async fn update_pool(s: &Service, c: &Call, p: &str, replace: bool) -> Result<Reply, AzError> {
    let pool = id(p, "pool", PoolId::new)?;
    let current = show_pool(s, c, p).await?;
    check_if_match(c, &model::etag(current.version))?;
    let Some(spec) = current.state.spec.as_ref() else {
        return Err(unexpected("ShowPool"));
    };
    let (start_task, application_packages) =
        model::pool_update(&c.json()?, spec, replace, &c.sizes)?;
    if start_task.is_some() || application_packages.is_some() {
        let update = Request::UpdatePool {
            pool,
            start_task,
            application_packages,
        };
        call(s, c, update).await?;
    }
    let status = if replace { 204 } else { 200 };
    Ok(empty(
        s,
        status,
        Some(&format!("{}/pools/{p}", c.base)),
        None,
    ))
}

/// `GET /nodecounts`: each pool's nodes by state (all dedicated).
async fn node_counts(s: &Service, c: &Call) -> Result<Reply, AzError> {
    let Response::Pools(pools) = call(s, c, Request::ListPools).await? else {
        return Err(unexpected("ListPools"));
    };
    let mut items = vec![];
    for p in &pools {
        let Some(spec) = &p.state.spec else { continue };
        let nodes = live_nodes(s, c, &spec.id).await?;
        let mut dedicated = serde_json::Map::new();
        for key in [
            "creating",
            "idle",
            "offline",
            "preempted",
            "rebooting",
            "reimaging",
            "running",
            "starting",
            "startTaskFailed",
            "leavingPool",
            "unknown",
            "unusable",
            "waitingForStartTask",
            "deallocated",
            "deallocating",
            "upgradingOS",
        ] {
            dedicated.insert(key.into(), json!(0));
        }
        for n in &nodes {
            let state = model::node_state_key(n.state.state);
            let count = dedicated[state].as_u64().unwrap_or(0) + 1;
            dedicated.insert(state.into(), json!(count));
        }
        dedicated.insert("total".into(), json!(nodes.len()));
        let mut low = dedicated.clone();
        for v in low.values_mut() {
            *v = json!(0);
        }
        items.push(json!({"poolId": spec.id, "dedicated": dedicated, "lowPriority": low}));
    }
    page(c, "/nodecounts", items)
}
