//! What every gateway route shares: a call through the dispatcher,
//! Azure's empty and entity replies with their headers, conditional
//! requests, OData pages with `$filter` and `$select`, and a pool's JSON
//! with its live node count.

use hyper::header::HeaderName;
use hyper::Method;
use serde_json::{json, Value};

use super::model;
use super::{AzError, Call};
use crate::api::{Request, Response};
use crate::domain::Versioned;
use crate::server::console::http::Reply;
use crate::server::Service;
use crate::types::{AccountName, PoolId};

/// Most items of one list page (Azure's cap).
const PAGE_MAX: usize = 1000;

pub(super) async fn call(
    service: &Service,
    c: &Call,
    request: Request,
) -> Result<Response, AzError> {
    service
        .http_call(c.caller.clone(), request, c.request_id())
        .await
        .map_err(AzError::from)
}

pub(super) fn unexpected(what: &str) -> AzError {
    AzError::new(500, "InternalError", format!("unexpected reply to {what}"))
}

pub(super) fn id<T>(
    text: &str,
    what: &str,
    make: impl FnOnce(String) -> Result<T, crate::types::IdError>,
) -> Result<T, AzError> {
    make(text.to_string()).map_err(|e| AzError::new(400, "InvalidUri", format!("{what}: {e}")))
}

/// A reply with no body and Azure's entity headers.
pub(super) fn empty(s: &Service, status: u16, url: Option<&str>, etag: Option<String>) -> Reply {
    let mut r = Reply::bytes(status, "application/json;odata=minimalmetadata", vec![]);
    if let Some(u) = url {
        r = r
            .header(HeaderName::from_static("dataserviceid"), u)
            .header(hyper::header::LOCATION, u);
    }
    if let Some(e) = etag {
        r = r.header(hyper::header::ETAG, e);
    }
    r.header(hyper::header::LAST_MODIFIED, http_date(s))
}

