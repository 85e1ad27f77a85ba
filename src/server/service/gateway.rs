//! What the Azure gateway asks of the service: who a SharedKey request
//! is (the account whose current key verifies it), and the time.

use super::{Caller, Service};
use crate::api::{ApiError, ErrorKind};
use crate::domain::account::{Account, AccountStatus};
use crate::store::StreamId;
use crate::types::{AccountName, Timestamp};

impl Service {
    /// The caller a signed request acts as, if `verify` accepts one of the
    /// account's current keys. An unknown account and a wrong signature
    /// get the same answer after the same work.
    pub(in crate::server) async fn gateway_caller(
        &self,
        account: &AccountName,
        verify: impl Fn(&[u8]) -> bool,
    ) -> Result<Caller, ApiError> {
        let state = self
            .existing::<Account>(&StreamId::account(account))
            .await?
            .map(|a| a.state)
            .unwrap_or_default();
        let mut ok = false;
        for key in [&state.primary_key, &state.secondary_key]
            .into_iter()
            .flatten()
        {
            ok |= verify(&crate::api::shared_key::key_bytes(key.expose()));
        }
        if ok && state.status != AccountStatus::Absent {
            Ok(Caller::Account(account.clone(), Box::new(state)))
        } else {
            Err(ApiError::new(
                ErrorKind::BadSignature,
                "the signature does not verify with the account's keys",
            ))
        }
    }

    pub(in crate::server) fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
