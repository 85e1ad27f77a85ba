//! Task retention: an attempt's directory is deleted once its retention
//! time after completion has passed.
//!
//! The deadline is written into the directory (`retain_until`, Unix
//! seconds), so an agent that restarts deletes what expired while it was
//! down, and a timer deletes it on time while the agent runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// Retention when a task names none: seven days, as in Azure Batch.
pub const DEFAULT_SECS: u64 = 7 * 24 * 3600;

const MARKER: &str = "retain_until";

fn now_secs() -> u64 {
    SystemClock.now().as_micros().max(0) as u64 / 1_000_000
}

/// How often the agent looks through its attempt directories for
/// deadlines. A deadline nearer than this is held in memory and met on
/// time; a later one (the default seven days) lives only on disk until the
/// sweep before it. An agent keeps nothing in memory per finished task for
/// days: at a thousand tasks a second, a timer each would be gigabytes.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Deadlines due before the next sweep: (Unix milliseconds, a counter that
/// keeps equal deadlines apart) to the directory.
static DUE: std::sync::Mutex<BTreeMap<(u64, u64), PathBuf>> =
    std::sync::Mutex::new(BTreeMap::new());
/// Wakes the deleter when a deadline earlier than every held one arrives.
static EARLIER: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn due() -> std::sync::MutexGuard<'static, BTreeMap<(u64, u64), PathBuf>> {
    DUE.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemClock.now().as_micros().max(0) as u64 / 1_000
}

fn hold(until_ms: u64, dir: PathBuf) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut held = due();
    let earliest = held.keys().next().map(|(ms, _)| *ms);
    held.insert((until_ms, n), dir);
    if earliest.is_none_or(|e| until_ms < e) {
        EARLIER.notify_one();
    }
}

/// Records the deadline of `dir` (an attempt that just ended). The default
/// retention writes no marker (one file less per task, which shows at
/// thousands of tasks a second): the sweep reads the directory's age.
pub fn schedule(dir: &Path, secs: u64) {
    if secs != DEFAULT_SECS {
        let until = now_secs().saturating_add(secs);
        if let Err(e) = std::fs::write(dir.join(MARKER), format!("{until}\n")) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot record a retention deadline");
        }
    }
    if secs <= SWEEP_EVERY.as_secs() {
        hold(
            now_ms().saturating_add(secs.saturating_mul(1000)),
            dir.to_path_buf(),
        );
    }
}

/// Deletes what expired while the agent was down, then keeps deleting on
/// time: one task deletes held deadlines as they come, and a sweep every
/// [`SWEEP_EVERY`] finds the later ones on disk. Call within the agent's
/// runtime.
pub fn start(root: &Path) {
    sweep(root);
    tokio::spawn(delete_when_due());
    let root = root.to_path_buf();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let root = root.clone();
            // Off the agent's one thread: the walk touches every attempt.
            let _ = tokio::task::spawn_blocking(move || sweep(&root)).await;
        }
    });
}

/// Takes the held deadlines that have passed, and the next one.
fn take_due(now_ms: u64) -> (Vec<PathBuf>, Option<u64>) {
    let mut held = due();
    let later = held.split_off(&(now_ms.saturating_add(1), 0));
    let passed = std::mem::replace(&mut *held, later);
    let next = held.keys().next().map(|(ms, _)| *ms);
    (passed.into_values().collect(), next)
}