/// The server's time in RFC 1123, as HTTP dates are.
pub(super) fn http_date(s: &Service) -> String {
    s.now()
        .to_datetime()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// An entity: its JSON, with ETag and Last-Modified; `If-None-Match` and
/// `If-Match` honoured.
pub(super) fn entity(c: &Call, value: Value) -> Result<Reply, AzError> {
    let etag = value["eTag"].as_str().unwrap_or_default().to_string();
    let modified = value["lastModified"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    let unchanged = c
        .if_none_match
        .as_deref()
        .is_some_and(|m| m == etag || m == "*")
        || matches!((c.if_modified_since, modified), (Some(since), Some(m)) if m <= since);
    if unchanged && c.method == Method::GET {
        return Ok(Reply::bytes(304, "application/json", vec![]));
    }
    check_if_match(c, &etag)?;
    if let (Some(since), Some(m)) = (c.if_unmodified_since, modified) {
        if m > since {
            return Err(condition_not_met());
        }
    }
    let value = select(c, value);
    Ok(Reply::bytes(
        200,
        "application/json;odata=minimalmetadata",
        value.to_string().into_bytes(),
    )
    .header(hyper::header::ETAG, etag))
}

fn condition_not_met() -> AzError {
    AzError::new(
        412,
        "ConditionNotMet",
        "The condition specified using HTTP conditional header(s) is not met.",
    )
}

pub(super) fn check_if_match(c: &Call, etag: &str) -> Result<(), AzError> {
    match c.if_match.as_deref() {
        Some(m) if m != "*" && m != etag => Err(condition_not_met()),
        _ => Ok(()),
    }
}

/// `$select`: only the named top-level properties.
fn select(c: &Call, value: Value) -> Value {
    let Some(fields) = c.query.get("$select") else {
        return value;
    };
    let Value::Object(map) = value else {
        return value;
    };
    let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
    Value::Object(
        map.into_iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .collect(),
    )
}

/// `$filter` clauses lote evaluates: `state eq 'x'` and `id eq 'x'`,
/// joined by `and`. Anything else is refused, not ignored.
fn filter(c: &Call) -> Result<Vec<(String, String)>, AzError> {
    let Some(text) = c.query.get("$filter") else {
        return Ok(vec![]);
    };
    text.split(" and ")
        .map(|clause| {
            let parts: Vec<&str> = clause.trim().splitn(3, ' ').collect();
            match parts.as_slice() {
                [field @ ("state" | "id"), "eq", value] if value.starts_with('\'') && value.ends_with('\'') && value.len() >= 2 => {
                    Ok((field.to_string(), value[1..value.len() - 1].to_string()))
                }
                _ => Err(AzError::new(
                    400,
                    "InvalidQueryParameterValue",
                    format!("$filter {clause:?}: lote filters on state eq '...' and id eq '...', joined by and"),
                )
                .value("QueryParameterName", "$filter")),
            }
        })
        .collect()
}

fn passes(item: &Value, clauses: &[(String, String)]) -> bool {
    clauses
        .iter()
        .all(|(f, v)| item[f.as_str()].as_str() == Some(v.as_str()))
}

/// One OData page of `items` from `$skiptoken` (an index), with a
/// `odata.nextLink` carrying every parameter the SDK will not send again.
pub(super) fn page(c: &Call, path: &str, items: Vec<Value>) -> Result<Reply, AzError> {
    let clauses = filter(c)?;
    let size = c
        .query
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(PAGE_MAX)
        .clamp(1, PAGE_MAX);
    let from = c
        .query
        .get("$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let matching: Vec<Value> = items.into_iter().filter(|i| passes(i, &clauses)).collect();
    let end = (from + size).min(matching.len());
    let value: Vec<Value> = matching[from.min(end)..end]
        .iter()
        .cloned()
        .map(|v| select(c, v))
        .collect();
    let mut body = json!({ "value": value });
    if end < matching.len() {
        let mut link = format!(
            "{}{path}?api-version={}&maxresults={size}&$skiptoken={end}",
            c.base,
            super::API_VERSION
        );
        for key in ["$filter", "$select"] {
            if let Some(v) = c.query.get(key) {
                link.push_str(&format!("&{key}={}", encode(v)));
            }
        }
        body["odata.nextLink"] = json!(link);
    }
    Ok(Reply::bytes(
        200,
        "application/json;odata=minimalmetadata",
        body.to_string().into_bytes(),
    ))
}

pub(super) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' | b'$' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A route lote does not serve: Azure's 404, naming it.
pub(super) fn no_route(c: &Call) -> AzError {
    AzError::new(
        404,
        "ResourceNotFound",
        format!(
            "{} /{} is not an operation lote serves (docs/azure-compat.md lists them)",
            c.method,
            c.segments.join("/")
        ),
    )
}

pub(super) async fn live_nodes(
    s: &Service,
    c: &Call,
    pool: &PoolId,
) -> Result<Vec<Versioned<crate::domain::node::Node>>, AzError> {
    let Response::Nodes(nodes) = call(s, c, Request::ListNodes { pool: pool.clone() }).await?
    else {
        return Err(unexpected("ListNodes"));
    };
    Ok(nodes
        .into_iter()
        .filter(|n| n.state.state.is_live())
        .collect())
}

/// The caller's pool `p`.
pub(super) async fn show_pool(
    s: &Service,
    c: &Call,
    p: &str,
) -> Result<Versioned<crate::domain::pool::Pool>, AzError> {
    let pool = id(p, "pool", PoolId::new)?;
    match call(s, c, Request::ShowPool { pool }).await? {
        Response::Pool(state) => Ok(state),
        _ => Err(unexpected("ShowPool")),
    }
}

/// The VM size a pool's nodes are reported with (no node is read).
pub(super) async fn pool_vm_size(s: &Service, c: &Call, p: &str) -> Result<String, AzError> {
    let pool = show_pool(s, c, p).await?;
    Ok(pool
        .state
        .spec
        .as_ref()
        .map(|spec| model::vm_size_of(&c.sizes, &spec.node_size))
        .unwrap_or_default())
}

/// A pool's JSON, with its live nodes counted.
pub(super) async fn pool_value(s: &Service, c: &Call, p: &str) -> Result<Value, AzError> {
    let state = show_pool(s, c, p).await?;
    let pool = id(p, "pool", PoolId::new)?;
    let nodes = live_nodes(s, c, &pool).await?.len() as u32;
    Ok(model::pool_json(&c.base, &state, nodes, &c.sizes))
}

/// The account a signed call acts as.
pub(super) fn caller_account(c: &Call) -> Result<AccountName, AzError> {
    match &c.caller {
        crate::server::service::Caller::Account(a, _) => Ok(a.clone()),
        _ => Err(AzError::new(
            403,
            "AuthorizationFailure",
            "an account's key is needed",
        )),
    }
}
