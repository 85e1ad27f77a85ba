//! What the server does with one call: authenticate, decode, authorise,
//! dispatch to the actors, and shape the reply.
//!
//! Isolation is structural: an account's requests name only ids, and the
//! server builds every stream id from the *caller's* account. Another
//! account's pool `p1` is simply not in the namespace the caller can name,
//! so its reply is the very same "not found" as for a pool that never was.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::actors::{Core, CoreError, Registered};
use crate::api::auth::{self, NonceCache, NonceRefusal, Signed, CLOCK_SKEW_SECS_MAX};
use crate::api::{
    AccountView, ApiError, Call, Credential, ErrorKind, EventView, Request, Response, ServerFrame,
};
use crate::clock::{new_uuid, Clock};
use crate::codec;
use crate::domain::account::{Account, AccountCommand, AccountStatus};
use crate::domain::job::{Job, JobCommand, JobStatus};
use crate::domain::node::{Node, NodeCommand};
use crate::domain::pool::{Pool, PoolCommand, PoolStatus};
use crate::domain::request::{RequestEvent, RequestRecord};
use crate::domain::spec::ResourceFile;
use crate::domain::task::{Task, TaskCommand, TaskStatus};
use crate::domain::{self, Aggregate, Ctx, Rejection, RejectionCode, Versioned};
use crate::store::{ExpectedVersion, StoreError, StreamAppend, StreamId};
use crate::types::{AccountName, NodeId, PoolId, Principal, RequestId, TaskId};

/// How often a busy node's changing task count is recorded.
const LOAD_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Most tasks in one page of a task listing.
pub const LIST_ITEMS_MAX: usize = 1000;

/// Who a verified call comes from.
#[derive(Clone, Debug)]
enum Caller {
    Admin,
    /// With the account's state as authentication found it.
    Account(AccountName, Box<Account>),
    Join {
        account: AccountName,
        pool: PoolId,
    },
    Node(Principal),
}

/// How a call ended.
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
    sagas: Rc<super::sagas::Sagas>,
    core: Core,
    clock: Arc<dyn Clock>,
    admin_key: String,
    server_secret: String,
    nonces: RefCell<NonceCache>,
    /// The load each node last reported, and when.
    loads: RefCell<std::collections::HashMap<StreamId, (u32, std::time::Instant)>>,
    placement: Rc<super::placement::Placement>,
    autoscaler: Rc<super::autoscale::Autoscaler>,
    blobs: Rc<super::blobs::Blobs>,
}

fn ensure_formula_size(text: &str) -> Result<(), ApiError> {
    let max = crate::autoscale::syntax::FORMULA_BYTES_MAX;
    if text.len() > max {
        return Err(ApiError::rejected(
            RejectionCode::InvalidValue,
            format!("autoscale formula is {} bytes; at most {max}", text.len()),
        ));
    }
    Ok(())
}

