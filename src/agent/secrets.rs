//! The pool's secrets on this node: one file each in `ROOT/secrets`,
//! readable by the pool's task users (its group) and root only, fetched at
//! registration and again whenever the pool's secrets change.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use super::*;
use crate::domain::pool::PoolSecret;

/// The directory under the node's root (also `LOTE_SECRETS_DIR`).
pub const SECRETS_DIR: &str = "secrets";

/// How long a failed fetch waits before the next poll asks again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The secrets as last fetched: their generation and the ones the start
/// task takes in its environment.
pub(super) struct Held {
    generation: Option<u32>,
    start_task_env: Vec<(String, String)>,
}

pub(super) static HELD: std::sync::Mutex<Held> = std::sync::Mutex::new(Held {
    generation: None,
    start_task_env: Vec::new(),
});

fn held() -> std::sync::MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The variables the start task gets from secrets.
pub(super) fn start_task_vars() -> Vec<(String, String)> {
    held().start_task_env.clone()
}

/// Fetches the secrets if they changed since the last fetch (always, the
/// first time) and puts them in place.
pub(super) async fn refresh(client: &Client, env: &TaskEnv) -> Result<(), AgentError> {
    let have = held().generation;
    let reply = client
        .call(&Request::AgentSecrets { generation: have })
        .await?;
    let Response::Secrets {
        generation,
        secrets,
    } = reply
    else {
        return Err(AgentError::Setup("unexpected reply to AgentSecrets".into()));
    };
    let Some(secrets) = secrets else {
        return Ok(());
    };
    let dir = env.secrets.clone();
    let group = env.user.map(|u| u.gid);
    let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
    let written = tokio::task::spawn_blocking(move || write_all(&dir, group, &secrets))
        .await
        .map_err(|e| AgentError::Setup(e.to_string()))?
        .map_err(|e| AgentError::Setup(format!("cannot put the pool's secrets in place: {e}")))?;
    let mut held = held();
    held.generation = Some(generation);
    held.start_task_env = written;
    tracing::info!(generation, secrets = ?names, "the pool's secrets are in place");
    Ok(())
}

/// The pool's secrets epoch moved (or this poll loop just began): fetches
/// them if they changed. Returns the epoch to send from now on; on a
/// failure none, after a pause, so that the next poll asks again without
/// turning the loop into a tight one.
pub(super) async fn changed(client: &Client, env: &TaskEnv, epoch: u64) -> Option<u64> {
    match refresh(client, env).await {
        Ok(()) => Some(epoch),
        Err(e) => {
            tracing::warn!(error = %e, "the pool's secrets were not refreshed");
            tokio::time::sleep(RETRY_AFTER).await;
            None
        }
    }
}

/// Writes each secret to its file (a new file renamed over the old, so a
/// task reads the old value or the new, never half), removes the files of
/// secrets that are gone, and returns the start task's variables. With a
/// task group (the agent is root), files are root's and the group's,
/// 0440 in a 0750 directory; else the agent's own, 0400 in 0700.
fn write_all(
    dir: &Path,
    group: Option<u32>,
    secrets: &[PoolSecret],
) -> std::io::Result<Vec<(String, String)>> {
    std::fs::create_dir_all(dir)?;
    let (dir_mode, file_mode) = match group {
        Some(_) => (0o750, 0o440),
        None => (0o700, 0o400),
    };
    std::os::unix::fs::chown(dir, Some(0).filter(|_| group.is_some()), group)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))?;
    let mut vars = Vec::new();
    for s in secrets {
        let path = dir.join(&s.name);
        let fresh = dir.join(format!(".{}.new", s.name));
        let _ = std::fs::remove_file(&fresh);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&fresh)?;
        file.write_all(s.value.expose().as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::os::unix::fs::chown(&fresh, None, group)?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(file_mode))?;
        std::fs::rename(&fresh, &path)?;
        if s.start_task_env {
            vars.push((s.name.clone(), s.value.expose().to_string()));
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !secrets.iter().any(|s| s.name == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Secret;

    #[test]
    fn secrets_are_written_closed_replaced_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(SECRETS_DIR);
        let secret = |name: &str, value: &str, env: bool| PoolSecret {
            name: name.into(),
            value: Secret::new(value),
            start_task_env: env,
        };
        let vars = write_all(
            &dir,
            None,
            &[secret("db", "one", true), secret("tls-key", "two", false)],
        )
        .unwrap();
        assert_eq!(vars, vec![("db".to_string(), "one".to_string())]);
        assert_eq!(std::fs::read_to_string(dir.join("db")).unwrap(), "one");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tls-key")), 0o400);
        write_all(&dir, None, &[secret("db", "three", false)]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("db")).unwrap(), "three");
        assert!(!dir.join("tls-key").exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary files left");
    }
}
