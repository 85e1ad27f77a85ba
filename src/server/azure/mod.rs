//! The Azure Batch REST gateway (`--azure-listen`): Azure's own SDK, and
//! anything else written against Azure Batch's REST API (api-version
//! 2025-06-01), runs against lote by changing the endpoint and the key.
//!
//! Each request is checked for its api-version and its SharedKey
//! signature (one of the account's two keys, within 15 minutes of its
//! `ocp-date`), then turned into message-API requests and handed to the
//! same `Service::dispatch` as framed calls and the console: no rule
//! exists twice, and every call is in the audit trail. Replies are
//! Azure's: status codes, headers (`request-id`, `client-request-id`,
//! `ETag`, `Last-Modified`, `DataServiceId`), lowercase states, OData
//! paging, and Azure's error body.

mod common;
mod files;
mod model;
mod nodes;
mod ops;
mod repeats;
mod schedules;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::console::http::header;
pub(super) use super::console::http::{Body, Reply};
use super::service::Caller;
use super::tls::ServerTls;
use super::Service;
use crate::api::shared_key;
use crate::api::{ApiError, ErrorKind};
use crate::domain::RejectionCode;

/// The one api-version served.
pub const API_VERSION: &str = "2025-06-01";
/// How far a request's `ocp-date` may be from the server's clock.
const CLOCK_SKEW_SECS: i64 = 15 * 60;
/// Largest request body read.
const BODY_BYTES_MAX: usize = 4 << 20;

/// An Azure error: status, code, message and `values`.
pub struct AzError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub values: Vec<(String, String)>,
    /// Seconds for `Retry-After` on a 503 (1 if not said).
    pub retry_after: Option<i64>,
}

impl AzError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        AzError {
            status,
            code: code.into(),
            message: message.into(),
            values: vec![],
            retry_after: None,
        }
    }
    fn retry_after(mut self, secs: i64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    fn value(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.push((key.into(), value.into()));
        self
    }
}

impl From<model::Invalid> for AzError {
    fn from(i: model::Invalid) -> Self {
        AzError::new(400, i.code, i.message)
    }
}

/// lote's refusals in Azure's words: the closest Azure code and status.
impl From<ApiError> for AzError {
    fn from(e: ApiError) -> Self {
        use RejectionCode as R;
        let (status, code) = match (e.kind, e.rejection) {
            (ErrorKind::Rejected, Some(r)) => match r {
                R::PoolNotFound => (404, "PoolNotFound"),
                R::JobNotFound => (404, "JobNotFound"),
                R::TaskNotFound => (404, "TaskNotFound"),
                R::NodeNotFound => (404, "NodeNotFound"),
                R::ScheduleNotFound => (404, "JobScheduleNotFound"),
                R::ApplicationNotFound => (404, "ApplicationNotFound"),
                R::FileNotFound => (404, "FileNotFound"),
                R::PoolExists => (409, "PoolExists"),
                R::JobExists => (409, "JobExists"),
                R::TaskExists => (409, "TaskExists"),
                R::ScheduleExists => (409, "JobScheduleExists"),
                R::JobCompleted => (409, "JobCompleted"),
                R::JobNotActive => (409, "JobNotActive"),
                R::JobBeingTerminated => (409, "JobBeingTerminated"),
                R::JobNotDisabled => (409, "JobNotDisabled"),
                R::TaskStateConflict => (409, "TaskCompleted"),
                R::PoolInUse => (409, "PoolBeingDeleted"),
                R::AccountDisabled => (403, "AccountIsDisabled"),
                R::PermissionDenied => (403, "AuthorizationFailure"),
                R::TooBusy => (503, "ServerBusy"),
                _ => (400, "InvalidPropertyValue"),
            },
            (ErrorKind::BadSignature | ErrorKind::ClockSkew | ErrorKind::NonceReplayed, _) => {
                (403, "AuthenticationFailed")
            }
            (ErrorKind::PermissionDenied, _) => (403, "AuthorizationFailure"),
            (ErrorKind::Overloaded | ErrorKind::ShuttingDown, _) => (503, "ServerBusy"),
            (ErrorKind::Internal, _) => (500, "InternalError"),
            _ => (400, "InvalidRequest"),
        };
        AzError::new(status, code, e.message)
    }
}

/// A request as the handlers see it: authenticated, body read.
pub struct Call {
    pub caller: Caller,
    pub method: Method,
    /// Path segments, percent-decoded.
    pub segments: Vec<String>,
    pub query: std::collections::HashMap<String, String>,
    pub body: Bytes,
    /// `http(s)://host` for the `url` fields.
    pub base: String,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    /// `If-Modified-Since` / `If-Unmodified-Since`, in seconds.
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
    pub range: Option<String>,
    pub client_request_id: Option<String>,
    /// The VM sizes this server knows.
    pub sizes: Rc<Vec<model::VmSize>>,
}

