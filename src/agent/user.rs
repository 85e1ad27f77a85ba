//! Who a node's tasks run as.
//!
//! An agent running as root runs every task, and the pool's start task,
//! as an unprivileged user of its pool: a uid and gid of their own from a
//! range no distribution hands out, derived from the account and the pool
//! so that every node of a pool agrees, with no login and no password
//! entry. What is the agent's (its credential, its log, the download
//! cache, other nodes' directories) stays root's and closed to it; what
//! the task is given (its attempt directory, the start task's, the node's
//! shared directory) is chowned to it. An agent not running as root runs
//! tasks as itself and says so at start; `--run-tasks-as-root` is the
//! explicit, logged opt-out.

use std::io;
use std::path::Path;

use crate::types::{AccountName, PoolId};

/// First uid (and gid) of the range task users are taken from: far above
/// the system's (below 1,000) and people's (from 1,000, usually well under
/// a million) and under the 2^31 that some tools treat as negative.
pub const TASK_UID_BASE: u32 = 0x4000_0000;

/// Size of the range: distinct pools collide with odds of 1 in 16 million.
pub const TASK_UID_SPAN: u32 = 0x0100_0000;

/// Most processes a pool's user may have at once on a machine (all its
/// tasks and their children): a fork bomb stops there, with the agent
/// (root) and the rest of the machine untouched. Without a cgroup per
/// attempt this is per user, not per task.
pub const TASK_PROCESSES_MAX: u64 = 4096;

/// A uid and gid tasks run as, and the most processes they may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskUser {
    pub uid: u32,
    pub gid: u32,
    pub processes_max: u64,
}

/// An id in the task users' range for `parts` joined by '/'. FNV-1a:
/// stable across builds and machines, which std's hasher is not.
fn id_of(parts: &[&str]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, part) in parts.iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"/" };
        for b in sep.iter().chain(part.as_bytes()) {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    }
    TASK_UID_BASE + h % TASK_UID_SPAN
}

/// The pool's task user: the same on every node of the pool.
pub fn pool_user(account: &AccountName, pool: &PoolId) -> TaskUser {
    let id = id_of(&[account.as_str(), pool.as_str()]);
    TaskUser {
        uid: id,
        gid: id,
        processes_max: TASK_PROCESSES_MAX,
    }
}

/// A task's own user (the pool's `task` user scope): a uid of the task's,
/// in the pool's group, so it shares what the pool's group may (the
/// node's shared directory, the secrets) and no task's working directory.
pub fn task_user(
    pool_user: TaskUser,
    account: &AccountName,
    pool: &PoolId,
    job: &str,
    task: &str,
) -> TaskUser {
    TaskUser {
        uid: id_of(&[account.as_str(), pool.as_str(), job, task]),
        ..pool_user
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Who the tasks of this node run as: the pool's user when the agent is
/// root (unless told to run them as root), else the agent's own user
/// (`None`: nothing to switch).
pub fn decide(
    account: &AccountName,
    pool: &PoolId,
    tasks_as_root: bool,
    processes_max: u64,
) -> Option<TaskUser> {
    (is_root() && !tasks_as_root).then(|| TaskUser {
        processes_max,
        ..pool_user(account, pool)
    })
}

/// Hands a directory (or file) to the task user with `mode`; with no task
/// user, only the mode is set.
pub fn give(path: &Path, user: Option<TaskUser>, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Hands `dir` and, if `inputs` (files were staged into it), everything
/// under it to the task user, links included, never followed. A directory
/// just made and left empty is not listed: that was five system calls of
/// every attempt.
pub fn give_tree(dir: &Path, user: Option<TaskUser>, inputs: bool) -> io::Result<()> {
    let Some(u) = user else {
        return Ok(());
    };
    std::os::unix::fs::lchown(dir, Some(u.uid), Some(u.gid))?;
    if !inputs {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            give_tree(&path, user, true)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(u.uid), Some(u.gid))?;
        }
    }
    Ok(())
}

/// Sets a directory's mode (no owner change): the agent's own directories
/// closed (0700) or traversable only (0711).
pub fn close(path: &Path, mode: u32) -> io::Result<()> {
    give(path, None, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_users_are_stable_in_range_and_differ_by_pool() {
        let acme = AccountName::new("acme").unwrap();
        let a = pool_user(&acme, &PoolId::new("render").unwrap());
        assert_eq!(a, pool_user(&acme, &PoolId::new("render").unwrap()));
        assert_ne!(a, pool_user(&acme, &PoolId::new("render2").unwrap()));
        let other = AccountName::new("other").unwrap();
        assert_ne!(a, pool_user(&other, &PoolId::new("render").unwrap()));
        assert!((TASK_UID_BASE..TASK_UID_BASE + TASK_UID_SPAN).contains(&a.uid));
        assert_eq!(a.uid, a.gid);
        let render = PoolId::new("render").unwrap();
        let t1 = task_user(a, &acme, &render, "j", "t1");
        assert_eq!(t1, task_user(a, &acme, &render, "j", "t1"));
        assert_ne!(t1.uid, task_user(a, &acme, &render, "j", "t2").uid);
        assert_ne!(t1.uid, a.uid);
        assert_eq!(t1.gid, a.gid);
        assert!((TASK_UID_BASE..TASK_UID_BASE + TASK_UID_SPAN).contains(&t1.uid));
    }
}
