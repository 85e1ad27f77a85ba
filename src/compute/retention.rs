//! Task retention: an attempt's directory is deleted once its retention
//! time after completion has passed.
//!
//! The deadline is written into the directory (`retain_until`, Unix
//! seconds), so an agent that restarts deletes what expired while it was
//! down, and a timer deletes it on time while the agent runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// Retention when a task names none: seven days, as in Azure Batch.
pub const DEFAULT_SECS: u64 = 7 * 24 * 3600;

const MARKER: &str = "retain_until";

fn now_secs() -> u64 {
    SystemClock.now().as_micros().max(0) as u64 / 1_000_000
}

/// Records the deadline and deletes `dir` when it passes. The default
/// retention writes no marker (one file less per task, which shows at
/// thousands of tasks a second): the sweep reads the directory's age.
pub fn schedule(dir: &Path, secs: u64) {
    if secs != DEFAULT_SECS {
        let until = now_secs().saturating_add(secs);
        if let Err(e) = std::fs::write(dir.join(MARKER), format!("{until}\n")) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot record a retention deadline");
        }
    }
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        // Off the agent's one thread: a task that left many files must
        // not hold up its polls and heartbeats while they are deleted.
        let _ = tokio::task::spawn_blocking(move || remove(&dir)).await;
    });
}

/// Deletes every attempt directory under `ROOT/tasks` whose deadline has
/// passed.
pub fn sweep(root: &Path) {
    let now = now_secs();
    for attempt in attempt_dirs(&root.join("tasks")) {
        let until = std::fs::read_to_string(attempt.join(MARKER))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .or_else(|| {
                // No marker: the default retention from when it was last
                // written to (an attempt still running keeps it fresh).
                let modified = std::fs::metadata(&attempt)
                    .and_then(|m| m.modified())
                    .ok()?;
                let secs = modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                Some(secs.saturating_add(DEFAULT_SECS))
            });
        if until.is_some_and(|u| u <= now) {
            remove(&attempt);
        }
    }
}

/// `tasks/JOB/TASK/ATTEMPT` directories.
fn attempt_dirs(tasks: &Path) -> Vec<PathBuf> {
    let children = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    children(tasks)
        .iter()
        .flat_map(|job| children(job))
        .flat_map(|task| children(&task))
        .collect()
}

/// Removes an attempt's directory, then its task's and job's if empty.
fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete an expired task directory");
            return;
        }
    }
    let task = dir.parent();
    for parent in [task, task.and_then(Path::parent)].into_iter().flatten() {
        // Fails (and stops) when not empty: another attempt or task.
        if std::fs::remove_dir(parent).is_err() {
            break;
        }
    }
}
