//! Idempotent requests: a client's request id makes a create or an add
//! happen once, however often it is sent.

use super::{internal, Service};
use crate::api::auth;
use crate::api::{ApiError, Request, Response};
use crate::domain::request::{RequestEvent, RequestRecord};
use crate::domain::{self, RejectionCode, Versioned};
use crate::store::{ExpectedVersion, StreamAppend, StreamId};
use crate::types::AccountName;

impl Service {
    /// Runs an idempotent request: the first time, its work plus its record
    /// in one append; again with the same body, the recorded outcome; again
    /// with another body, a refusal.
    pub(super) async fn idempotent<F, Fut>(
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

    pub(super) fn record(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Versioned<RequestRecord>>, ApiError> {
        let current = crate::actors::load::<RequestRecord>(self.core.store(), stream, false)?;
        Ok((current.version > 0).then_some(current))
    }
}
