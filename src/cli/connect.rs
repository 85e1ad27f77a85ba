//! Where and as whom the CLI connects: flags, environment, profiles;
//! failures with the next thing to try.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ClientCommand, Connection};
use lote::api::{ApiError, Credential, ErrorKind};
use lote::client::{ClientConfig, ClientError};
use lote::domain::RejectionCode;
use lote::types::AccountName;

/// A profile: any of the connection settings.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Profile {
    server: Option<String>,
    account: Option<String>,
    key: Option<String>,
    admin_key: Option<String>,
    admin_key_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
    tls_ca: Option<PathBuf>,
}

/// A failure with the next thing to try.
pub(super) struct Failure {
    pub(super) error: String,
    pub(super) kind: Option<ErrorKind>,
    pub(super) code: Option<RejectionCode>,
    pub(super) hint: Option<String>,
    /// 2 for usage errors (missing credentials, bad profile), else 1.
    pub(super) exit: u8,
}

pub(super) fn usage(error: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure {
        error: error.into(),
        kind: None,
        code: None,
        hint: Some(hint.into()),
        exit: 2,
    }
}

pub(super) fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("lote"))
}

pub(super) fn load_profile(name: Option<&str>) -> Result<Profile, Failure> {
    let Some(path) = config_dir().map(|d| d.join("profiles.toml")) else {
        return Ok(Profile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match name {
                Some(n) => Err(usage(
                    format!(
                        "profile {n:?} asked for, but {} does not exist",
                        path.display()
                    ),
                    "create it with a [NAME] table of server, account, key, admin_key_file",
                )),
                None => Ok(Profile::default()),
            }
        }
        Err(e) => {
            return Err(usage(
                format!("cannot read {}: {e}", path.display()),
                "check its permissions",
            ))
        }
    };
    let mut all: std::collections::BTreeMap<String, Profile> =
        toml::from_str(&text).map_err(|e| {
            usage(
                format!("{}: {e}", path.display()),
                "fix the file: one [NAME] table per profile",
            )
        })?;
    match name {
        Some(n) => all.remove(n).ok_or_else(|| {
            usage(
                format!("no profile {n:?} in {}", path.display()),
                format!(
                    "profiles there: {}",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        }),
        None => Ok(all.remove("default").unwrap_or_default()),
    }
}

pub(super) fn needs_admin(command: &ClientCommand, conn: &Connection) -> bool {
    matches!(command, ClientCommand::Account(_)) || conn.admin
}

pub(super) fn credentials(
    command: &ClientCommand,
    conn: &Connection,
) -> Result<ClientConfig, Failure> {
    let profile = load_profile(conn.profile.as_deref())?;
    let server = conn
        .server
        .clone()
        .or(profile.server)
        .unwrap_or_else(|| "127.0.0.1:7070".to_string());
    let admin_key = || -> Result<Option<String>, Failure> {
        if let Some(k) = conn.admin_key.clone().or(profile.admin_key.clone()) {
            return Ok(Some(k));
        }
        match conn
            .admin_key_file
            .clone()
            .or(profile.admin_key_file.clone())
        {
            Some(path) => std::fs::read_to_string(&path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| {
                    usage(
                        format!("cannot read the admin key file {}: {e}", path.display()),
                        "the server writes it to DATA_DIR/admin.key at first start",
                    )
                }),
            None => Ok(None),
        }
    };
    let account_key = || match (
        conn.account.clone().or(profile.account.clone()),
        conn.key.clone().or(profile.key.clone()),
    ) {
        (Some(a), Some(k)) => AccountName::new(a)
            .map(|account| Some((account, k)))
            .map_err(|e| {
                usage(
                    e.to_string(),
                    "account names are letters, digits, '-' and '_'",
                )
            }),
        _ => Ok(None),
    };
    let job_key = match (
        &conn.job_key,
        &conn.job_key_job,
        conn.account.clone().or(profile.account.clone()),
    ) {
        (Some(key), Some(job), Some(account)) if !conn.admin => {
            let bad = |e: lote::types::IdError| {
                usage(
                    e.to_string(),
                    "a job manager task has LOTE_ACCOUNT and LOTE_JOB_ID set",
                )
            };
            Some((
                Credential::Job {
                    account: AccountName::new(account).map_err(bad)?,
                    job: lote::types::JobId::new(job.clone()).map_err(bad)?,
                },
                key.clone(),
            ))
        }
        _ => None,
    };
    let (credential, key) = if let Some(job) = job_key {
        job
    } else if needs_admin(command, conn) {
        match admin_key()? {
            Some(k) => (Credential::Admin, k),
            None => {
                return Err(usage(
                    "this command needs the administrator key",
                    "pass --admin-key-file DATA_DIR/admin.key (the server prints where it is at start) or set LOTE_ADMIN_KEY",
                ))
            }
        }
    } else if let Some((account, k)) = account_key()? {
        (Credential::Account { account }, k)
    } else if let (ClientCommand::Whoami, Some(k)) = (command, admin_key()?) {
        (Credential::Admin, k)
    } else {
        return Err(usage(
            "no account credentials",
            "pass --account NAME --key KEY (or LOTE_ACCOUNT / LOTE_KEY, or a profile); an administrator gets the keys with: lote account keys show NAME",
        ));
    };
    let trust = trust(
        conn.tls_fingerprint.clone().or(profile.tls_fingerprint),
        conn.tls_ca.clone().or(profile.tls_ca),
    )?;
    let mut config = ClientConfig::new(server, credential, key).with_trust(trust);
    config.insecure_plaintext = conn.insecure_plaintext;
    Ok(config)
}

/// How the server's certificate is trusted, from the flags or profile.
pub(crate) fn trust(
    fingerprint: Option<String>,
    ca: Option<PathBuf>,
) -> Result<Option<lote::api::tls::Trust>, Failure> {
    lote::api::tls::Trust::from_flags(fingerprint.as_deref(), ca).map_err(|e| {
        usage(
            format!("--tls-fingerprint: {e}"),
            "copy it from the server's start message or `lote pool join-token`",
        )
    })
}

pub(super) fn hint_for(e: &ClientError, addr: &str) -> Option<String> {
    match e {
        ClientError::Connect { reason, .. }
            if reason.contains("not on this machine") =>
        {
            None
        }
        ClientError::Connect { reason, .. }
            if reason.contains("certificate") || reason.contains("TLS") || reason.contains("tls") =>
        {
            Some("compare --tls-fingerprint with the one the server printed at start (or the one `lote pool join-token` carries)".into())
        }
        ClientError::Connect { .. } => Some(format!(
            "is a server listening on {addr}? Start one with: lote server --listen {addr} (or pass --server)"
        )),
        ClientError::Disconnected(_) => Some(
            "run the command again; creates with --request-id are never done twice".into(),
        ),
        ClientError::Timeout(_) => Some("the server is busy or stuck; check its log".into()),
        ClientError::Protocol(_) => Some("client and server versions may differ: lote --version".into()),
        ClientError::Api(a) | ClientError::Refused(a) => api_hint(a),
    }
}

pub(super) fn api_hint(e: &ApiError) -> Option<String> {
    use RejectionCode as R;
    let text = match (e.kind, e.rejection) {
        (ErrorKind::BadSignature, _) => "check --account and --key (LOTE_ACCOUNT / LOTE_KEY); an administrator shows current keys with: lote account keys show NAME",
        (ErrorKind::ClockSkew, _) => "set this machine's clock right (NTP), then retry",
        (ErrorKind::UnsupportedVersion, _) => "use a lote client of the server's version: lote --version",
        (ErrorKind::Overloaded | ErrorKind::ShuttingDown | ErrorKind::Timeout, _) => "retry in a moment",
        (_, Some(R::AccountNotFound)) => "list accounts with: lote account list",
        (_, Some(R::AccountExists)) => "see it with: lote account show NAME",
        (_, Some(R::AccountDisabled)) => "an administrator can enable it: lote account enable NAME",
        (_, Some(R::PoolNotFound)) => "list pools with: lote pool list",
        (_, Some(R::PoolExists)) => "see it with: lote pool show ID",
        (_, Some(R::NodeNotFound)) => "list nodes with: lote node list POOL",
        (_, Some(R::JobNotFound)) => "list jobs with: lote job list",
        (_, Some(R::JobExists)) => "see it with: lote job show ID",
        (_, Some(R::TaskNotFound)) => "list tasks with: lote task list JOB",
        (_, Some(R::TaskExists)) => "list the job's tasks with: lote task list JOB",
        (_, Some(R::TooBusy)) => "run the same command again",
        (_, Some(R::RequestIdReused)) => "use a new --request-id for a different request",
        (_, Some(R::PermissionDenied)) => "account commands need --admin-key-file; pool, job and task commands need --account and --key",
        _ => return None,
    };
    Some(text.to_string())
}

pub(super) fn from_client_error(e: ClientError, addr: &str) -> Failure {
    let hint = hint_for(&e, addr);
    let (kind, code) = match e.api() {
        Some(a) => (Some(a.kind), a.rejection),
        None => (None, None),
    };
    Failure {
        error: e.to_string(),
        kind,
        code,
        hint,
        exit: 1,
    }
}