async fn delete_when_due() {
    loop {
        let (passed, next) = take_due(now_ms());
        if !passed.is_empty() {
            // Off the agent's one thread: a task that left many files must
            // not hold up its polls and heartbeats while they are deleted.
            let _ =
                tokio::task::spawn_blocking(move || passed.iter().for_each(|d| remove(d))).await;
            continue;
        }
        match next {
            Some(until) => {
                let wait = Duration::from_millis(until.saturating_sub(now_ms()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = EARLIER.notified() => {}
                }
            }
            None => EARLIER.notified().await,
        }
    }
}

/// Records that a job's release ended on this node: its directory
/// (`ROOT/jobs/JOB`, the preparation's files) goes after the default
/// retention.
pub fn job_released(job_dir: &Path) {
    let path = job_dir.join(RELEASED);
    if let Err(e) = std::fs::write(&path, now_secs().to_string()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot mark a job released");
    }
}

const RELEASED: &str = "released_at";

/// Deletes every attempt directory under `ROOT/tasks` whose deadline has
/// passed, and holds those due before the next sweep; and each job's
/// directory under `ROOT/jobs` whose release ended that long ago.
pub fn sweep(root: &Path) {
    let now = now_secs();
    for job in std::fs::read_dir(root.join("jobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let released = std::fs::read_to_string(job.path().join(RELEASED))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if released.is_some_and(|at| at.saturating_add(DEFAULT_SECS) <= now) {
            if let Err(e) = std::fs::remove_dir_all(job.path()) {
                tracing::warn!(dir = %job.path().display(), error = %e, "cannot delete a released job's directory");
            }
        }
    }
    let horizon = now.saturating_add(SWEEP_EVERY.as_secs());
    for_each_attempt(&root.join("tasks"), |attempt| {
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
        match until {
            Some(u) if u <= now => remove(&attempt),
            // Already held if it ended during this run of the agent: then
            // it is deleted twice, and the second finds nothing.
            Some(u) if u <= horizon => hold(u.saturating_mul(1000), attempt),
            _ => {}
        }
    });
}

/// Visits the `tasks/JOB/TASK/ATTEMPT` directories one at a time (a node
/// may hold millions: no list of them all).
fn for_each_attempt(tasks: &Path, mut visit: impl FnMut(PathBuf)) {
    fn dirs(p: &Path) -> impl Iterator<Item = PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
    }
    for job in dirs(tasks) {
        for task in dirs(&job) {
            dirs(&task).for_each(&mut visit);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held(dir: &Path) -> bool {
        due().values().any(|d| d == dir)
    }

    /// The held deadlines are the process's: one test at a time takes them.
    fn alone() -> std::sync::MutexGuard<'static, ()> {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        ONE.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn only_deadlines_before_the_next_sweep_are_held_in_memory() {
        let _alone = alone();
        let root = tempfile::tempdir().unwrap();
        let week = root.path().join("week");
        let second = root.path().join("second");
        for d in [&week, &second] {
            std::fs::create_dir_all(d).unwrap();
        }
        schedule(&week, DEFAULT_SECS);
        schedule(&second, 1);
        // The default retention leaves no marker and nothing in memory: the
        // sweep before its deadline finds it by the directory's age.
        assert!(!held(&week));
        assert!(!week.join(MARKER).exists());
        // A short one is held, and its marker outlives an agent restart.
        assert!(held(&second));
        assert!(second.join(MARKER).exists());
        // Taken once passed, not before.
        let (passed, _) = take_due(now_ms());
        assert!(!passed.contains(&second));
        let (passed, _) = take_due(now_ms() + 2_000);
        assert!(passed.contains(&second));
        assert!(!held(&second));
    }

    #[test]
    fn a_jobs_directory_goes_a_retention_after_its_release() {
        let _alone = alone();
        let root = tempfile::tempdir().unwrap();
        let jobs = root.path().join("jobs");
        let (old, recent, unreleased) = (jobs.join("old"), jobs.join("recent"), jobs.join("open"));
        for d in [&old, &recent, &unreleased] {
            std::fs::create_dir_all(d.join("preparation/wd")).unwrap();
        }
        job_released(&recent);
        let long_ago = now_secs() - DEFAULT_SECS - 1;
        std::fs::write(old.join(RELEASED), long_ago.to_string()).unwrap();
        sweep(root.path());
        assert!(!old.exists());
        assert!(recent.join("preparation/wd").exists());
        assert!(unreleased.exists());
    }

    #[test]
    fn the_sweep_deletes_what_expired_and_holds_what_comes_due_before_the_next() {
        let _alone = alone();
        let root = tempfile::tempdir().unwrap();
        let attempt = |task: &str| root.path().join("tasks/j").join(task).join("1");
        let now = now_secs();
        for (task, until) in [
            ("expired", Some(now - 1)),
            ("soon", Some(now + 60)),
            ("later", Some(now + 2 * SWEEP_EVERY.as_secs())),
            ("default", None),
        ] {
            let dir = attempt(task);
            std::fs::create_dir_all(dir.join("wd")).unwrap();
            if let Some(until) = until {
                std::fs::write(dir.join(MARKER), format!("{until}\n")).unwrap();
            }
        }
        sweep(root.path());
        // Expired: gone, with its task's directory.
        assert!(!attempt("expired").exists());
        assert!(!root.path().join("tasks/j/expired").exists());
        assert!(held(&attempt("soon")) && attempt("soon").exists());
        for kept in ["later", "default"] {
            assert!(attempt(kept).exists(), "{kept}");
            assert!(!held(&attempt(kept)), "{kept}");
        }
        let (passed, _) = take_due((now + 61) * 1000);
        assert!(passed.contains(&attempt("soon")));
    }
}
