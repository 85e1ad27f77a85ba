//! The event stream: an account's own entities' events, or everything
//! for the administrator, from a log position on.

use std::rc::Rc;

use tokio::sync::{mpsc, watch};

use super::{permission, Caller, Service};
use crate::api::{ApiError, ErrorKind, EventView, Response, ServerFrame};

impl Service {
    /// Starts streaming events to the connection. Accounts see their own
    /// entities' events; the administrator sees everything.
    pub(super) async fn tail(
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
                let event = event_view(&envelope);
                if tx.send(ServerFrame::Event { id, event }).await.is_err() {
                    return;
                }
            }
        });
        Ok(task.abort_handle())
    }
}

/// An event as the tail and the console show it.
pub(in crate::server) fn event_view(envelope: &crate::store::Envelope) -> EventView {
    EventView {
        position: envelope.position,
        entity: envelope.stream.to_string(),
        version: envelope.stream_version,
        recorded_at: envelope.recorded_at,
        event_type: envelope.event_type.clone(),
        principal: envelope.causation.principal.clone(),
        request_id: envelope.causation.request_id.to_string(),
        data: crate::replay::event_json(envelope.stream.kind(), envelope).to_string(),
    }
}