impl Call {
    /// The client's request id, as a create's request id: it is what the
    /// audit trail records the change under, and a retry of the same
    /// request (the SDK keeps the id across retries) creates nothing twice.
    pub fn request_id(&self) -> Option<uuid::Uuid> {
        self.client_request_id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
    }

    pub fn json(&self) -> Result<Value, AzError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            AzError::new(
                400,
                "InvalidRequestBody",
                format!("the body is not JSON: {e}"),
            )
        })
    }
}

/// What a request's signature proved, for `repeats`.
struct Proof {
    account: String,
    signature: String,
    /// When the signature stops being accepted (Unix seconds).
    expires: i64,
}

pub(super) struct Gateway {
    service: Rc<Service>,
    sizes: Rc<Vec<model::VmSize>>,
    repeats: repeats::Repeats,
}

/// The gateway's listener, bound, and the VM sizes it knows.
pub(super) struct Listening {
    listener: TcpListener,
    pub addr: SocketAddr,
    sizes: Vec<model::VmSize>,
}

/// Binds the gateway's address, if it has one; its VM sizes are the
/// configured ones (`--azure-vm-size`), or lote's defaults.
pub(super) async fn bind(
    listen: Option<&str>,
    vm_sizes: &[String],
) -> Result<Option<Listening>, super::ServerError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let sizes = if vm_sizes.is_empty() {
        model::default_vm_sizes()
    } else {
        vm_sizes
            .iter()
            .map(|t| model::parse_vm_size(t))
            .collect::<Result<_, _>>()
            .map_err(super::ServerError::Config)?
    };
    let (listener, addr) = super::bind(listen, "--azure-listen").await?;
    Ok(Some(Listening {
        listener,
        addr,
        sizes,
    }))
}

/// Serves the gateway until `stop`; returns its address.
pub(super) fn start(
    listening: Listening,
    service: Rc<Service>,
    tls: Arc<ServerTls>,
    stop: watch::Receiver<bool>,
) -> SocketAddr {
    let gateway = Rc::new(Gateway {
        repeats: repeats::Repeats::load(&service),
        service,
        sizes: Rc::new(listening.sizes),
    });
    let app: super::http_serve::App = Rc::new(move |req, _peer, secure| {
        let gateway = gateway.clone();
        Box::pin(async move { gateway.route(req, secure).await })
    });
    let serving = super::http_serve::Serving {
        what: "the Azure Batch API",
        tls,
        stop,
    };
    super::http_serve::spawn(listening.listener, app, serving);
    listening.addr
}

fn error_reply(e: &AzError, request_id: &str) -> Reply {
    let body = json!({
        "odata.metadata": "lote/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": e.code,
        "message": {"lang": "en-US", "value": format!("{}\nRequestId:{request_id}", e.message)},
        "values": e.values.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    });
    let mut reply = Reply::bytes(
        e.status,
        "application/json;odata=minimalmetadata",
        body.to_string().into_bytes(),
    );
    if e.status == 503 {
        let secs = e.retry_after.unwrap_or(1);
        reply = reply.header(hyper::header::RETRY_AFTER, secs.to_string());
    }
    reply
}

