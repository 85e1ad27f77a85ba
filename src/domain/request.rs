//! Request: the idempotency record of one client request id.
//!
//! A create or add that carries a client request id writes this record in
//! the same atomic append as its own events. Sent again, the request finds
//! the record: same body hash, the original result is returned; another
//! hash, the reuse is refused. Being in the log, the record survives
//! restarts and shows up in the audit trail like everything else.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ensure, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::Timestamp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum RequestCommand {
    RecordRequest {
        /// Name of the request kind, e.g. `CreatePool`.
        request: String,
        /// SHA-256 of the request's body, hex.
        body_sha256: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum RequestEvent {
    RequestRecorded {
        request: String,
        body_sha256: String,
        at: Timestamp,
    },
}

impl DomainEvent for RequestEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Request;
    fn event_type(&self) -> &'static str {
        match self {
            RequestEvent::RequestRecorded { .. } => "RequestRecorded",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    #[default]
    Absent,
    Recorded,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RequestRecord {
    pub status: RequestStatus,
    pub request: Option<String>,
    pub body_sha256: Option<String>,
    pub recorded_at: Option<Timestamp>,
}

impl Aggregate for RequestRecord {
    type Command = RequestCommand;
    type Event = RequestEvent;
    const KIND: StreamKind = StreamKind::Request;
    const STATE_SCHEMA: u32 = 1;

    fn decide(&self, command: &RequestCommand, ctx: &Ctx) -> Result<Vec<RequestEvent>, Rejection> {
        let RequestCommand::RecordRequest {
            request,
            body_sha256,
        } = command;
        ensure(
            self.status == RequestStatus::Absent,
            RejectionCode::RequestIdReused,
            || "this request id was used before".into(),
        )?;
        Ok(vec![RequestEvent::RequestRecorded {
            request: request.clone(),
            body_sha256: body_sha256.clone(),
            at: ctx.now,
        }])
    }

    fn apply(&mut self, event: &RequestEvent) {
        match (self.status, event) {
            (
                RequestStatus::Absent,
                RequestEvent::RequestRecorded {
                    request,
                    body_sha256,
                    at,
                },
            ) => {
                self.status = RequestStatus::Recorded;
                self.request = Some(request.clone());
                self.body_sha256 = Some(body_sha256.clone());
                self.recorded_at = Some(*at);
            }
            (status, event) => panic!("request record in state {status:?} cannot apply {event:?}"),
        }
    }

    fn is_finished(&self) -> bool {
        self.status == RequestStatus::Recorded
    }

    fn sanity_check(&self) -> Result<(), String> {
        if (self.status == RequestStatus::Recorded) != self.body_sha256.is_some() {
            return Err(format!(
                "request record {:?} without a body hash",
                self.status
            ));
        }
        Ok(())
    }
}
