//! What the server does with one call: authenticate, decode, authorise,
//! dispatch to the actors, and shape the reply.
//!
//! Isolation is structural: an account's requests name only ids, and the
//! server builds every stream id from the *caller's* account. Another
//! account's pool `p1` is simply not in the namespace the caller can name,
//! so its reply is the very same "not found" as for a pool that never was.

mod accounts;
mod agents;
mod apps;
pub(super) mod authenticate;
mod blobs;
pub(super) mod console;
mod entities;
pub(super) mod events;
mod gateway;
mod idempotency;
mod jobs;
mod nodes;
mod pools;
mod schedules;
mod secrets;
mod tasks;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::actors::{Core, CoreError};
use crate::api::auth;
use crate::api::{ApiError, Call, ErrorKind, Family, Request, Response, ServerFrame};
use crate::clock::{new_uuid, Clock};
use crate::codec;
use crate::domain::account::{Account, AccountStatus};
use crate::domain::{Aggregate, Ctx, RejectionCode};
use crate::store::{StoreError, StreamId};
use crate::types::{AccountName, NodeId, PoolId, Principal, RequestId};
use entities::{not_found, Visible};

/// Most tasks in one page of a task listing.
pub const LIST_ITEMS_MAX: usize = 1000;

/// Who a verified call comes from.
#[derive(Clone, Debug)]
pub(super) enum Caller {
    Admin,
    /// With the account's state as authentication found it.
    Account(AccountName, Box<Account>),
    Join {
        account: AccountName,
        pool: PoolId,
    },
    Node(Principal),
    /// A job manager task, for its own job only.
    Job {
        account: AccountName,
        job: crate::types::JobId,
    },
}

/// How a call ended.
// One per call, moved once: a box for the reply would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum CallOutcome {
    /// Reply; with `fatal` set the connection is closed after it.
    Reply {
        result: Result<Response, ApiError>,
        fatal: Option<ApiError>,
    },
    /// A subscription runs on; the handle ends it.
    Subscription(tokio::task::AbortHandle),
}

pub struct Service {
    supervisors: super::supervisors::Supervisors,
    core: Core,
    clock: Arc<dyn Clock>,
    admin_key: String,
    server_secret: String,
    /// Seals pool secrets before they are written.
    sealer: secrets::Sealer,
    /// The TLS certificate's fingerprint, which join tokens carry.
    tls_fingerprint: String,
    /// The load each node last reported, and when.
    loads: RefCell<std::collections::HashMap<StreamId, (u32, std::time::Instant)>>,
    blobs: Rc<super::blobs::Blobs>,
    pub(super) metrics: super::metrics::Metrics,
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "call failed inside the server");
    ApiError::new(
        ErrorKind::Internal,
        format!("the server failed: {e}. Nothing was half-done; see the server log"),
    )
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Rejected(r) => r.into(),
            other => internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

pub(super) fn permission(what: &str, caller: &Caller) -> ApiError {
    let who = match caller {
        Caller::Admin => "the admin key".to_string(),
        Caller::Account(a, _) => format!("account {a}'s key"),
        Caller::Join { account, pool } => format!("the join token of pool {account}/{pool}"),
        Caller::Node(p) => format!("the credential of {p}"),
        Caller::Job { account, job } => format!("the job manager key of job {account}/{job}"),
    };
    ApiError::rejected(
        RejectionCode::PermissionDenied,
        format!("{what}; this call is signed with {who}"),
    )
}

/// A request that reached a handler of another family: a bug in routing,
/// answered as the server's failure, never a panic.
pub(super) fn misrouted(request: &Request) -> ApiError {
    internal(format!(
        "{} was routed to the wrong handler",
        request.name()
    ))
}

/// An account's request on its way to its family's handler.
pub(super) struct AccountCall<'a> {
    pub account: &'a AccountName,
    pub principal: Principal,
    pub request_id: Option<uuid::Uuid>,
    pub body: &'a [u8],
}

impl<'a> AccountCall<'a> {
    /// A call of `account` (its own key, or a job key of one of its jobs:
    /// recorded as the account either way).
    fn new(account: &'a AccountName, request: &Request, body: &'a [u8]) -> Self {
        AccountCall {
            account,
            principal: Principal::Account {
                account: account.clone(),
            },
            request_id: request.idempotency_key(),
            body,
        }
    }

    /// The causation of what this request records.
    pub fn ctx(&self, service: &Service) -> Ctx {
        service.ctx(self.principal.clone(), self.request_id)
    }

    /// The stream of the caller's pool `pool` (never another account's).
    pub fn pool_stream(&self, pool: &PoolId) -> StreamId {
        StreamId::pool(self.account, pool)
    }

    /// The stream of the caller's job `job`.
    pub fn job_stream(&self, job: &crate::types::JobId) -> StreamId {
        StreamId::job(self.account, job)
    }
}

