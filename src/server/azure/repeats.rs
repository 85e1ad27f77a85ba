//! At most once: a changing request whose signature and body arrive again
//! while the signature is still accepted is answered with the first
//! answer, and nothing is done twice.
//!
//! SharedKey signs no nonce, so an exact copy of a signed request is valid
//! for as long as its `ocp-date` is within the clock window. Refusing such
//! copies would refuse the SDK's own retries (re-signed with the same date,
//! so the same signature) after a lost answer. Answering them with what the
//! first one got serves the retry and makes a replay do nothing: a deleted
//! pool is not created again, a resize is not redone after a later one.
//!
//! Keyed on the account, the signature and the body's bytes (the signature
//! covers the body's length only), so two different task collections of the
//! same length in the same second are two requests. `ocp-date` has whole
//! seconds, so two identical calls a client makes in one second (a setup
//! script's "create this pool" twice, the second expecting `PoolExists`)
//! share a signature too; the SDK gives each call its own
//! `client-request-id` and keeps it across retries. So a copy with another
//! `client-request-id` that arrives within `SAME_SECOND_GRACE` of the first
//! is a new call and runs; any later copy gets the first answer, whatever
//! its id (which is not signed). Reads are not kept: a
//! repeated read changes nothing. A failed change is forgotten, so its retry
//! runs again (a refusal changed nothing). Answers are kept beside the log
//! (`EventStore::put_side`) so a restart keeps them; one whose request was
//! still running when the server stopped is not, and that request, sent
//! again, runs again (its create, if it had a `client-request-id`, is still
//! made once by the request-id record).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::AzError;
use crate::server::console::http::Reply;
use crate::server::Service;

/// The side-record kind answers are kept under.
const SIDE_KIND: &str = "azure-answer";

/// Most bytes of kept answers per account; past it, changing requests are
/// answered 503 with a `Retry-After` until the oldest expire.
pub(super) const ACCOUNT_BYTES_MAX: usize = 128 << 20;

/// Most bytes of one answer's body (a task collection's answer is about
/// 25 KB; no changing request's answer comes near this).
const ANSWER_BODY_MAX: usize = 4 << 20;

/// Bookkeeping per kept answer, counted against the account's bytes.
const ENTRY_OVERHEAD: usize = 160;

/// How long after the first copy of a signature another call (another
/// `client-request-id`) with the same signature runs as a new call: one
/// second of `ocp-date` resolution plus the first call's own time.
const SAME_SECOND_GRACE: Duration = Duration::from_secs(2);

type Key = [u8; 32];

#[derive(Serialize, Deserialize)]
struct Answer {
    account: String,
    /// When the request's signature stops being accepted (Unix seconds).
    expires: i64,
    /// The first answer's `request-id`.
    request_id: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }

    fn reply(&self) -> Reply {
        Reply::from_parts(self.status, &self.headers, Bytes::from(self.body.clone())).header(
            HeaderName::from_static("lote-answer-of"),
            self.request_id.clone(),
        )
    }
}

struct Entry {
    /// When the first copy arrived (a kept answer loaded at start: the past).
    first_seen: Instant,
    client_request_id: Option<String>,
    state: State,
}

enum State {
    Running(Rc<Notify>),
    Done(Rc<Answer>),
}

/// The request a key names: who signed it, how, and what it carries.
pub(super) struct Signed<'a> {
    pub account: &'a str,
    pub signature: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    /// Not signed: it tells the SDK's separate calls apart, not replays.
    pub client_request_id: Option<&'a str>,
}

impl Signed<'_> {
    fn key(&self) -> Key {
        let mut h = Sha256::new();
        for part in [
            self.account.as_bytes(),
            self.signature.as_bytes(),
            self.method.as_bytes(),
            self.path.as_bytes(),
            self.query.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(self.body);
        h.finalize().into()
    }
}

#[derive(Default)]
pub(super) struct Repeats {
    entries: RefCell<HashMap<Key, Entry>>,
    /// Kept answers by expiry, oldest first.
    expiry: RefCell<BTreeSet<(i64, Key)>>,
    /// Bytes of kept answers per account.
    bytes: RefCell<HashMap<String, usize>>,
}

/// What to do with a changing request.
pub(super) enum Begin<'a> {
    /// Run it, then `finish` with its reply.
    First(Running<'a>),
    /// It ran already: this is its answer.
    Again(Reply),
    /// Another call with the same signature, made in the same second: it
    /// runs, and its answer is not kept.
    Anew,
}

