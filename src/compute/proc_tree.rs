//! Killing everything an attempt started, including what escaped its
//! process group.
//!
//! A task leads its own process group, and killing the group takes every
//! child that stayed in it. A child that calls `setsid` (a daemon, `nohup
//! setsid cmd &`) leaves the group; it still carries the environment it
//! inherited, so each attempt gets a random tag in [`TAG_VAR`], and the
//! sweep kills every process that started after the attempt and carries
//! its tag. A process that clears its environment escapes this; cgroups
//! would catch it, but need a delegated hierarchy we cannot count on.

/// The variable each attempt's processes inherit.
pub const TAG_VAR: &str = "LOTE_ATTEMPT_TAG";

/// A fresh tag for an attempt: random per agent process, then a counter.
/// It only has to differ from every other attempt's on the machine; one
/// random draw per agent spares a system call per attempt.
pub fn new_tag() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| crate::clock::new_uuid().simple().to_string());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}

/// Rounds of sweeping: a process forking while it is being killed can
/// leave a child that the next round finds.
const SWEEP_ROUNDS_MAX: usize = 8;

/// An attempt's process tree: its group leader and its tag.
#[derive(Debug, Clone)]
pub struct Tracked {
    pid: u32,
    tag: String,
    /// The leader's start time in clock ticks since boot; descendants
    /// started no earlier.
    started: u64,
}

impl Tracked {
    pub fn new(pid: u32, tag: String) -> Self {
        let started = start_ticks(pid).unwrap_or(0);
        Tracked { pid, tag, started }
    }

    /// SIGKILLs the group, then every tagged process that left it.
    pub fn kill(&self) {
        // SAFETY: kill(2) on the process group the leader was started in
        // (process_group(0)); the group id is the leader's pid.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let needle = format!("{TAG_VAR}={}", self.tag).into_bytes();
        let me = std::process::id();
        for _ in 0..SWEEP_ROUNDS_MAX {
            let mut killed = 0;
            for pid in tagged(&needle, self.pid, self.started, me) {
                // SAFETY: kill(2) on one process that carries this
                // attempt's tag, so it is one of the attempt's own.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                killed += 1;
            }
            if killed == 0 {
                return;
            }
        }
    }
}

/// Most pids probed one by one before a sweep lists /proc instead.
const PROBE_PIDS_MAX: u32 = 512;

/// Processes started since the attempt's leader (at or after `since`)
/// whose environment holds `needle`.
fn tagged(needle: &[u8], leader: u32, since: u64, me: u32) -> Vec<u32> {
    // Pids are handed out in increasing order until the counter wraps:
    // what the attempt started is numbered between its leader and the
    // newest pid. A short task leaves a handful of pids to look at, and
    // probing them costs far less than listing every process of the
    // machine (each /proc entry listed is built by the kernel).
    let candidates: Vec<u32> = match last_pid() {
        Some(last) if last >= leader && last - leader <= PROBE_PIDS_MAX => {
            (leader..=last).collect()
        }
        // Many processes since, or the counter wrapped: every process,
        // whatever its number; the start time still rules out the old.
        _ => all_pids(),
    };
    let mut out = Vec::new();
    for pid in candidates {
        if pid == me || start_ticks(pid).is_none_or(|t| t < since) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == needle) {
            out.push(pid);
        }
    }
    out
}

/// The newest pid handed out on this machine (the last field of
/// /proc/loadavg). Threads take pids too, so some candidates are threads;
/// their environment is their process's.
fn last_pid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().last()?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// Field 22 of `/proc/PID/stat`: when the process started. None for a
/// process that is gone or a zombie (nothing left to kill).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state (field 3), field 22 is the 19th.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_pid_is_read() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let last = last_pid().expect("/proc/loadavg names the newest pid");
        // Unless the pid counter wrapped just now, the child is no newer.
        assert!(last >= child.id() || last < 1000, "{last} < {}", child.id());
        assert!(all_pids().contains(&std::process::id()));
    }

    #[test]
    fn own_start_time_is_read() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(start_ticks(u32::MAX).is_none());
    }
}