impl Gateway {
    async fn route(&self, req: Request<Incoming>, secure: bool) -> Response<Body> {
        let request_id = crate::clock::new_uuid().to_string();
        let client_request_id = header(&req, "client-request-id").map(String::from);
        let reply = match self
            .handle(req, secure, client_request_id.clone(), &request_id)
            .await
        {
            Ok(reply) => reply,
            Err(e) => error_reply(&e, &request_id),
        };
        let mut reply = reply.header(
            hyper::header::HeaderName::from_static("request-id"),
            request_id,
        );
        if let Some(id) = client_request_id {
            reply = reply.header(
                hyper::header::HeaderName::from_static("client-request-id"),
                id,
            );
        }
        reply.into_response()
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        secure: bool,
        client_request_id: Option<String>,
        request_id: &str,
    ) -> Result<Reply, AzError> {
        let raw_path = req.uri().path().to_string();
        let raw_query = req.uri().query().unwrap_or_default().to_string();
        let query: std::collections::HashMap<String, String> =
            shared_key::signed_query(&raw_query).into_iter().collect();
        match query.get("api-version").map(String::as_str) {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(AzError::new(
                    400,
                    "InvalidQueryParameterValue",
                    format!("Value for one of the query parameters specified in the request URI is invalid: api-version {other} is not served (only {API_VERSION})"),
                )
                .value("QueryParameterName", "api-version")
                .value("QueryParameterValue", other))
            }
            None => {
                return Err(AzError::new(
                    400,
                    "MissingRequiredQueryParameter",
                    format!("A query parameter that's mandatory for this request is not specified: api-version ({API_VERSION})"),
                )
                .value("QueryParameterName", "api-version"))
            }
        }
        let (caller, proof) = self.authenticate(&req, &raw_path, &raw_query).await?;
        let method = req.method().clone();
        let host = header(&req, "host").unwrap_or("localhost").to_string();
        let base = format!("{}://{host}", if secure { "https" } else { "http" });
        let (if_match, if_none_match, range) = (
            header(&req, "if-match").map(|v| v.trim_matches('"').to_string()),
            header(&req, "if-none-match").map(|v| v.trim_matches('"').to_string()),
            header(&req, "ocp-range").map(String::from),
        );
        let since = |name| {
            header(&req, name)
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                .map(|t| t.timestamp())
        };
        let (if_modified_since, if_unmodified_since) =
            (since("if-modified-since"), since("if-unmodified-since"));
        let declared = header(&req, "content-length").and_then(|v| v.parse::<usize>().ok());
        let body = super::console::http::body(req, BODY_BYTES_MAX)
            .await
            .map_err(|_| {
                AzError::new(
                    413,
                    "RequestBodyTooLarge",
                    format!("the request body is over {BODY_BYTES_MAX} bytes"),
                )
            })?;
        // The signature covers the length, not the bytes: they must agree.
        if declared.unwrap_or(0) != body.len() {
            return Err(AzError::new(
                400,
                "InvalidHeaderValue",
                "Content-Length does not match the body",
            ));
        }
        let segments = raw_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|segment| crate::api::percent_decode(segment, false))
            .collect();
        let changing = !matches!(method, Method::GET | Method::HEAD);
        let signed = repeats::Signed {
            account: &proof.account,
            signature: &proof.signature,
            method: method.as_str(),
            path: &raw_path,
            query: &raw_query,
            body: &body,
            client_request_id: client_request_id.as_deref(),
        };
        let running = if changing {
            match self
                .repeats
                .begin(&self.service, &signed, proof.expires)
                .await?
            {
                repeats::Begin::Again(answer) => return Ok(answer),
                repeats::Begin::First(running) => Some(running),
                repeats::Begin::Anew => None,
            }
        } else {
            None
        };
        let call = Call {
            caller,
            method,
            segments,
            query,
            body,
            base,
            if_match,
            if_none_match,
            if_modified_since,
            if_unmodified_since,
            range,
            client_request_id,
            sizes: self.sizes.clone(),
        };
        let reply = ops::dispatch(&self.service, &call).await;
        match (running, reply) {
            (Some(running), Ok(reply)) => {
                Ok(running.finish(&self.service, reply, request_id).await)
            }
            (_, reply) => reply,
        }
    }

    /// The account a SharedKey signature proves, within the clock window.
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        path: &str,
        query: &str,
    ) -> Result<(Caller, Proof), AzError> {
        let denied = |why: &str| {
            AzError::new(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            )
            .value("AuthenticationErrorDetail", why)
        };
        let auth = header(req, "authorization").ok_or_else(|| denied("no Authorization header"))?;
        let (account, signature) = auth
            .strip_prefix("SharedKey ")
            .and_then(|s| s.split_once(':'))
            .ok_or_else(|| denied("the Authorization header is not SharedKey ACCOUNT:SIGNATURE"))?;
        let date = header(req, "ocp-date")
            .or_else(|| header(req, "date"))
            .ok_or_else(|| denied("no ocp-date header"))?;
        let at = chrono::DateTime::parse_from_rfc2822(date)
            .map_err(|_| denied("ocp-date is not an RFC 1123 date"))?;
        let now = self.service.now().to_datetime();
        if (now.timestamp() - at.timestamp()).abs() > CLOCK_SKEW_SECS {
            return Err(denied(
                "ocp-date is more than 15 minutes from the server's time",
            ));
        }
        let name = crate::types::AccountName::new(account)
            .map_err(|_| denied("no such account, or the signature does not verify"))?;
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let signed = shared_key::Signed {
            method: req.method().as_str(),
            path,
            query,
            headers: &headers,
        };
        let caller = self
            .service
            .gateway_caller(&name, |key| {
                shared_key::verify(account, key, &signed, signature)
            })
            .await
            .map_err(|_| {
                denied("no such account, or the signature does not verify with either of its keys")
            })?;
        let proof = Proof {
            account: account.to_string(),
            signature: signature.to_string(),
            expires: at.timestamp() + CLOCK_SKEW_SECS + 1,
        };
        Ok((caller, proof))
    }
}
