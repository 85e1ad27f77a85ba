//! A pool's nodes over Azure's REST API (get, reboot, reimage, remove,
//! scheduling off and on), a job's preparation and release status per
//! node, and the account's application packages.

use serde_json::{json, Value};

use super::common::{call, empty, entity, id, page, unexpected};
use super::model;
use super::{AzError, Call};
use crate::api::{Request, Response};
use crate::domain::pool::Deallocation;
use crate::server::Service;
use crate::types::{JobId, NodeId, PoolId};

fn deallocation(body: &Value) -> Deallocation {
    match body.get("nodeDeallocationOption").and_then(Value::as_str) {
        Some("terminate") => Deallocation::Terminate,
        Some("taskcompletion" | "retaineddata") => Deallocation::TaskCompletion,
        _ => Deallocation::Requeue,
    }
}

/// What lote does with a rebooting node's tasks (requeues them) and a
/// node whose scheduling is turned off (lets its tasks finish): another
/// option asked for is refused, not ignored.
fn honoured(body: &Value, action: &str) -> Result<(), AzError> {
    let (field, only, what) = match action {
        "reboot" | "reimage" => (
            "nodeRebootKind",
            "requeue",
            "lote requeues a rebooting node's tasks",
        ),
        "disablescheduling" => (
            "nodeDisableSchedulingOption",
            "taskcompletion",
            "lote lets the tasks running on a node whose scheduling is off finish",
        ),
        _ => return Ok(()),
    };
    let field = if action == "reimage" {
        "nodeReimageOption"
    } else {
        field
    };
    match body.get(field).and_then(Value::as_str) {
        Some(asked) if asked != only => {
            Err(model::invalid(field, format!("{asked}: {what} ({only})")).into())
        }
        _ => Ok(()),
    }
}

/// Routes `/pools/{id}/nodes/{id}...` and `/pools/{id}/removenodes`.
pub async fn route(s: &Service, c: &Call, seg: &[&str]) -> Result<super::Reply, AzError> {
    use hyper::Method;
    match (&c.method, seg) {
        (&Method::GET, ["pools", p, "nodes", n]) => {
            let (pool, node) = (id(p, "pool", PoolId::new)?, id(n, "node", NodeId::new)?);
            let Response::Node(state) = call(s, c, Request::ShowNode { pool, node }).await? else {
                return Err(unexpected("ShowNode"));
            };
            let size = super::common::pool_vm_size(s, c, p).await?;
            let mut value = model::node_json(&c.base, p, &state, &size);
            value["eTag"] = json!(model::etag(state.version));
            entity(c, value)
        }
        (&Method::GET, ["pools", p, "nodes", n, "files"]) => {
            super::files::list(s, c, &super::files::Owner::node(p, n)?).await
        }
        (&Method::GET | &Method::HEAD, ["pools", p, "nodes", n, "files", path]) => {
            super::files::read(s, c, &super::files::Owner::node(p, n)?, path).await
        }
        (&Method::POST, ["pools", p, "nodes", n, action]) => {
            let (pool, node) = (id(p, "pool", PoolId::new)?, id(n, "node", NodeId::new)?);
            honoured(&c.json()?, action)?;
            let (request, status) = match *action {
                "reboot" => (Request::RebootNode { pool, node }, 202),
                "reimage" => (Request::ReimageNode { pool, node }, 202),
                "disablescheduling" => (Request::DisableNode { pool, node }, 200),
                "enablescheduling" => (Request::EnableNode { pool, node }, 200),
                other => {
                    return Err(AzError::new(
                        404,
                        "ResourceNotFound",
                        format!("no node action {other} (lote's nodes are not deallocated or started by hand)"),
                    ))
                }
            };
            call(s, c, request).await?;
            Ok(empty(s, status, None, None))
        }
        (&Method::POST, ["pools", p, "removenodes"]) => {
            let pool = id(p, "pool", PoolId::new)?;
            let body = c.json()?;
            let how = deallocation(&body);
            let nodes: Vec<String> = body
                .get("nodeList")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if nodes.is_empty() || nodes.len() > 100 {
                return Err(model::invalid("nodeList", "names 1 to 100 nodes").into());
            }
            for n in nodes {
                let node = id(&n, "node", NodeId::new)?;
                call(
                    s,
                    c,
                    Request::RemoveNode {
                        pool: pool.clone(),
                        node,
                        deallocation: how,
                    },
                )
                .await?;
            }
            Ok(empty(s, 202, None, None))
        }
        _ => Err(super::common::no_route(c)),
    }
}

/// `GET /jobs/{id}/jobpreparationandreleasetaskstatus`: per node where
/// the job's preparation ran, how it and the release ended.
pub async fn prep_status(s: &Service, c: &Call, j: &str) -> Result<super::Reply, AzError> {
    let job = id(j, "job", JobId::new)?;
    let Response::Job(state) = call(s, c, Request::ShowJob { job }).await? else {
        return Err(unexpected("ShowJob"));
    };
    let st = &state.state;
    let pool = st
        .spec
        .as_ref()
        .map(|x| x.pool.to_string())
        .unwrap_or_default();
    let info = |n: &crate::domain::job_prep::NodeTaskStatus| {
        json!({
            "state": "completed",
            "exitCode": n.exit_code,
            "retryCount": n.retries,
            "result": if n.succeeded { "success" } else { "failure" },
            "failureInfo": n.failure.as_ref().map(|f| json!({"category": "usererror", "code": "TaskFailed", "message": f})),
        })
    };
    let items = st
        .preparations
        .iter()
        .map(|(node, p)| {
            let mut v = json!({
                "poolId": pool,
                "nodeId": node,
                "nodeUrl": format!("{}/pools/{pool}/nodes/{node}", c.base),
                "jobPreparationTaskExecutionInfo": info(p),
            });
            if let Some(r) = st.releases.get(node) {
                v["jobReleaseTaskExecutionInfo"] = info(r);
            }
            v
        })
        .collect();
    page(
        c,
        &format!("/jobs/{j}/jobpreparationandreleasetaskstatus"),
        items,
    )
}

/// `GET /applications[/{id}]`: the account's application packages.
pub async fn applications(
    s: &Service,
    c: &Call,
    one: Option<&str>,
) -> Result<super::Reply, AzError> {
    let Response::Packages(packages) = call(s, c, Request::ListPackages).await? else {
        return Err(unexpected("ListPackages"));
    };
    let value = |p: &crate::api::blobs::PackageView| {
        json!({
            "id": p.id,
            "displayName": p.id,
            "versions": p.versions.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
        })
    };
    match one {
        None => page(c, "/applications", packages.iter().map(value).collect()),
        Some(name) => match packages.iter().find(|p| p.id == name) {
            Some(p) => Ok(super::Reply::bytes(
                200,
                "application/json;odata=minimalmetadata",
                value(p).to_string().into_bytes(),
            )),
            None => Err(AzError::new(
                404,
                "ApplicationNotFound",
                format!("The specified application does not exist: {name} (lote package list)"),
            )),
        },
    }
}
