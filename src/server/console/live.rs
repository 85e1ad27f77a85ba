//! `GET /api/live`: server-sent events fed by a subscription to the log.
//!
//! A page learns which of its account's entities changed, at most four
//! times a second: a job finishing 2,000 tasks a second sends four
//! messages a second, each naming the entities touched (up to a bound,
//! then "more"), and the page re-reads what it shows. With `events=1` the
//! messages also carry the events themselves (the newest ones, bounded),
//! for the events page's tail.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::http::{self, Reply};
use super::session::SignedIn;
use super::Console;
use crate::api::EventView;
use crate::server::service::events::event_view;

/// How often a page hears of changes, at most.
const TICK: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most entity ids one message names.
const ENTITIES_MAX: usize = 500;
/// Most events one message carries (the newest).
const EVENTS_MAX: usize = 200;

#[derive(Default)]
struct Pending {
    entities: BTreeSet<String>,
    more: bool,
    events: std::collections::VecDeque<EventView>,
    skipped: u64,
    head: u64,
    /// The caller's events since the last message (the event rate).
    count: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.entities.is_empty() && !self.more
    }

    fn message(&mut self) -> Bytes {
        let body = serde_json::json!({
            "head": self.head,
            "entities": std::mem::take(&mut self.entities),
            "more": std::mem::take(&mut self.more),
            "events": std::mem::take(&mut self.events),
            "skipped": std::mem::take(&mut self.skipped),
            "count": std::mem::take(&mut self.count),
        });
        Bytes::from(format!("event: change\ndata: {body}\n\n"))
    }
}

impl Console {
    pub(super) fn live(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let with_events = q.get("events").is_some_and(|v| v == "1");
        let account = who.user.account().cloned();
        let store = self.service.store().clone();
        let start = store.head() + 1;
        let mut subscription = store.subscribe(start);
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_local(async move {
            let hello = format!("event: hello\ndata: {{\"head\":{}}}\n\n", start - 1);
            if tx.send(Ok(Bytes::from(hello))).await.is_err() {
                return;
            }
            let mut pending = Pending {
                head: start - 1,
                ..Pending::default()
            };
            let mut tick = tokio::time::interval(TICK);
            let mut quiet_since = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    batch = subscription.next_batch(512) => {
                        let Ok(batch) = batch else { return };
                        for envelope in batch {
                            pending.head = envelope.position;
                            let mine = match &account {
                                None => true,
                                Some(a) => envelope.stream.segments().first() == Some(&a.as_str()),
                            };
                            if !mine {
                                continue;
                            }
                            pending.count += 1;
                            let entity = envelope.stream.to_string();
                            let event = with_events.then(|| event_view(&envelope));
                            if pending.entities.len() < ENTITIES_MAX {
                                pending.entities.insert(entity);
                            } else if !pending.entities.contains(&entity) {
                                pending.more = true;
                            }
                            if let Some(event) = event {
                                if pending.events.len() == EVENTS_MAX {
                                    pending.events.pop_front();
                                    pending.skipped += 1;
                                }
                                pending.events.push_back(event);
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let message = if !pending.is_empty() {
                            pending.message()
                        } else if quiet_since.elapsed() >= KEEPALIVE {
                            Bytes::from_static(b": keepalive\n\n")
                        } else {
                            continue;
                        };
                        quiet_since = tokio::time::Instant::now();
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Reply::stream("text/event-stream", rx)
    }
}
