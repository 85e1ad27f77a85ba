//! Accounts and their keys: the administrator's requests.

use super::{done, misrouted, not_found, permission, Caller, Service};
use crate::api::{AccountView, ApiError, Request, Response};
use crate::domain::account::{Account, AccountCommand};
use crate::domain::job::Job;
use crate::domain::pool::Pool;
use crate::domain::RejectionCode;
use crate::store::StreamId;
use crate::types::{AccountName, Principal};

impl Service {
    pub(super) async fn admin(&self, request: Request, body: &[u8]) -> Result<Response, ApiError> {
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
            Request::DeleteAccount { name } => {
                self.refuse_if_owning(name).await?;
                run(name, AccountCommand::DeleteAccount).await
            }
            Request::TailEvents { .. } | Request::Ping | Request::Whoami => Err(misrouted(&request)),
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

    /// An account that still owns pools, jobs or blobs is not deleted:
    /// its agents would run on and nobody could remove them afterwards.
    async fn refuse_if_owning(&self, name: &AccountName) -> Result<(), ApiError> {
        let pools = self.list::<Pool>(&format!("pool/{name}/"))?;
        let jobs = self.list::<Job>(&format!("job/{name}/"))?;
        let containers = match self.blobs.containers(name).await? {
            Response::Containers(names) => names,
            _ => Vec::new(),
        };
        let ids = |v: Vec<String>| v.join(", ");
        let mut owned = Vec::new();
        if !pools.is_empty() {
            let names = pools
                .into_iter()
                .filter_map(|p| p.state.spec.map(|s| s.id.to_string()))
                .collect();
            owned.push(format!(
                "pools {} (lote pool delete ID --force)",
                ids(names)
            ));
        }
        if !jobs.is_empty() {
            let names = jobs
                .into_iter()
                .filter_map(|j| j.state.spec.map(|s| s.id.to_string()))
                .collect();
            owned.push(format!("jobs {} (lote job delete ID)", ids(names)));
        }
        if !containers.is_empty() {
            owned.push(format!(
                "blob containers {} (lote blob delete CONTAINER --prefix '')",
                ids(containers)
            ));
        }
        if owned.is_empty() {
            return Ok(());
        }
        Err(ApiError::rejected(
            RejectionCode::AccountNotEmpty,
            format!(
                "account {name} still owns {}; delete them first, signed as the account",
                owned.join("; ")
            ),
        ))
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
