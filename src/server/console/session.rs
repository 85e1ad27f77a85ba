//! Console sign-in: a key checked once, then a session cookie.
//!
//! The cookie is HttpOnly (no script reads it), SameSite=Strict (no other
//! site's page sends it) and Secure over TLS; the key itself is never
//! stored, in the browser or here (a session holds the key's digest, so
//! a key regenerated since ends it). Every request that changes anything
//! must also carry the session's CSRF token in a header, which only the
//! console's own page can read (from `GET /api/session`), and an `Origin`,
//! when the browser sends one, of this very host.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Method, Request};
use sha2::{Digest, Sha256};

use super::http::{self, Reply};
use super::Console;
use crate::server::service::console::{ConsoleUser, KeyDigest};
use crate::server::service::Caller;
use crate::types::AccountName;

pub const COOKIE: &str = "lote_session";
pub const CSRF_HEADER: &str = "x-lote-csrf";
/// Most sessions kept; past it the oldest goes.
const SESSIONS_MAX: usize = 10_000;
/// Largest sign-in body.
const SIGN_IN_BYTES_MAX: usize = 4096;

struct Entry {
    user: ConsoleUser,
    key: KeyDigest,
    csrf: String,
    expires: Instant,
}

/// The live sessions, by the digest of their token (a lookup's timing
/// then says nothing about the token).
pub struct Sessions {
    ttl: Duration,
    live: RefCell<HashMap<[u8; 32], Entry>>,
}

/// A request's signed-in user.
pub struct SignedIn {
    pub user: ConsoleUser,
    pub caller: Caller,
    pub csrf: String,
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            live: RefCell::default(),
        }
    }

    /// A new session: its token (the cookie) and CSRF token.
    fn open(&self, user: ConsoleUser, key: KeyDigest) -> (String, String) {
        let token = crate::clock::new_key();
        let csrf = crate::clock::new_key();
        let mut live = self.live.borrow_mut();
        let now = Instant::now();
        live.retain(|_, e| e.expires > now);
        if live.len() >= SESSIONS_MAX {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(
            token_digest(&token),
            Entry {
                user,
                key,
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        (token, csrf)
    }

    fn find(&self, token: &str) -> Option<(ConsoleUser, KeyDigest, String)> {
        let digest = token_digest(token);
        let mut live = self.live.borrow_mut();
        let entry = live.get(&digest)?;
        if entry.expires <= Instant::now() {
            live.remove(&digest);
            return None;
        }
        Some((entry.user.clone(), entry.key, entry.csrf.clone()))
    }

    fn close(&self, token: &str) {
        self.live.borrow_mut().remove(&token_digest(token));
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    /// None: the operator, with the admin key.
    account: Option<String>,
    key: String,
}

fn unauthorised(why: &str) -> Reply {
    Reply::error(401, why)
}

/// The request's `Origin` is this host (the port serves both HTTP and
/// HTTPS), or the browser sent none.
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = http::header(req, "origin") else {
        return true;
    };
    let host = http::header(req, "host").unwrap_or_default();
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    !host.is_empty() && origin_host == Some(host)
}

impl Console {
    /// `POST` signs in, `GET` says who is signed in (and the CSRF token),
    /// `DELETE` signs out.
    pub(super) async fn session_endpoint(&self, req: Request<Incoming>, secure: bool) -> Reply {
        match *req.method() {
            Method::POST => self.sign_in(req, secure).await,
            Method::GET => match self.signed_in(&req, false).await {
                Ok(who) => Reply::json(200, &session_json(&who.user, &who.csrf)),
                Err(reply) => reply,
            },
            Method::DELETE => match self.signed_in(&req, true).await {
                Ok(_) => {
                    if let Some(token) = http::cookie(&req, COOKIE) {
                        self.sessions.close(token);
                    }
                    Reply::json(200, &serde_json::json!({ "signed_out": true }))
                        .header(hyper::header::SET_COOKIE, clear_cookie(secure))
                }
                Err(reply) => reply,
            },
            _ => Reply::error(405, "use POST to sign in, GET to ask, DELETE to sign out"),
        }
    }

    async fn sign_in(&self, req: Request<Incoming>, secure: bool) -> Reply {
        // A page of another site cannot send JSON without asking first,
        // and its Origin shows: no one signs a browser in to someone
        // else's session.
        let json =
            http::header(&req, "content-type").is_some_and(|t| t.starts_with("application/json"));
        if !json || !same_origin(&req) {
            return Reply::error(403, "sign in from the console's own page");
        }
        let body = match http::body(req, SIGN_IN_BYTES_MAX).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let form: SignIn = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => return Reply::error(400, &format!("sign-in: {e}")),
        };
        let account = match form.account.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => match AccountName::new(name) {
                Ok(a) => Some(a),
                Err(e) => return Reply::error(400, &e.to_string()),
            },
        };
        match self
            .service
            .console_sign_in(account.as_ref(), form.key.trim())
            .await
        {
            Ok((user, key)) => {
                let (token, csrf) = self.sessions.open(user.clone(), key);
                let secs = self.sessions.ttl.as_secs();
                let cookie = format!(
                    "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={secs}{}",
                    if secure { "; Secure" } else { "" }
                );
                Reply::json(200, &session_json(&user, &csrf))
                    .header(hyper::header::SET_COOKIE, cookie)
            }
            Err(e) => Reply::api_error(&e),
        }
    }

    /// The request's session, checked: live, its key still good, and for
    /// a request that changes anything, its CSRF token and origin.
    pub(super) async fn signed_in(
        &self,
        req: &Request<Incoming>,
        changes: bool,
    ) -> Result<SignedIn, Reply> {
        let token =
            http::cookie(req, COOKIE).ok_or_else(|| unauthorised("sign in first: no session"))?;
        let (user, key, csrf) = self
            .sessions
            .find(token)
            .ok_or_else(|| unauthorised("the session has ended; sign in again"))?;
        if changes {
            let given = http::header(req, CSRF_HEADER).unwrap_or_default();
            if given.is_empty() || !constant_eq(given, &csrf) || !same_origin(req) {
                return Err(Reply::error(
                    403,
                    "refused: a request that changes anything must come from the console's own page (CSRF token and origin)",
                ));
            }
        }
        match self.service.console_caller(&user, &key).await {
            Ok(caller) => Ok(SignedIn { user, caller, csrf }),
            Err(_) => {
                self.sessions.close(token);
                Err(unauthorised(
                    "the key this session was opened with is no longer valid (regenerated?); sign in again",
                ))
            }
        }
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

fn session_json(user: &ConsoleUser, csrf: &str) -> serde_json::Value {
    serde_json::json!({
        "operator": matches!(user, ConsoleUser::Admin),
        "account": user.account().map(|a| a.to_string()),
        "csrf": csrf,
    })
}
