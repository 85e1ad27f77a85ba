//! `lote account`: accounts and their keys (administrator).

use clap::Subcommand;

use super::render::render;
use super::Rendered;
use lote::api::Request;
use lote::client::{Client, ClientError};
use lote::domain::account::KeyKind;
use lote::types::AccountName;

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create an account; prints its two keys.
    Create {
        name: AccountName,
        /// Client request id (a UUID): sending the same command again with
        /// it does not create twice.
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Every account, with its status.
    List,
    /// One account: status, created, keys rotated.
    Show { name: AccountName },
    /// Refuse the account's changes until enabled again (it may still read).
    Disable { name: AccountName },
    /// Let a disabled account change things again.
    Enable { name: AccountName },
    /// Delete the account; its keys stop working at once.
    Delete { name: AccountName },
    #[command(subcommand)]
    /// Show or regenerate an account's keys.
    Keys(KeysCmd),
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// The account's primary and secondary keys.
    Show { name: AccountName },
    /// Replace one key; the other keeps working, so clients can move over
    /// without downtime.
    Regenerate {
        name: AccountName,
        /// primary or secondary.
        #[arg(value_enum, value_name = "WHICH")]
        which: KeyKind,
    },
}

/// Runs one `lote account` command.
pub(super) async fn run(cmd: AccountCmd, client: &Client) -> Result<Rendered, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    let response = match cmd {
        AccountCmd::Create { name, request_id } => {
            call(Request::CreateAccount {
                name: name.clone(),
                request_id,
            })
            .await?;
            call(Request::ShowKeys { name }).await?
        }
        AccountCmd::List => call(Request::ListAccounts).await?,
        AccountCmd::Show { name } => call(Request::ShowAccount { name }).await?,
        AccountCmd::Disable { name } => call(Request::DisableAccount { name }).await?,
        AccountCmd::Enable { name } => call(Request::EnableAccount { name }).await?,
        AccountCmd::Delete { name } => call(Request::DeleteAccount { name }).await?,
        AccountCmd::Keys(KeysCmd::Show { name }) => call(Request::ShowKeys { name }).await?,
        AccountCmd::Keys(KeysCmd::Regenerate { name, which }) => {
            call(Request::RegenerateKey {
                name: name.clone(),
                key: which,
            })
            .await?;
            call(Request::ShowKeys { name }).await?
        }
    };
    Ok(Some(render(response)))
}