pub(super) fn done<A: Aggregate>(
    stream: &StreamId,
    outcome: crate::actors::Outcome<A>,
) -> Response {
    Response::Done {
        entity: stream.to_string(),
        version: outcome.version,
    }
}

impl Service {
    pub fn new(
        core: Core,
        clock: Arc<dyn Clock>,
        admin_key: String,
        server_secret: String,
        supervisors: super::supervisors::Supervisors,
        blobs: Rc<super::blobs::Blobs>,
        tls_fingerprint: String,
    ) -> Self {
        Service {
            metrics: super::metrics::Metrics::default(),
            tls_fingerprint,
            supervisors,
            core,
            clock,
            admin_key,
            sealer: secrets::Sealer::new(&server_secret),
            server_secret,
            loads: RefCell::default(),
            blobs,
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The token agents use to join `pool` of `account`, in its
    /// `generation` (0 until the first rotation, derived as it always was).
    pub fn join_token(&self, account: &AccountName, pool: &PoolId, generation: u32) -> String {
        let purpose = match generation {
            0 => format!("join:{account}/{pool}"),
            g => format!("join:{account}/{pool}#{g}"),
        };
        auth::derive_secret(&self.server_secret, &purpose)
    }

    /// The join token as handed to people: the token and the server
    /// certificate's fingerprint, so `lote agent --join-token` needs
    /// nothing else to reach the server over TLS.
    pub fn join_token_to_print(
        &self,
        account: &AccountName,
        pool: &PoolId,
        generation: u32,
    ) -> String {
        format!(
            "{}{}{}",
            self.join_token(account, pool, generation),
            crate::api::tls::TOKEN_FINGERPRINT_SEPARATOR,
            self.tls_fingerprint
        )
    }

    pub(super) fn node_credential(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
    ) -> String {
        auth::derive_secret(
            &self.server_secret,
            &format!("node:{account}/{pool}/{node}"),
        )
    }

    pub(super) fn ctx(&self, principal: Principal, request_id: Option<uuid::Uuid>) -> Ctx {
        let id = RequestId(request_id.unwrap_or_else(new_uuid));
        Ctx::live(self.clock.as_ref(), principal, id)
    }

    /// Handles one call from start to reply.
    pub async fn call(
        self: Rc<Self>,
        mut call: Call,
        session: &authenticate::Session,
        tx: &mpsc::Sender<ServerFrame>,
        stop: watch::Receiver<bool>,
    ) -> CallOutcome {
        let reply = |result| CallOutcome::Reply {
            result,
            fatal: None,
        };
        let caller = match self.authenticate(&call, session).await {
            Ok(c) => c,
            Err(e) => return reply(Err(e)),
        };
        let decoded = codec::decode_message::<Request>(&call.body)
            .map_err(|e| format!("undecodable request: {e}"))
            .and_then(|mut r| {
                r.attach_bulk(std::mem::take(&mut call.bulk))?;
                Ok(r)
            });
        let request = match decoded {
            Ok(r) => r,
            Err(why) => {
                let error = ApiError::new(ErrorKind::Malformed, why);
                return CallOutcome::Reply {
                    result: Err(error.clone()),
                    fatal: Some(error),
                };
            }
        };
        tracing::debug!(caller = ?caller, request = request.name(), "call");
        if matches!(caller, Caller::Node(_)) && session.agent.borrow().is_none() {
            *session.agent.borrow_mut() = Some(self.metrics.agent_connected());
        }
        if let Request::TailEvents { from } = request {
            return match self
                .clone()
                .tail(caller, from, call.id, tx.clone(), stop)
                .await
            {
                Ok(handle) => CallOutcome::Subscription(handle),
                Err(e) => reply(Err(e)),
            };
        }
        let started = std::time::Instant::now();
        let name = request.name();
        let result = self.dispatch(caller, request, &call.body, None).await;
        self.metrics
            .call(name, result.is_ok(), started.elapsed().as_secs_f64());
        reply(result)
    }

    /// `request_id`: the caller's own id for the call (the Azure gateway's
    /// `client-request-id`), recorded as the causation of what it changes;
    /// none: the request's idempotency key, or a fresh id.
    async fn dispatch(
        &self,
        caller: Caller,
        mut request: Request,
        body: &[u8],
        request_id: Option<uuid::Uuid>,
    ) -> Result<Response, ApiError> {
        request
            .check_sizes()
            .map_err(|why| ApiError::rejected(RejectionCode::InvalidValue, why))?;
        request.cut_agent_messages();
        match (&caller, request) {
            (_, Request::Ping) => Ok(Response::Pong {
                server_time: self.clock.now(),
            }),
            (_, Request::Whoami) => Ok(Response::Whoami {
                principal: self.principal(&caller),
            }),
            (Caller::Admin, request) => self.admin(request, body).await,
            (Caller::Account(account, state), request) => {
                self.account(account, state, request, body, request_id)
                    .await
            }
            (Caller::Join { account, pool }, Request::JoinPool { name }) => {
                self.join(account, pool, name).await
            }
            (Caller::Join { .. }, _) => Err(permission(
                "a join token may only join its pool (JoinPool)",
                &caller,
            )),
            (
                Caller::Node(Principal::Node {
                    account,
                    pool,
                    node,
                }),
                request,
            ) => self.agent(account, pool, node, request).await,
            (Caller::Node(_), _) => Err(permission("not a node", &caller)),
            (Caller::Job { account, job }, request) => {
                self.job_scoped(account, job, request, body).await
            }
        }
    }

    /// A job manager's request: its own job and its tasks, nothing else.
    async fn job_scoped(
        &self,
        account: &AccountName,
        own: &crate::types::JobId,
        request: Request,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let job = match &request {
            Request::AddTasks { job, .. }
            | Request::ShowJob { job }
            | Request::WaitJob { job, .. }
            | Request::ExplainJob { job }
            | Request::ListTasks { job, .. }
            | Request::ShowTask { job, .. }
            | Request::ReadTaskOutput { job, .. }
            | Request::ExplainTask { job, .. }
            | Request::ListTaskFiles { job, .. }
            | Request::ReadTaskFile { job, .. } => Some(job),
            _ => None,
        };
        if job != Some(own) {
            let caller = Caller::Job {
                account: account.clone(),
                job: own.clone(),
            };
            return Err(permission(
                &format!(
                    "a job manager's key reaches its own job ({own}) and its tasks only: adding, listing and reading them; {} is not that",
                    request.name()
                ),
                &caller,
            ));
        }
        let call = AccountCall::new(account, &request, body);
        match request.family() {
            Family::Jobs => self.jobs(&call, &request).await,
            _ => self.tasks(&call, &request).await,
        }
    }

    /// The key of job `job`'s manager task, derived like every other, and
    /// from the job's creation time: a job deleted and made again under
    /// the same id gets a new key, so an old manager's key is dead.
    pub(super) fn job_key(
        &self,
        account: &AccountName,
        job: &crate::types::JobId,
        created: crate::types::Timestamp,
    ) -> String {
        auth::derive_secret(
            &self.server_secret,
            &format!("jobkey:{account}/{job}@{}", created.as_micros()),
        )
    }

    fn principal(&self, caller: &Caller) -> Principal {
        match caller {
            Caller::Admin => Principal::Admin,
            Caller::Account(account, _) => Principal::Account {
                account: account.clone(),
            },
            Caller::Join { account, .. } => Principal::System {
                component: format!("join:{account}"),
            },
            Caller::Node(p) => p.clone(),
            Caller::Job { account, .. } => Principal::Account {
                account: account.clone(),
            },
        }
    }

    /// An account's request: refused if the account is disabled and it
    /// changes something, else routed to its family's handler.
    async fn account(
        &self,
        account: &AccountName,
        me: &Account,
        request: Request,
        body: &[u8],
        request_id: Option<uuid::Uuid>,
    ) -> Result<Response, ApiError> {
        if me.status == AccountStatus::Disabled && !request.is_read_only() {
            return Err(ApiError::rejected(
                RejectionCode::AccountDisabled,
                format!("account {account} is disabled; an administrator can enable it"),
            ));
        }
        if request.is_blob() {
            return self.blob_request(account, request).await;
        }
        let mut call = AccountCall::new(account, &request, body);
        call.request_id = request_id.or(call.request_id);
        let me = || Caller::Account(account.clone(), Box::default());
        match request.family() {
            Family::Pools => self.pools(&call, &request).await,
            Family::Nodes => self.nodes(&call, &request).await,
            Family::Jobs => self.jobs(&call, &request).await,
            Family::Schedules => self.schedules(&call, &request).await,
            Family::Apps => self.apps(&call, &request).await,
            Family::Tasks => self.tasks(&call, &request).await,
            Family::Blobs => self.packages(&call, &request).await,
            Family::Agents if matches!(request, Request::JoinPool { .. }) => Err(permission(
                "joining a pool needs the pool's join token (lote pool join-token)",
                &me(),
            )),
            Family::Accounts | Family::Agents => Err(permission(
                "managing accounts needs the administrator key",
                &me(),
            )),
            Family::Session | Family::Events => Err(misrouted(&request)),
        }
    }

    /// Runs `command` on an entity that must exist (visible to the caller;
    /// a missing one is named by its id, the stream's last segment).
    async fn exec<A: Visible>(
        &self,
        stream: StreamId,
        command: A::Command,
        ctx: Ctx,
    ) -> Result<Response, ApiError> {
        let id = stream
            .segments()
            .last()
            .copied()
            .unwrap_or_default()
            .to_string();
        self.show::<A>(&stream, &id).await?;
        let outcome = self.core.execute::<A>(&stream, command, ctx).await?;
        Ok(done(&stream, outcome))
    }

    pub(super) fn system_ctx(&self) -> Ctx {
        self.ctx(
            Principal::System {
                component: "provider".into(),
            },
            None,
        )
    }
}