/// How long a file operation waits for the node's agent to answer.
const FILE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn internal(e: impl std::fmt::Display) -> ApiError {
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

fn bad_signature() -> ApiError {
    ApiError::new(
        ErrorKind::BadSignature,
        "the signature does not verify: wrong or regenerated key, unknown account, or a changed request",
    )
}

fn permission(what: &str, caller: &Caller) -> ApiError {
    let who = match caller {
        Caller::Admin => "the admin key".to_string(),
        Caller::Account(a, _) => format!("account {a}'s key"),
        Caller::Join { account, pool } => format!("the join token of pool {account}/{pool}"),
        Caller::Node(p) => format!("the credential of {p}"),
    };
    ApiError::rejected(
        RejectionCode::PermissionDenied,
        format!("{what}; this call is signed with {who}"),
    )
}

/// Entities that have a "does not exist (any more)" state, and the code
/// that says so.
trait Visible: Registered {
    const NOT_FOUND: RejectionCode;
    const NOUN: &'static str;
    fn visible(&self) -> bool;
}

impl Visible for Account {
    const NOT_FOUND: RejectionCode = RejectionCode::AccountNotFound;
    const NOUN: &'static str = "account";
    fn visible(&self) -> bool {
        !matches!(self.status, AccountStatus::Absent | AccountStatus::Deleted)
    }
}
impl Visible for Pool {
    const NOT_FOUND: RejectionCode = RejectionCode::PoolNotFound;
    const NOUN: &'static str = "pool";
    fn visible(&self) -> bool {
        !matches!(self.status, PoolStatus::Absent | PoolStatus::Deleted)
    }
}
impl Visible for Node {
    const NOT_FOUND: RejectionCode = RejectionCode::NodeNotFound;
    const NOUN: &'static str = "node";
    fn visible(&self) -> bool {
        self.state.is_live()
    }
}
impl Visible for Job {
    const NOT_FOUND: RejectionCode = RejectionCode::JobNotFound;
    const NOUN: &'static str = "job";
    fn visible(&self) -> bool {
        !matches!(self.status, JobStatus::Absent | JobStatus::Deleted)
    }
}
impl Visible for Task {
    const NOT_FOUND: RejectionCode = RejectionCode::TaskNotFound;
    const NOUN: &'static str = "task";
    fn visible(&self) -> bool {
        !matches!(self.status, TaskStatus::Absent | TaskStatus::Deleted)
    }
}

fn not_found<A: Visible>(id: &str) -> ApiError {
    ApiError::rejected(A::NOT_FOUND, format!("no {} {id}", A::NOUN))
}

fn done<A: Aggregate>(stream: &StreamId, outcome: crate::actors::Outcome<A>) -> Response {
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
        placement: Rc<super::placement::Placement>,
        sagas: Rc<super::sagas::Sagas>,
        autoscaler: Rc<super::autoscale::Autoscaler>,
        blobs: Rc<super::blobs::Blobs>,
    ) -> Self {
        Service {
            sagas,
            core,
            clock,
            admin_key,
            server_secret,
            nonces: RefCell::new(NonceCache::default()),
            loads: RefCell::default(),
            placement,
            autoscaler,
            blobs,
        }
    }

    /// A pool's size and scaling, for the words of a wait reason.
    async fn pool_context(
        &self,
        pool_key: &str,
    ) -> Result<crate::compute::explain::PoolContext, ApiError> {
        let Some((account, pool)) = super::sagas::split_pool_key(pool_key) else {
            return Ok(Default::default());
        };
        let state = self
            .existing::<Pool>(&StreamId::pool(&account, &pool))
            .await?
            .map(|v| v.state)
            .unwrap_or_default();
        Ok(crate::compute::explain::PoolContext {
            pool: pool.to_string(),
            target_nodes: state.target_nodes,
            max_nodes: state.spec.as_ref().map_or(0, |s| s.node_count_max),
            resizing: state.resize != crate::domain::pool::ResizeState::Steady,
            autoscale: state.autoscale.is_some(),
        })
    }

    /// Refuses an evaluation interval under this server's minimum.
    fn check_autoscale_interval(&self, secs: u64) -> Result<(), ApiError> {
        let min = self.autoscaler.settings().min_interval_secs;
        if secs < min {
            return Err(ApiError::rejected(
                RejectionCode::InvalidValue,
                format!(
                    "autoscale interval {secs}s is under this server's minimum of {min}s (lote server --autoscale-min-interval-secs)"
                ),
            ));
        }
        Ok(())
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The token agents use to join `pool` of `account`.
    pub fn join_token(&self, account: &AccountName, pool: &PoolId) -> String {
        auth::derive_secret(&self.server_secret, &format!("join:{account}/{pool}"))
    }

    fn node_credential(&self, account: &AccountName, pool: &PoolId, node: &NodeId) -> String {
        auth::derive_secret(
            &self.server_secret,
            &format!("node:{account}/{pool}/{node}"),
        )
    }

    /// The state of an entity that exists, without starting an actor for
    /// ids that were never used (unauthenticated callers can name any).
    async fn existing<A: Visible>(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Versioned<A>>, ApiError> {
        if !self.core.exists::<A>(stream)? {
            return Ok(None);
        }
        let current = self.core.state::<A>(stream).await?;
        Ok(current.state.visible().then_some(current))
    }

    async fn show<A: Visible>(
        &self,
        stream: &StreamId,
        id: &str,
    ) -> Result<Versioned<A>, ApiError> {
        self.existing(stream)
            .await?
            .ok_or_else(|| not_found::<A>(id))
    }

    /// Every visible entity whose stream starts with `prefix`, folded from
    /// the log without waking actors.
    fn list<A: Visible>(&self, prefix: &str) -> Result<Vec<Versioned<A>>, ApiError> {
        Ok(self.page(prefix, None, usize::MAX)?.0)
    }

    /// One page of [`list`](Self::list): at most `limit` entities from the
    /// stream after `after`, and the stream to continue after if more
    /// follow. Events past the durable head are not shown.
    fn page<A: Visible>(
        &self,
        prefix: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<(Vec<Versioned<A>>, Option<StreamId>), ApiError> {
        let store = self.core.store();
        let head = store.head();
        let mut out: Vec<(StreamId, Versioned<A>)> = Vec::new();
        let mut current: Option<(StreamId, Versioned<A>)> = None;
        let mut failed = None;
        let mut more = false;
        let flush = |current: &mut Option<(StreamId, Versioned<A>)>,
                     out: &mut Vec<(StreamId, Versioned<A>)>| {
            if let Some((stream, v)) = current.take() {
                if v.state.visible() {
                    out.push((stream, v));
                }
            }
        };
        store.scan_streams_after(prefix, after, |envelope| {
            if envelope.position > head {
                return Ok(true);
            }
            if current.as_ref().map(|(s, _)| s) != Some(&envelope.stream) {
                flush(&mut current, &mut out);
                if out.len() >= limit {
                    more = true;
                    return Ok(false);
                }
                current = Some((
                    envelope.stream.clone(),
                    Versioned {
                        version: 0,
                        state: A::default(),
                    },
                ));
            }
            if let Some((_, v)) = current.as_mut() {
                match domain::fold(
                    std::mem::take(&mut v.state),
                    std::slice::from_ref(&envelope),
                ) {
                    Ok(state) => {
                        v.state = state;
                        v.version = envelope.stream_version;
                    }
                    Err(e) => {
                        failed = Some(e);
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })?;
        if let Some(e) = failed {
            return Err(internal(e));
        }
        flush(&mut current, &mut out);
        let next = if more {
            out.last().map(|(s, _)| s.clone())
        } else {
            None
        };
        Ok((out.into_iter().map(|(_, v)| v).collect(), next))
    }

    fn ctx(&self, principal: Principal, request_id: Option<uuid::Uuid>) -> Ctx {
        let id = RequestId(request_id.unwrap_or_else(new_uuid));
        Ctx::live(self.clock.as_ref(), principal, id)
    }

    /// Checks the signature, the time window and the nonce, in that order
    /// (nothing unsigned may fill the nonce cache).
    async fn authenticate(&self, call: &Call) -> Result<Caller, ApiError> {
        let cred = &call.auth.credential;
        let (keys, caller): (Vec<String>, Caller) = match cred {
            Credential::Admin => (vec![self.admin_key.clone()], Caller::Admin),
            Credential::Account { account } => {
                let stream = StreamId::account(account);
                let state = self
                    .existing::<Account>(&stream)
                    .await?
                    .map(|a| a.state)
                    .unwrap_or_default();
                let keys = [&state.primary_key, &state.secondary_key]
                    .into_iter()
                    .flatten()
                    .map(|k| k.expose().to_string())
                    .collect();
                (keys, Caller::Account(account.clone(), Box::new(state)))
            }
            Credential::Join { account, pool } => {
                let live = self
                    .existing::<Pool>(&StreamId::pool(account, pool))
                    .await?
                    .is_some_and(|p| p.state.status == PoolStatus::Active);
                let keys = if live {
                    vec![self.join_token(account, pool)]
                } else {
                    Vec::new()
                };
                (
                    keys,
                    Caller::Join {
                        account: account.clone(),
                        pool: pool.clone(),
                    },
                )
            }
            Credential::Node {
                account,
                pool,
                node,
            } => {
                let live = self
                    .existing::<Node>(&StreamId::node(account, pool, node))
                    .await?
                    .is_some();
                let keys = if live {
                    vec![self.node_credential(account, pool, node)]
                } else {
                    Vec::new()
                };
                (
                    keys,
                    Caller::Node(Principal::Node {
                        account: account.clone(),
                        pool: pool.clone(),
                        node: node.clone(),
                    }),
                )
            }
        };
        // An unknown account costs an HMAC too, so timing does not tell
        // whether it exists.
        let ok = if keys.is_empty() {
            auth::verify(&self.admin_key, call.id, &call.auth, Signed::body(b""));
            false
        } else {
            let signed = Signed {
                body: &call.body,
                bulk_len: call.bulk.len() as u64,
            };
            auth::verify_any(&keys, call.id, &call.auth, signed)
        };
        if !ok {
            return Err(bad_signature());
        }
        let now = self.clock.now().as_micros();
        let skew = (now - call.auth.timestamp).abs();
        if skew > CLOCK_SKEW_SECS_MAX * 1_000_000 {
            return Err(ApiError::new(
                ErrorKind::ClockSkew,
                format!(
                    "the request's time is {}s from the server's; at most {CLOCK_SKEW_SECS_MAX}s is accepted. Check this machine's clock",
                    skew / 1_000_000
                ),
            ));
        }
        match self.nonces.borrow_mut().check_and_insert(
            cred,
            call.auth.nonce,
            call.auth.timestamp,
            now,
        ) {
            Ok(()) => Ok(caller),
            Err(NonceRefusal::Replayed) => Err(ApiError::new(
                ErrorKind::NonceReplayed,
                "this nonce was already used: a replayed request is refused",
            )),
            Err(NonceRefusal::Full) => Err(ApiError::new(
                ErrorKind::Overloaded,
                "too many requests in the replay window; try again shortly",
            )),
        }
    }

    /// Handles one call from start to reply.
    pub async fn call(
        self: Rc<Self>,
        mut call: Call,
        tx: &mpsc::Sender<ServerFrame>,
        stop: watch::Receiver<bool>,
    ) -> CallOutcome {
        let reply = |result| CallOutcome::Reply {
            result,
            fatal: None,
        };
        let caller = match self.authenticate(&call).await {
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
        reply(self.dispatch(caller, request, &call.body).await)
    }

    async fn dispatch(
        &self,
        caller: Caller,
        request: Request,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        match (&caller, request) {
            (_, Request::Ping) => Ok(Response::Pong {
                server_time: self.clock.now(),
            }),
            (_, Request::Whoami) => Ok(Response::Whoami {
                principal: self.principal(&caller),
            }),
            (Caller::Admin, request) => self.admin(request, body).await,
            (Caller::Account(account, state), request) => {
                self.account(account, state, request, body).await
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
        }
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
        }
    }

    /// Runs an idempotent request: the first time, its work plus its record
    /// in one append; again with the same body, the recorded outcome; again
    /// with another body, a refusal.
    async fn idempotent<F, Fut>(
        &self,
        scope: &AccountName,
        request: &Request,
        body: &[u8],
        reply: Response,
        work: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce(Vec<StreamAppend>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        let Some(id) = request.idempotency_key() else {
            work(Vec::new()).await?;
            return Ok(reply);
        };
        let stream = StreamId::request(scope, &id);
        let hash = auth::body_hash(body);
        let check = |record: Versioned<RequestRecord>| {
            if record.state.body_sha256.as_deref() == Some(hash.as_str()) {
                Ok(reply.clone())
            } else {
                Err(ApiError::rejected(
                    RejectionCode::RequestIdReused,
                    format!("request id {id} was already used for a different request; use a new id for a new request"),
                ))
            }
        };
        if let Some(record) = self.record(&stream)? {
            return check(record);
        }
        let event = RequestEvent::RequestRecorded {
            request: request.name().to_string(),
            body_sha256: hash.clone(),
            at: self.clock.now(),
        };
        let extra = vec![StreamAppend {
            stream: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![domain::to_new_event(&event).map_err(internal)?],
        }];
        match work(extra).await {
            Ok(()) => Ok(reply),
            // The same id raced us (or did the work already): its record
            // decides.
            Err(e) => match self.record(&stream)? {
                Some(record) => check(record),
                None => Err(e),
            },
        }
    }

    fn record(&self, stream: &StreamId) -> Result<Option<Versioned<RequestRecord>>, ApiError> {
        let current = crate::actors::load::<RequestRecord>(self.core.store(), stream, false)?;
        Ok((current.version > 0).then_some(current))
    }

    async fn admin(&self, request: Request, body: &[u8]) -> Result<Response, ApiError> {
        let ctx = || self.ctx(Principal::Admin, request.idempotency_key());
        let run = |name: &AccountName, command: AccountCommand| {
            let stream = StreamId::account(name);
            let name = name.clone();
            async move {
                self.show::<Account>(&stream, name.as_str()).await?;
                let outcome = self
                    .core
                    .execute::<Account>(&stream, command, ctx())
                    .await?;
                Ok::<_, ApiError>(done(&stream, outcome))
            }
        };
        match &request {
            Request::CreateAccount { name, .. } => {
                let stream = StreamId::account(name);
                let reply = Response::Created {
                    entity: stream.to_string(),
                };
                let command = AccountCommand::CreateAccount { name: name.clone() };
                self.idempotent(name, &request, body, reply, |extra| async move {
                    self.core
                        .execute_with::<Account>(&stream, command, ctx(), extra)
                        .await?;
                    Ok(())
                })
                .await
            }
            Request::ListAccounts => {
                let accounts = self.list::<Account>("account/")?;
                Ok(Response::Accounts(
                    accounts.into_iter().filter_map(|a| view(a.state)).collect(),
                ))
            }
            Request::ShowAccount { name } => {
                let a = self.show::<Account>(&StreamId::account(name), name.as_str()).await?;
                view(a.state)
                    .map(Response::Account)
                    .ok_or_else(|| not_found::<Account>(name.as_str()))
            }
            Request::ShowKeys { name } => {
                let a = self.show::<Account>(&StreamId::account(name), name.as_str()).await?;
                let key = |k: Option<crate::types::Secret>| {
                    k.map(|k| k.expose().to_string()).unwrap_or_default()
                };
                Ok(Response::Keys {
                    account: name.clone(),
                    primary: key(a.state.primary_key),
                    secondary: key(a.state.secondary_key),
                })
            }
            Request::RegenerateKey { name, key } => {
                run(name, AccountCommand::RegenerateKey { key: *key }).await
            }
            Request::DisableAccount { name } => run(name, AccountCommand::DisableAccount).await,
            Request::EnableAccount { name } => run(name, AccountCommand::EnableAccount).await,
            Request::DeleteAccount { name } => run(name, AccountCommand::DeleteAccount).await,
            Request::TailEvents { .. } | Request::Ping | Request::Whoami => {
                unreachable!("handled before dispatch")
            }
            Request::JoinPool { .. } => Err(permission(
                "joining a pool needs the pool's join token",
                &Caller::Admin,
            )),
            _ => Err(permission(
                "pools, jobs and tasks belong to accounts: sign with an account key (--account and --key)",
                &Caller::Admin,
            )),
        }
    }

    async fn account(
        &self,
        account: &AccountName,
        me: &Account,
        request: Request,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        // A disabled account may look but not change anything.
        let read_only = matches!(
            request,
            Request::ListPools
                | Request::ShowPool { .. }
                | Request::ShowJoinToken { .. }
                | Request::ListNodes { .. }
                | Request::ShowNode { .. }
                | Request::ListJobs
                | Request::ShowJob { .. }
                | Request::ListTasks { .. }
                | Request::ShowTask { .. }
                | Request::ReadTaskOutput { .. }
                | Request::ExplainTask { .. }
                | Request::ExplainJob { .. }
                | Request::EvaluateAutoscale { .. }
                | Request::AutoscaleHistory { .. }
                | Request::ReplayAutoscale { .. }
                | Request::ListContainers
                | Request::ListBlobs { .. }
                | Request::ShowBlob { .. }
                | Request::ReadBlob { .. }
                | Request::ListPackages
                | Request::ResolvePackage { .. }
                | Request::ListTaskFiles { .. }
                | Request::ReadTaskFile { .. }
                | Request::ListNodeFiles { .. }
                | Request::ReadNodeFile { .. }
        );
        if me.status == AccountStatus::Disabled && !read_only {
            return Err(ApiError::rejected(
                RejectionCode::AccountDisabled,
                format!("account {account} is disabled; an administrator can enable it"),
            ));
        }
        if request.is_blob() {
            return self.blob_request(account, request).await;
        }
        let principal = Principal::Account {
            account: account.clone(),
        };
        let ctx = || self.ctx(principal.clone(), request.idempotency_key());
        let pool_stream = |pool: &PoolId| StreamId::pool(account, pool);
        let job_stream = |job: &crate::types::JobId| StreamId::job(account, job);
        macro_rules! exec {
            ($ty:ty, $stream:expr, $id:expr, $command:expr) => {{
                let stream = $stream;
                self.show::<$ty>(&stream, $id.as_str()).await?;
                let outcome = self.core.execute::<$ty>(&stream, $command, ctx()).await?;
                Ok(done(&stream, outcome))
            }};
        }
        match &request {
            Request::CreatePool { spec, .. } => {
                if let crate::domain::pool::ScaleSettings::Autoscale {
                    evaluation_interval_secs,
                    ..
                } = &spec.scale
                {
                    self.check_autoscale_interval(*evaluation_interval_secs)?;
                }
                let mut spec = spec.clone();
                spec.account = account.clone();
                self.blobs
                    .check_refs(account, &spec.application_packages)
                    .await?;
                let stream = pool_stream(&spec.id);
                let reply = Response::Created {
                    entity: stream.to_string(),
                };
                // A local pool's nodes are started by the pool supervisor
                // once `PoolCreated` is in the log, as for any resize.
                self.idempotent(account, &request, body, reply, |extra| async move {
                    self.core
                        .execute_with::<Pool>(
                            &stream,
                            PoolCommand::CreatePool { spec },
                            ctx(),
                            extra,
                        )
                        .await?;
                    Ok(())
                })
                .await
            }
            Request::ListPools => Ok(Response::Pools(
                self.list::<Pool>(&format!("pool/{account}/"))?,
            )),
            Request::ShowPool { pool } => Ok(Response::Pool(
                self.show::<Pool>(&pool_stream(pool), pool.as_str()).await?,
            )),
            Request::ShowJoinToken { pool } => {
                self.show::<Pool>(&pool_stream(pool), pool.as_str()).await?;
                Ok(Response::JoinToken {
                    pool: pool.clone(),
                    token: self.join_token(account, pool),
                })
            }
            Request::ResizePool {
                pool,
                target_nodes,
                deallocation,
            } => exec!(
                Pool,
                pool_stream(pool),
                pool,
                PoolCommand::ResizePool {
                    target_nodes: *target_nodes,
                    deallocation: *deallocation,
                }
            ),
            Request::StopResize { pool } => {
                exec!(Pool, pool_stream(pool), pool, PoolCommand::StopResize)
            }
            Request::EnableAutoscale {
                pool,
                formula,
                evaluation_interval_secs,
            } => {
                self.check_autoscale_interval(*evaluation_interval_secs)?;
                exec!(
                    Pool,
                    pool_stream(pool),
                    pool,
                    PoolCommand::EnableAutoscale {
                        formula: formula.clone(),
                        evaluation_interval_secs: *evaluation_interval_secs,
                    }
                )
            }
            Request::DisableAutoscale { pool } => {
                exec!(Pool, pool_stream(pool), pool, PoolCommand::DisableAutoscale)
            }
            Request::ExplainTask { job, task } => {
                let stream = StreamId::task(account, job, task);
                let state = self.show::<Task>(&stream, task.as_str()).await?.state;
                // The picture must include everything durable so far.
                self.placement.caught_up(self.core.store().head()).await;
                let found = self.placement.scheduler().explain(&stream);
                let waiting = match found {
                    Some((pool_key, slots, reasons)) => {
                        Some(crate::compute::explain::Explanation {
                            slots,
                            reasons,
                            pool: self.pool_context(&pool_key).await?,
                        })
                    }
                    None => None,
                };
                Ok(Response::TaskExplanation {
                    job: job.clone(),
                    task: task.clone(),
                    status: state.status,
                    waiting,
                })
            }
            Request::ExplainJob { job } => {
                let stream = job_stream(job);
                let state = self.show::<Job>(&stream, job.as_str()).await?.state;
                self.placement.caught_up(self.core.store().head()).await;
                let groups = self.placement.scheduler().job_waits(&stream);
                let pool_key = match (groups.first(), state.spec.as_ref()) {
                    (Some((key, _)), _) => key.clone(),
                    (None, Some(spec)) => format!("{account}/{}", spec.pool),
                    (None, None) => String::new(),
                };
                Ok(Response::JobWaits {
                    job: job.clone(),
                    groups: groups.into_iter().map(|(_, g)| g).collect(),
                    pool: self.pool_context(&pool_key).await?,
                })
            }
            Request::EvaluateAutoscale { pool, formula } => {
                if let Some(text) = formula {
                    ensure_formula_size(text)?;
                }
                self.show::<Pool>(&pool_stream(pool), pool.as_str()).await?;
                let key = format!("{account}/{pool}");
                match self.autoscaler.evaluate(&key, formula.as_deref()) {
                    Some(e) => Ok(Response::AutoscaleEvaluation(e)),
                    None => Err(ApiError::rejected(
                        RejectionCode::PoolBeingDeleted,
                        format!("pool {pool} is being deleted"),
                    )),
                }
            }
            Request::AutoscaleHistory { pool, limit } => {
                let stream = pool_stream(pool);
                self.show::<Pool>(&stream, pool.as_str()).await?;
                let runs = super::autoscale::history(
                    self.core.store(),
                    &stream,
                    (*limit).clamp(1, 10_000) as usize,
                )
                .map_err(internal)?;
                Ok(Response::AutoscaleRuns(runs))
            }
            Request::ReplayAutoscale {
                pool,
                formula,
                from,
                to,
                every_secs,
            } => {
                ensure_formula_size(formula)?;
                let stream = pool_stream(pool);
                self.show::<Pool>(&stream, pool.as_str()).await?;
                let store = self.core.store().clone();
                let (formula, from, to) = (formula.clone(), *from, *to);
                let every = std::time::Duration::from_secs(*every_secs);
                let period = self.autoscaler.settings().sample_period;
                // Reading a month of samples and evaluating at every step
                // is work for a blocking thread, not the server's one.
                let steps = tokio::task::spawn_blocking(move || {
                    super::autoscale::replay(&store, &stream, &formula, from, to, every, period)
                })
                .await
                .map_err(internal)?
                .map_err(|e| ApiError::rejected(RejectionCode::InvalidValue, e))?;
                Ok(Response::AutoscaleReplay(steps))
            }
            Request::DeletePool { pool } => {
                let done: Result<Response, ApiError> =
                    exec!(Pool, pool_stream(pool), pool, PoolCommand::DeletePool);
                let done = done?;
                self.remove_nodes(account, pool).await?;
                let finished = self
                    .core
                    .execute::<Pool>(
                        &pool_stream(pool),
                        PoolCommand::FinishDeletion,
                        self.system_ctx(),
                    )
                    .await?;
                drop(done);
                Ok(self::done(&pool_stream(pool), finished))
            }
            Request::ListNodes { pool } => {
                self.show::<Pool>(&pool_stream(pool), pool.as_str()).await?;
                Ok(Response::Nodes(
                    self.list::<Node>(&format!("node/{account}/{pool}/"))?,
                ))
            }
            Request::ShowNode { pool, node } => Ok(Response::Node(
                self.show::<Node>(&StreamId::node(account, pool, node), node.as_str())
                    .await?,
            )),
            Request::DisableNode { pool, node } => exec!(
                Node,
                StreamId::node(account, pool, node),
                node,
                NodeCommand::DisableScheduling
            ),
            Request::EnableNode { pool, node } => exec!(
                Node,
                StreamId::node(account, pool, node),
                node,
                NodeCommand::EnableScheduling
            ),
            Request::RebootNode { pool, node } => exec!(
                Node,
                StreamId::node(account, pool, node),
                node,
                NodeCommand::Reboot
            ),
            Request::RemoveNode {
                pool,
                node,
                deallocation,
            } => {
                let removed: Result<Response, ApiError> = exec!(
                    Node,
                    StreamId::node(account, pool, node),
                    node,
                    NodeCommand::RemoveNode {
                        deallocation: *deallocation
                    }
                );
                let removed = removed?;
                // As in Azure Batch, removing a node lowers the pool's
                // target, so the pool supervisor does not replace it. A
                // pool under autoscale keeps its formula's target.
                let pool_state = self.show::<Pool>(&pool_stream(pool), pool.as_str()).await?;
                if pool_state.state.autoscale.is_none() && pool_state.state.target_nodes > 0 {
                    let resize = PoolCommand::ResizePool {
                        target_nodes: pool_state.state.target_nodes - 1,
                        deallocation: *deallocation,
                    };
                    if let Err(e) = self
                        .core
                        .execute::<Pool>(&pool_stream(pool), resize, ctx())
                        .await
                    {
                        tracing::warn!(%pool, error = %e, "pool target not lowered after a node removal");
                    }
                }
                Ok(removed)
            }
            Request::CreateJob { spec, .. } => {
                let mut spec = spec.clone();
                spec.account = account.clone();
                self.show::<Pool>(&pool_stream(&spec.pool), spec.pool.as_str())
                    .await
                    .map_err(|mut e| {
                        e.message = format!(
                            "{}: a job runs on an existing pool; create it first (lote pool create)",
                            e.message
                        );
                        e
                    })?;
                let stream = job_stream(&spec.id);
                let reply = Response::Created {
                    entity: stream.to_string(),
                };
                self.idempotent(account, &request, body, reply, |extra| async move {
                    self.core
                        .execute_with::<Job>(&stream, JobCommand::CreateJob { spec }, ctx(), extra)
                        .await?;
                    Ok(())
                })
                .await
            }
            Request::ListJobs => Ok(Response::Jobs(
                self.list::<Job>(&format!("job/{account}/"))?,
            )),
            Request::ShowJob { job } => Ok(Response::Job(
                self.show::<Job>(&job_stream(job), job.as_str()).await?,
            )),
            Request::DisableJob { job, disable_tasks } => exec!(
                Job,
                job_stream(job),
                job,
                JobCommand::DisableJob {
                    disable_tasks: *disable_tasks
                }
            ),
            Request::EnableJob { job } => exec!(Job, job_stream(job), job, JobCommand::EnableJob),
            Request::TerminateJob { job, reason } => exec!(
                Job,
                job_stream(job),
                job,
                JobCommand::TerminateJob {
                    reason: reason.clone()
                }
            ),
            Request::DeleteJob { job } => exec!(Job, job_stream(job), job, JobCommand::DeleteJob),
            Request::AddTasks { job, tasks, .. } => {
                if tasks.is_empty() || tasks.len() > crate::api::ADD_TASKS_BATCH_MAX {
                    return Err(Rejection::invalid(format!(
                        "a batch holds 1..={} tasks, not {}; split it",
                        crate::api::ADD_TASKS_BATCH_MAX,
                        tasks.len()
                    ))
                    .into());
                }
                let job_state = self.show::<Job>(&job_stream(job), job.as_str()).await?;
                // A package that does not exist would fail every attempt.
                let mut refs: Vec<&crate::domain::spec::PackageRef> = tasks
                    .iter()
                    .flat_map(|t| t.application_packages.iter())
                    .collect();
                refs.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
                refs.dedup();
                for r in refs {
                    self.blobs
                        .resolve(account, r.id.clone(), r.version.clone())
                        .await
                        .map_err(|mut e| {
                            e.message = format!("{}; no task was added", e.message);
                            e
                        })?;
                }
                // A task no node of the pool could ever hold is refused now,
                // not left queued for ever.
                if let Some(spec) = job_state.state.spec.as_ref() {
                    let pool = self
                        .show::<Pool>(&pool_stream(&spec.pool), spec.pool.as_str())
                        .await?;
                    let node_slots = pool.state.spec.map(|p| p.node_size.task_slots).unwrap_or(0);
                    if let Some(t) = tasks
                        .iter()
                        .find(|t| t.required_slots > node_slots || t.required_slots == 0)
                    {
                        return Err(Rejection::invalid(format!(
                            "task {} needs {} slots; nodes of pool {} have {node_slots}, and a task needs at least 1",
                            t.id, t.required_slots, spec.pool
                        ))
                        .into());
                    }
                }
                let reply = Response::TasksAdded {
                    job: job.clone(),
                    count: tasks.len() as u32,
                };
                let tasks = tasks.clone();
                self.idempotent(account, &request, body, reply, |extra| async move {
                    self.core
                        .add_tasks(account, job, tasks, ctx(), extra)
                        .await?;
                    Ok(())
                })
                .await
            }
            Request::ListTasks { job, after, limit } => {
                self.show::<Job>(&job_stream(job), job.as_str()).await?;
                let limit = match *limit as usize {
                    0 => LIST_ITEMS_MAX,
                    n => n.min(LIST_ITEMS_MAX),
                };
                let after = after.as_ref().map(|t| StreamId::task(account, job, t));
                let (items, next) =
                    self.page::<Task>(&format!("task/{account}/{job}/"), after.as_ref(), limit)?;
                let next =
                    next.and_then(|s| s.segments().last().and_then(|t| TaskId::new(*t).ok()));
                Ok(Response::Tasks { items, next })
            }
            Request::ShowTask { job, task } => Ok(Response::Task(
                self.show::<Task>(&StreamId::task(account, job, task), task.as_str())
                    .await?,
            )),
            Request::TerminateTask { job, task, reason } => exec!(
                Task,
                StreamId::task(account, job, task),
                task,
                TaskCommand::TerminateTask {
                    reason: reason.clone()
                }
            ),
            Request::DeleteTask { job, task } => exec!(
                Task,
                StreamId::task(account, job, task),
                task,
                TaskCommand::DeleteTask
            ),
            Request::ReadTaskOutput {
                job,
                task,
                attempt,
                stream,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                let (node, attempt, answer, completed) = self
                    .task_file(account, job, task, *attempt, stream.file_name(), op)
                    .await?;
                match answer {
                    crate::api::FileAnswer::Chunk(chunk) => Ok(Response::TaskOutput {
                        node,
                        attempt,
                        chunk,
                        completed,
                    }),
                    crate::api::FileAnswer::Listing(_) => {
                        Err(internal("the agent answered a read with a listing"))
                    }
                }
            }
            Request::ListTaskFiles {
                job,
                task,
                attempt,
                path,
                recursive,
            } => {
                let op = crate::api::FileOp::List {
                    recursive: *recursive,
                };
                let (node, _, answer, completed) = self
                    .task_file(account, job, task, *attempt, path, op)
                    .await?;
                Ok(Response::Files {
                    node,
                    answer,
                    completed,
                })
            }
            Request::ReadTaskFile {
                job,
                task,
                attempt,
                path,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                let (node, _, answer, completed) = self
                    .task_file(account, job, task, *attempt, path, op)
                    .await?;
                Ok(Response::Files {
                    node,
                    answer,
                    completed,
                })
            }
            Request::ListNodeFiles {
                pool,
                node,
                path,
                recursive,
            } => {
                let op = crate::api::FileOp::List {
                    recursive: *recursive,
                };
                self.node_file(account, pool, node, path, op).await
            }
            Request::ReadNodeFile {
                pool,
                node,
                path,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                self.node_file(account, pool, node, path, op).await
            }
            Request::ListPackages => self.blobs.packages(account).await,
            Request::BeginPackageUpload { id, version } => {
                self.blobs
                    .begin_package(account, id.clone(), version.clone(), self.clock.now())
                    .await
            }
            Request::SetDefaultPackageVersion { id, version } => {
                self.blobs
                    .set_default(account, id.clone(), version.clone(), self.clock.now())
                    .await
            }
            Request::DeletePackageVersion { id, version } => {
                self.blobs
                    .delete_version(account, id.clone(), version.clone())
                    .await
            }
            Request::TailEvents { .. } | Request::Ping | Request::Whoami => {
                unreachable!("handled before dispatch")
            }
            Request::JoinPool { .. } => Err(permission(
                "joining a pool needs the pool's join token (lote pool join-token)",
                &Caller::Account(account.clone(), Box::default()),
            )),
            _ => Err(permission(
                "managing accounts needs the administrator key",
                &Caller::Account(account.clone(), Box::default()),
            )),
        }
    }

    fn system_ctx(&self) -> Ctx {
        self.ctx(
            Principal::System {
                component: "provider".into(),
            },
            None,
        )
    }

    /// Removes every node of a pool being deleted: their tasks are
    /// terminated, local agents stopped and their directories removed.
    async fn remove_nodes(&self, account: &AccountName, pool: &PoolId) -> Result<(), ApiError> {
        let nodes = self.list::<Node>(&format!("node/{account}/{pool}/"))?;
        for n in nodes {
            let Some(node) = n.state.id.clone() else {
                continue;
            };
            self.sagas.remove_now(account, pool, &node).await?;
        }
        Ok(())
    }

    /// Part of an attempt's stdout or stderr, read by its node's agent.
    #[allow(clippy::too_many_arguments)]
    /// A file operation on an attempt's directory, carried out by the
    /// agent of the node it ran on: (node, attempt, answer, completed).
    async fn task_file(
        &self,
        account: &AccountName,
        job: &crate::types::JobId,
        task: &TaskId,
        attempt: u32,
        path: &str,
        op: crate::api::FileOp,
    ) -> Result<(NodeId, u32, crate::api::FileAnswer, bool), ApiError> {
        let stream = StreamId::task(account, job, task);
        let state = self.show::<Task>(&stream, task.as_str()).await?.state;
        let attempt = if attempt == 0 { state.attempt } else { attempt };
        if attempt == 0 {
            return Err(ApiError::rejected(
                RejectionCode::TaskStateConflict,
                format!("task {task} has not run yet: it is queued (lote task show {job} {task})"),
            ));
        }
        if attempt > state.attempt {
            return Err(Rejection::invalid(format!(
                "task {task} has had {} attempts; there is no attempt {attempt}",
                state.attempt
            ))
            .into());
        }
        // Whether the attempt has ended is decided before reading, so a
        // reader that sees `completed` and reads to the end has it all.
        let completed = !(attempt == state.attempt
            && matches!(state.status, TaskStatus::Assigned | TaskStatus::Running));
        // The attempt's node, from its assignment in the task's history.
        let mut node = None;
        for e in self.core.store().read_stream(&stream, 1, usize::MAX)? {
            if let Ok(crate::domain::task::TaskEvent::TaskAssigned {
                placement,
                attempt: a,
                ..
            }) = domain::decode_event(crate::store::StreamKind::Task, &e)
            {
                if a == attempt {
                    node = Some(placement);
                }
            }
        }
        let Some(placed) = node else {
            return Err(internal(format!(
                "task {task} attempt {attempt} has no assignment"
            )));
        };
        let root = crate::api::FileRoot::Attempt(crate::api::AttemptRef {
            job: job.clone(),
            task: task.clone(),
            attempt,
        });
        let answer = self
            .ask_agent(account, &placed.pool, &placed.node, root, path, op, || {
                format!(
                    "attempt {attempt} of task {task} ran on node {}, which has left pool {}; its files went with it",
                    placed.node, placed.pool
                )
            })
            .await?;
        Ok((placed.node, attempt, answer, completed))
    }

    /// A file operation on a node's own directory.
    async fn node_file(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        path: &str,
        op: crate::api::FileOp,
    ) -> Result<Response, ApiError> {
        self.show::<Pool>(&StreamId::pool(account, pool), pool.as_str())
            .await?;
        let answer = self
            .ask_agent(
                account,
                pool,
                node,
                crate::api::FileRoot::Node,
                path,
                op,
                || format!("pool {pool} has no node {node} (lote node list {pool})"),
            )
            .await?;
        Ok(Response::Files {
            node: node.clone(),
            answer,
            completed: false,
        })
    }

    /// Hands a file operation to a node's agent (waking its long poll) and
    /// waits for the answer.
    #[allow(clippy::too_many_arguments)]
    async fn ask_agent(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        root: crate::api::FileRoot,
        path: &str,
        op: crate::api::FileOp,
        gone: impl FnOnce() -> String,
    ) -> Result<crate::api::FileAnswer, ApiError> {
        if path.len() > 4096 {
            return Err(Rejection::invalid("a file path is at most 4096 bytes").into());
        }
        let pool_key = format!("{account}/{pool}");
        if self.placement.scheduler().node(&pool_key, node).is_none() {
            return Err(ApiError::rejected(RejectionCode::NodeNotFound, gone()));
        }
        let op = match op {
            crate::api::FileOp::Read { offset, max_bytes } => crate::api::FileOp::Read {
                offset,
                max_bytes: max_bytes.clamp(1, crate::api::OUTPUT_CHUNK_MAX),
            },
            list => list,
        };
        let read = crate::api::FileRead {
            read: 0,
            root,
            path: path.to_string(),
            op,
        };
        self.placement
            .read_output(account, pool, node, read, FILE_ANSWER_WAIT)
            .await
            .map_err(|why| match why {
                crate::server::placement::ReadFailure::Agent(why) => {
                    ApiError::rejected(RejectionCode::FileNotFound, why)
                }
                crate::server::placement::ReadFailure::Unreachable(why) => {
                    ApiError::rejected(RejectionCode::NodeStateConflict, why)
                }
            })
    }

    /// The blob store's requests, for an account or a node of it.
    async fn blob_request(
        &self,
        account: &AccountName,
        request: Request,
    ) -> Result<Response, ApiError> {
        let blobs = &self.blobs;
        match request {
            Request::ListContainers => blobs.containers(account).await,
            Request::ListBlobs {
                container,
                prefix,
                after,
                limit,
            } => blobs.list(account, container, prefix, after, limit).await,
            Request::ShowBlob { container, name } => Ok(Response::Blob(
                blobs.stat(account, &container, &name).await?,
            )),
            Request::DeleteBlob { container, name } => blobs.delete(account, container, name).await,
            Request::BeginUpload { container, name } => {
                blobs
                    .begin(account, container, name, self.clock.now())
                    .await
            }
            Request::UploadChunk {
                upload,
                offset,
                data,
            } => blobs.chunk(account, upload, offset, data).await,
            Request::FinishUpload {
                upload,
                size,
                sha256,
            } => blobs.finish(account, upload, size, sha256).await,
            Request::AbortUpload { upload } => blobs.abort(account, upload),
            Request::ReadBlob {
                container,
                name,
                sha256,
                offset,
                max_bytes,
            } => {
                blobs
                    .read(account, container, name, sha256, offset, max_bytes)
                    .await
            }
            Request::ResolvePackage { id, version } => {
                let (version, blob) = blobs.resolve(account, id.clone(), version).await?;
                Ok(Response::PackageResolved { id, version, blob })
            }
            other => Err(internal(format!("{} is not a blob request", other.name()))),
        }
    }

    /// Waits until placement has folded everything recorded so far, so an
    /// agent told "recorded" is never handed the same attempt again (its
    /// next poll sees the picture with the report in it).
    async fn placement_saw_it(&self) {
        let head = self.core.store().head();
        let wait = self.placement.caught_up(head);
        // A stalled feed must not stall agents; placement catches up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
    }

    /// A node agent's requests.
    async fn agent(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        request: Request,
    ) -> Result<Response, ApiError> {
        let principal = Principal::Node {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
        };
        let ctx = || self.ctx(principal.clone(), None);
        let node_stream = StreamId::node(account, pool, node);
        // Any call from the agent is its heartbeat.
        self.placement.touch(account, pool, node);
        // A node reads its account's blobs (resource files, packages) and
        // writes outputs, as the account could; it may not delete.
        if request.is_blob() && !matches!(request, Request::DeleteBlob { .. }) {
            return self.blob_request(account, request).await;
        }
        match request {
            Request::AgentRegister { agent } => {
                let pool_state = self
                    .show::<Pool>(&StreamId::pool(account, pool), pool.as_str())
                    .await?;
                let (start_task, application_packages) = pool_state
                    .state
                    .spec
                    .map(|p| (p.start_task, p.application_packages))
                    .unwrap_or_default();
                // A start task not waited for runs while the node works.
                let command = NodeCommand::RegisterAgent {
                    agent,
                    has_start_task: start_task.as_ref().is_some_and(|s| s.wait_for_success),
                };
                match self
                    .core
                    .execute::<Node>(&node_stream, command, ctx())
                    .await
                {
                    Ok(_) => Ok(Response::Registered {
                        start_task,
                        application_packages,
                    }),
                    // An agent restarting on a node that is already up.
                    Err(CoreError::Rejected(r)) if r.code == RejectionCode::NodeStateConflict => {
                        Ok(Response::Registered {
                            start_task: None,
                            application_packages,
                        })
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Request::AgentUsage { usage } => {
                // Kept in memory until the next sample takes it into the
                // pool's log; a node removed meanwhile is simply dropped.
                self.autoscaler
                    .report_usage(&format!("{account}/{pool}"), node, usage);
                Ok(Response::Recorded)
            }
            Request::AgentStartTaskBegin => {
                self.core
                    .execute::<Node>(&node_stream, NodeCommand::BeginStartTask, ctx())
                    .await?;
                Ok(Response::Recorded)
            }
            Request::AgentStartTaskFinished {
                success,
                exit_code,
                message,
            } => {
                let command = NodeCommand::FinishStartTask {
                    success,
                    exit_code,
                    message,
                };
                self.core
                    .execute::<Node>(&node_stream, command, ctx())
                    .await?;
                Ok(Response::Recorded)
            }
            Request::AgentPoll { running, wait_ms } => {
                // Recorded beside the poll, not before it: a changed count
                // is a durable append, and work must not wait for it. A
                // busy node's count is recorded at most once a second (it
                // changes with every task); idle ⇄ busy at once.
                let count = running.len() as u32;
                let now = std::time::Instant::now();
                let due = match self.loads.borrow().get(&node_stream) {
                    None => true,
                    Some((last, _)) if (*last == 0) != (count == 0) => true,
                    Some((last, at)) => {
                        *last != count && now.duration_since(*at) >= LOAD_REPORT_EVERY
                    }
                };
                if due {
                    self.loads
                        .borrow_mut()
                        .insert(node_stream.clone(), (count, now));
                    let load = NodeCommand::ReportLoad {
                        running_tasks: count,
                    };
                    let (core, stream, load_ctx) = (self.core.clone(), node_stream.clone(), ctx());
                    tokio::task::spawn_local(async move {
                        if let Err(e) = core.execute::<Node>(&stream, load, load_ctx).await {
                            tracing::debug!(%stream, error = %e, "load report refused");
                        }
                    });
                }
                let wait = std::time::Duration::from_millis(u64::from(wait_ms.min(30_000)));
                let work = self
                    .placement
                    .work_for(account, pool, node, &running, wait)
                    .await;
                let mut assignments = Vec::with_capacity(work.to_start.len());
                for (job, task, attempt) in work.to_start {
                    let spec = match self.placement.take_spec(account, &job, &task, attempt) {
                        Some(spec) => Some(spec),
                        // From the task's actor, live since it was
                        // assigned, which knows from the store's write
                        // marks that its stream has not changed.
                        None => {
                            let stream = StreamId::task(account, &job, &task);
                            self.core.state::<Task>(&stream).await?.state.spec
                        }
                    };
                    if let Some(spec) = spec {
                        let job_resource_files = self.job_resource_files(account, &job).await?;
                        assignments.push(crate::api::Assignment {
                            job,
                            task,
                            attempt,
                            spec,
                            job_resource_files,
                        });
                    }
                }
                Ok(Response::Work {
                    assignments,
                    cancel: work.cancel,
                    reads: work.reads,
                    reboot: work.reboot,
                })
            }
            Request::AgentFileData { read, result } => {
                // An answer nobody waits for any more (timed out) is dropped.
                self.placement
                    .deliver_read(account, pool, node, read, result);
                Ok(Response::Recorded)
            }
            Request::AgentStarted { job, task, attempt } => {
                let stream = StreamId::task(account, &job, &task);
                match self
                    .core
                    .execute::<Task>(&stream, TaskCommand::StartTask { attempt }, ctx())
                    .await
                {
                    Ok(_) => {
                        self.placement_saw_it().await;
                        Ok(Response::Recorded)
                    }
                    // Reported twice (a resend after a lost reply).
                    Err(CoreError::Rejected(r)) if r.code == RejectionCode::TaskStateConflict => {
                        Ok(Response::Recorded)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Request::AgentCompleted { completions } => {
                if completions.is_empty() || completions.len() > crate::api::AGENT_COMPLETIONS_MAX {
                    return Err(ApiError::rejected(
                        RejectionCode::InvalidValue,
                        format!(
                            "a completion report carries 1 to {} completions, not {}",
                            crate::api::AGENT_COMPLETIONS_MAX,
                            completions.len()
                        ),
                    ));
                }
                // Each goes through its task's actor; appended together,
                // they share the store's rounds and fsyncs.
                let ctx = ctx();
                let results = futures_util::future::join_all(
                    completions
                        .into_iter()
                        .map(|c| self.complete_attempt(account, c, ctx.clone())),
                )
                .await;
                if results.iter().any(|r| matches!(r, Ok(true))) {
                    self.placement_saw_it().await;
                }
                Ok(Response::Reported {
                    results: results.into_iter().map(|r| r.map(|_| ())).collect(),
                })
            }
            _ => Err(permission(
                "node agents may only register, poll and report",
                &Caller::Node(principal.clone()),
            )),
        }
    }

    /// A job's resource files, which its creation fixed: from placement's
    /// picture (which placed the attempt, so has folded the job), else
    /// from the job's actor.
    async fn job_resource_files(
        &self,
        account: &AccountName,
        job: &crate::types::JobId,
    ) -> Result<Vec<ResourceFile>, ApiError> {
        let stream = StreamId::job(account, job);
        let known = self.placement.scheduler().job_resource_files(&stream);
        if let Some(files) = known {
            return Ok(files.as_ref().clone());
        }
        let job_state = self.core.state::<Job>(&stream).await?;
        Ok(job_state
            .state
            .spec
            .map(|j| j.common_resource_files)
            .unwrap_or_default())
    }

    /// Records one ended attempt: Ok(true) if recorded now, Ok(false) if
    /// it had been (a resend after a lost reply).
    async fn complete_attempt(
        &self,
        account: &AccountName,
        c: crate::api::Completion,
        ctx: Ctx,
    ) -> Result<bool, ApiError> {
        let stream = StreamId::task(account, &c.job, &c.task);
        let command = TaskCommand::CompleteTask {
            attempt: c.attempt,
            result: c.result,
            outputs: c.outputs,
        };
        match self.core.execute::<Task>(&stream, command, ctx).await {
            Ok(_) => Ok(true),
            Err(CoreError::Rejected(r)) if r.code == RejectionCode::StaleAttempt => {
                // Recorded before (same attempt, no longer running): a
                // resend. Otherwise the attempt was superseded.
                let now = self.core.state::<Task>(&stream).await?;
                let recorded = now.state.attempt == c.attempt
                    && !matches!(now.state.status, TaskStatus::Assigned | TaskStatus::Running);
                if recorded {
                    Ok(false)
                } else {
                    Err(r.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn join(
        &self,
        account: &AccountName,
        pool: &PoolId,
        name: String,
    ) -> Result<Response, ApiError> {
        let node = NodeId::new(format!("node-{}", &new_uuid().simple().to_string()[..12]))
            .map_err(internal)?;
        let stream = StreamId::node(account, pool, &node);
        let principal = Principal::Node {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
        };
        self.core
            .execute::<Node>(
                &stream,
                NodeCommand::AddNode {
                    account: account.clone(),
                    pool: pool.clone(),
                    node: node.clone(),
                    name,
                },
                self.ctx(principal, None),
            )
            .await?;
        Ok(Response::Joined {
            credential: self.node_credential(account, pool, &node),
            node,
        })
    }

    /// Starts streaming events to the connection. Accounts see their own
    /// entities' events; the administrator sees everything.
    async fn tail(
        self: Rc<Self>,
        caller: Caller,
        from: u64,
        id: u64,
        tx: mpsc::Sender<ServerFrame>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<tokio::task::AbortHandle, ApiError> {
        let account = match &caller {
            Caller::Admin => None,
            Caller::Account(a, _) => Some(a.clone()),
            _ => {
                return Err(permission(
                    "only accounts and the administrator may tail events",
                    &caller,
                ))
            }
        };
        let store = self.core.store().clone();
        let from = if from == 0 { store.head() + 1 } else { from };
        let mut subscription = store.subscribe(from);
        if tx
            .send(ServerFrame::Reply {
                id,
                result: Ok(Response::Subscribed { from }),
            })
            .await
            .is_err()
        {
            return Err(ApiError::new(ErrorKind::Internal, "connection closed"));
        }
        let task = tokio::task::spawn_local(async move {
            loop {
                let envelope = tokio::select! {
                    next = subscription.next() => match next {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "subscription ended");
                            return;
                        }
                    },
                    _ = stop.wait_for(|s| *s) => return,
                };
                let mine = match &account {
                    None => true,
                    Some(a) => envelope.stream.segments().first() == Some(&a.as_str()),
                };
                if !mine {
                    continue;
                }
                let kind = envelope.stream.kind();
                let event = EventView {
                    position: envelope.position,
                    entity: envelope.stream.to_string(),
                    version: envelope.stream_version,
                    recorded_at: envelope.recorded_at,
                    event_type: envelope.event_type.clone(),
                    principal: envelope.causation.principal.clone(),
                    request_id: envelope.causation.request_id.to_string(),
                    data: crate::replay::event_json(kind, &envelope).to_string(),
                };
                if tx.send(ServerFrame::Event { id, event }).await.is_err() {
                    return;
                }
            }
        });
        Ok(task.abort_handle())
    }
}

fn view(account: Account) -> Option<AccountView> {
    Some(AccountView {
        name: account.name?,
        status: account.status,
        created_at: account.created_at,
        keys_rotated_at: account.keys_rotated_at,
    })
}