impl Repeats {
    /// The answers kept before a restart that are still replayable.
    pub fn load(service: &Service) -> Repeats {
        let repeats = Repeats::default();
        let now = service.now().to_datetime().timestamp();
        let records = match service.store().side_records(SIDE_KIND) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the gateway's kept answers could not be read");
                return repeats;
            }
        };
        for (key, value) in records {
            let answer = serde_json::from_slice::<Answer>(&value).ok();
            match (<Key>::try_from(key.as_slice()), answer) {
                (Ok(k), Some(a)) if a.expires >= now => {
                    let long_ago = Instant::now().checked_sub(SAME_SECOND_GRACE);
                    repeats.keep(k, long_ago.unwrap_or_else(Instant::now), None, Rc::new(a))
                }
                _ => forget_kept(service, &key),
            }
        }
        repeats
    }

    fn keep(
        &self,
        key: Key,
        first_seen: Instant,
        client_request_id: Option<String>,
        answer: Rc<Answer>,
    ) {
        *self
            .bytes
            .borrow_mut()
            .entry(answer.account.clone())
            .or_default() += answer.size();
        self.expiry.borrow_mut().insert((answer.expires, key));
        let entry = Entry {
            first_seen,
            client_request_id,
            state: State::Done(answer),
        };
        self.entries.borrow_mut().insert(key, entry);
    }

    /// Drops answers whose signatures the clock window now refuses.
    fn sweep(&self, service: &Service, now: i64) {
        loop {
            let first = self.expiry.borrow().first().copied();
            let Some((expires, key)) = first.filter(|(e, _)| *e < now) else {
                return;
            };
            self.expiry.borrow_mut().remove(&(expires, key));
            let removed = self.entries.borrow_mut().remove(&key).map(|e| e.state);
            if let Some(State::Done(a)) = removed {
                if let Some(b) = self.bytes.borrow_mut().get_mut(&a.account) {
                    *b = b.saturating_sub(a.size());
                }
            }
            forget_kept(service, &key);
        }
    }

    /// Whether `request` runs, waits for its twin running now, or gets the
    /// answer its first copy got. `expires` is when its signature stops
    /// being accepted.
    pub async fn begin(
        &self,
        service: &Service,
        request: &Signed<'_>,
        expires: i64,
    ) -> Result<Begin<'_>, AzError> {
        let key = request.key();
        loop {
            let now = service.now().to_datetime().timestamp();
            self.sweep(service, now);
            let running = match self.entries.borrow().get(&key) {
                None => break,
                Some(e)
                    if e.client_request_id.as_deref() != request.client_request_id
                        && e.first_seen.elapsed() < SAME_SECOND_GRACE =>
                {
                    return Ok(Begin::Anew)
                }
                Some(Entry {
                    state: State::Done(a),
                    ..
                }) => return Ok(Begin::Again(a.reply())),
                Some(Entry {
                    state: State::Running(n),
                    ..
                }) => n.clone(),
            };
            running.notified().await;
        }
        let used = self
            .bytes
            .borrow()
            .get(request.account)
            .copied()
            .unwrap_or(0);
        if used >= ACCOUNT_BYTES_MAX {
            let oldest = self.expiry.borrow().first().map(|(e, _)| *e);
            let now = service.now().to_datetime().timestamp();
            let wait = oldest.map_or(1, |e| (e - now).clamp(1, 60));
            return Err(AzError::new(
                503,
                "ServerBusy",
                format!(
                    "this account's changing requests of the last 15 minutes fill the {} MiB kept to answer their repeats; try again in {wait} s",
                    ACCOUNT_BYTES_MAX >> 20
                ),
            )
            .retry_after(wait));
        }
        let entry = Entry {
            first_seen: Instant::now(),
            client_request_id: request.client_request_id.map(String::from),
            state: State::Running(Rc::new(Notify::new())),
        };
        self.entries.borrow_mut().insert(key, entry);
        Ok(Begin::First(Running {
            repeats: self,
            key,
            account: request.account.to_string(),
            expires,
            settled: false,
        }))
    }
}

fn forget_kept(service: &Service, key: &[u8]) {
    if let Err(e) = service.store().delete_side(SIDE_KIND, key) {
        tracing::warn!(error = %e, "a kept gateway answer could not be dropped");
    }
}

/// A changing request that is running; dropped unfinished (the client went
/// away), its twins may run.
pub(super) struct Running<'a> {
    repeats: &'a Repeats,
    key: Key,
    account: String,
    expires: i64,
    settled: bool,
}

impl Running<'_> {
    /// Keeps a successful answer for the request's copies, and returns it.
    pub async fn finish(mut self, service: &Service, reply: Reply, request_id: &str) -> Reply {
        if !(200..300).contains(&reply.status()) {
            return reply;
        }
        let Some((status, headers, body)) = reply.buffered(ANSWER_BODY_MAX).await else {
            return Reply::text(500, "the answer was over 4 MiB and could not be kept");
        };
        let answer = Answer {
            account: std::mem::take(&mut self.account),
            expires: self.expires,
            request_id: request_id.to_string(),
            status,
            headers,
            body: body.to_vec(),
        };
        let out = Reply::from_parts(status, &answer.headers, body);
        match serde_json::to_vec(&answer) {
            Ok(bytes) => {
                if let Err(e) = service.store().put_side(SIDE_KIND, &self.key, &bytes) {
                    tracing::warn!(error = %e, "a gateway answer is kept in memory only");
                }
            }
            Err(e) => tracing::warn!(error = %e, "a gateway answer could not be encoded"),
        }
        let Some(running) = self.repeats.entries.borrow_mut().remove(&self.key) else {
            return out;
        };
        let answer = Rc::new(answer);
        let (first_seen, id) = (running.first_seen, running.client_request_id);
        self.repeats.keep(self.key, first_seen, id, answer);
        self.settled = true;
        if let State::Running(n) = running.state {
            n.notify_waiters();
        }
        out
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let removed = self.repeats.entries.borrow_mut().remove(&self.key);
        if let Some(State::Running(n)) = removed.map(|e| e.state) {
            n.notify_waiters();
        }
    }
}
