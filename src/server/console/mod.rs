//! The admin console, `/metrics`, `/healthz` and `/readyz`: HTTP on a
//! listener of their own (`--http-listen`).
//!
//! hyper serves each connection as a local task on the control plane's
//! thread, like the message API's connections, so a request reaches the
//! very `Service` (and its dispatcher) a framed call does, with no second
//! copy of any rule and no channel between threads. The console's own
//! work is small (routing, JSON, a session lookup); the pages are static
//! files compiled into the binary.
//!
//! Every connection is hostile until its request carries a live session:
//! headers must arrive within a deadline and within a size, bodies are
//! bounded before they are read, connections are capped, and TLS follows
//! the message API's `--plaintext` policy with the same certificate.

mod api;
mod assets;
mod files;
pub(super) mod http;
mod live;
mod session;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tls::ServerTls;
use super::Service;
use http::{Body, Reply};

/// What every request handler shares.
pub(super) struct Console {
    service: Rc<Service>,
    sessions: session::Sessions,
    stop: watch::Receiver<bool>,
}

/// The console's listener, bound.
pub(super) struct Listening {
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// Binds the console's address, if it has one.
pub(super) async fn bind(listen: Option<&str>) -> Result<Option<Listening>, super::ServerError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let (listener, addr) = super::bind(listen, "--http-listen").await?;
    Ok(Some(Listening { listener, addr }))
}

/// Serves the console until `stop`; returns its address.
pub(super) fn start(
    listening: Listening,
    service: Rc<Service>,
    tls: Arc<ServerTls>,
    session_ttl: Duration,
    stop: watch::Receiver<bool>,
) -> SocketAddr {
    let console = Rc::new(Console {
        service,
        sessions: session::Sessions::new(session_ttl),
        stop: stop.clone(),
    });
    let app: super::http_serve::App = Rc::new(move |req, peer, secure| {
        let console = console.clone();
        Box::pin(async move { console.route(req, peer, secure).await })
    });
    let serving = super::http_serve::Serving {
        what: "the console",
        tls,
        stop,
    };
    super::http_serve::spawn(listening.listener, app, serving);
    listening.addr
}

impl Console {
    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let reply = match (&method, path.as_str()) {
            (&Method::GET, "/") => Reply::redirect("/ui/"),
            (&Method::GET, "/healthz") => Reply::text(200, "ok\n"),
            (&Method::GET, "/readyz") => self.ready().await,
            (&Method::GET, "/metrics") => self.metrics(&req, peer).await,
            (&Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => assets::serve(p),
            (_, p) if p.starts_with("/api/") => self.api(req, secure).await,
            _ => Reply::error(404, "no such page; the console is at /ui/"),
        };
        reply.into_response()
    }

    /// Alive and able to serve: the log answers and placement has folded
    /// the log it started with.
    async fn ready(&self) -> Reply {
        let head = self.service.store().head();
        match self.service.placement_stats().await {
            Ok(p) if p.caught_up => Reply::text(200, &format!("ready: log head {head}\n")),
            Ok(_) => Reply::text(503, "not ready: placement is still reading the log\n"),
            Err(e) => Reply::text(503, &format!("not ready: {}\n", e.message)),
        }
    }

    /// From this machine, or with the admin key as a bearer token.
    async fn metrics(&self, req: &Request<Incoming>, peer: SocketAddr) -> Reply {
        if !peer.ip().is_loopback() {
            let bearer = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let admitted = match bearer {
                Some(key) => self.service.console_sign_in(None, key).await.is_ok(),
                None => false,
            };
            if !admitted {
                return Reply::error(
                    401,
                    "metrics are served to this machine, or with the admin key (Authorization: Bearer KEY)",
                );
            }
        }
        match self.service.metrics_text().await {
            Ok(text) => Reply::bytes(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text.into_bytes(),
            ),
            Err(e) => Reply::error(500, &e.message),
        }
    }

    /// `/api/…`: a session, and for what changes anything, proof that the
    /// request comes from the console's own page.
    async fn api(&self, req: Request<Incoming>, secure: bool) -> Reply {
        let path = req.uri().path().to_string();
        if path == "/api/session" {
            return self.session_endpoint(req, secure).await;
        }
        let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
        let who = match self.signed_in(&req, changes).await {
            Ok(who) => who,
            Err(reply) => return reply,
        };
        match (req.method().clone(), path.as_str()) {
            (Method::POST, "/api/call") => self.call(req, &who).await,
            (Method::GET, "/api/audit") => self.audit(&req, &who).await,
            (Method::GET, "/api/tasks") => self.tasks(&req, &who).await,
            (Method::GET, "/api/waits") => self.waits(&req, &who).await,
            (Method::GET, "/api/node-tasks") => self.node_tasks(&req, &who).await,
            (Method::GET, "/api/output") => self.output(&req, &who).await,
            (Method::GET, "/api/pool-samples") => self.pool_samples(&req, &who).await,
            (Method::GET, "/api/live") => self.live(&req, &who),
            (Method::GET, "/api/tasks.csv") => self.tasks_csv(&req, &who).await,
            (Method::GET, "/api/download") => self.download(&req, &who).await,
            (Method::PUT, "/api/upload") => self.upload(req, &who).await,
            _ => Reply::error(404, &format!("no such API: {} {path}", req.method())),
        }
    }
}
