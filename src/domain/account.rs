//! Account: who may use the service, with two keys for rotation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ensure, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::{AccountName, Principal, Secret, Timestamp};

/// Which of an account's two keys.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Primary,
    Secondary,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum AccountCommand {
    CreateAccount { name: AccountName },
    RegenerateKey { key: KeyKind },
    DisableAccount,
    EnableAccount,
    DeleteAccount,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum AccountEvent {
    AccountCreated {
        name: AccountName,
        primary_key: Secret,
        secondary_key: Secret,
        at: Timestamp,
    },
    AccountKeyRegenerated {
        key: KeyKind,
        value: Secret,
        at: Timestamp,
    },
    AccountDisabled {
        at: Timestamp,
    },
    AccountEnabled {
        at: Timestamp,
    },
    AccountDeleted {
        at: Timestamp,
    },
}

impl DomainEvent for AccountEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Account;
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountCreated { .. } => "AccountCreated",
            AccountEvent::AccountKeyRegenerated { .. } => "AccountKeyRegenerated",
            AccountEvent::AccountDisabled { .. } => "AccountDisabled",
            AccountEvent::AccountEnabled { .. } => "AccountEnabled",
            AccountEvent::AccountDeleted { .. } => "AccountDeleted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// No such account (yet).
    #[default]
    Absent,
    Active,
    Disabled,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    pub status: AccountStatus,
    pub name: Option<AccountName>,
    pub primary_key: Option<Secret>,
    pub secondary_key: Option<Secret>,
    pub created_at: Option<Timestamp>,
    pub keys_rotated_at: Option<Timestamp>,
}

impl Account {
    /// Whether `key` is one of this account's current keys.
    pub fn key_matches(&self, key: &str) -> bool {
        [&self.primary_key, &self.secondary_key]
            .into_iter()
            .flatten()
            .any(|k| k.expose() == key)
    }

    fn require_admin(ctx: &Ctx) -> Result<(), Rejection> {
        ensure(
            ctx.principal == Principal::Admin,
            RejectionCode::PermissionDenied,
            || {
                format!(
                    "{} may not manage accounts; only the administrator may",
                    ctx.principal
                )
            },
        )
    }

    fn require_exists(&self) -> Result<&AccountName, Rejection> {
        match (&self.status, &self.name) {
            (AccountStatus::Active | AccountStatus::Disabled, Some(name)) => Ok(name),
            _ => Err(Rejection::new(
                RejectionCode::AccountNotFound,
                "no such account",
            )),
        }
    }
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    const KIND: StreamKind = StreamKind::Account;
    const STATE_SCHEMA: u32 = 1;

    fn decide(&self, command: &AccountCommand, ctx: &Ctx) -> Result<Vec<AccountEvent>, Rejection> {
        Self::require_admin(ctx)?;
        let now = ctx.now;
        match command {
            AccountCommand::CreateAccount { name } => {
                ensure(
                    self.status == AccountStatus::Absent,
                    RejectionCode::AccountExists,
                    || format!("account {name} exists or existed; account names are never reused"),
                )?;
                Ok(vec![AccountEvent::AccountCreated {
                    name: name.clone(),
                    primary_key: ctx.fresh_key(0),
                    secondary_key: ctx.fresh_key(1),
                    at: now,
                }])
            }
            AccountCommand::RegenerateKey { key } => {
                self.require_exists()?;
                Ok(vec![AccountEvent::AccountKeyRegenerated {
                    key: *key,
                    value: ctx.fresh_key(0),
                    at: now,
                }])
            }
            AccountCommand::DisableAccount => {
                let name = self.require_exists()?;
                ensure(
                    self.status == AccountStatus::Active,
                    RejectionCode::AccountDisabled,
                    || format!("account {name} is already disabled"),
                )?;
                Ok(vec![AccountEvent::AccountDisabled { at: now }])
            }
            AccountCommand::EnableAccount => {
                let name = self.require_exists()?;
                ensure(
                    self.status == AccountStatus::Disabled,
                    RejectionCode::AccountNotDisabled,
                    || format!("account {name} is active"),
                )?;
                Ok(vec![AccountEvent::AccountEnabled { at: now }])
            }
            AccountCommand::DeleteAccount => {
                self.require_exists()?;
                Ok(vec![AccountEvent::AccountDeleted { at: now }])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match (self.status, event) {
            (
                AccountStatus::Absent,
                AccountEvent::AccountCreated {
                    name,
                    primary_key,
                    secondary_key,
                    at,
                },
            ) => {
                self.status = AccountStatus::Active;
                self.name = Some(name.clone());
                self.primary_key = Some(primary_key.clone());
                self.secondary_key = Some(secondary_key.clone());
                self.created_at = Some(*at);
            }
            (
                AccountStatus::Active | AccountStatus::Disabled,
                AccountEvent::AccountKeyRegenerated { key, value, at },
            ) => {
                match key {
                    KeyKind::Primary => self.primary_key = Some(value.clone()),
                    KeyKind::Secondary => self.secondary_key = Some(value.clone()),
                }
                self.keys_rotated_at = Some(*at);
            }
            (AccountStatus::Active, AccountEvent::AccountDisabled { .. }) => {
                self.status = AccountStatus::Disabled
            }
            (AccountStatus::Disabled, AccountEvent::AccountEnabled { .. }) => {
                self.status = AccountStatus::Active
            }
            (
                AccountStatus::Active | AccountStatus::Disabled,
                AccountEvent::AccountDeleted { .. },
            ) => {
                self.status = AccountStatus::Deleted;
                // Keys of a deleted account must never authenticate again.
                self.primary_key = None;
                self.secondary_key = None;
            }
            (status, event) => panic!(
                "account {:?} in state {status:?} cannot apply {event:?}",
                self.name
            ),
        }
    }

    fn is_finished(&self) -> bool {
        self.status == AccountStatus::Deleted
    }

    fn sanity_check(&self) -> Result<(), String> {
        let live = matches!(self.status, AccountStatus::Active | AccountStatus::Disabled);
        if live != (self.primary_key.is_some() && self.secondary_key.is_some()) {
            return Err(format!(
                "account in {:?} has keys {}",
                self.status,
                self.primary_key.is_some()
            ));
        }
        if live && self.primary_key == self.secondary_key {
            return Err("primary and secondary keys are equal".into());
        }
        Ok(())
    }
}
