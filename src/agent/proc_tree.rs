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

/// Whether this process adopts what its descendants orphan
/// ([`adopt_orphans`]).
static ADOPTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes this process the reaper of every orphan among its descendants
/// (`PR_SET_CHILD_SUBREAPER`): a process an attempt leaves behind, whatever
/// its group or session, is then re-parented to the agent instead of init.
/// Once an attempt's leader is reaped, the agent's own children list (one
/// small read) says whether anything of it can still be alive, and only
/// then are pids probed. Without it every end of an attempt probes.
pub fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument
    // and touches no memory of ours.
    let ok = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    ADOPTING.store(ok, std::sync::atomic::Ordering::Relaxed);
}

/// Children this process started itself and reaps through their handles
/// (tokio's `Child`, `launch::Launched`): never taken for something an
/// attempt left behind.
static OWNED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

pub(super) fn owned() -> std::sync::MutexGuard<'static, Vec<u32>> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a child the agent spawned as its own while the guard lives: keep
/// it as long as the `Child` it goes with.
pub struct Owned(Option<u32>);

impl Owned {
    /// Marks `pid` in the list `owned()` gave (held across the spawn).
    pub(super) fn mark(owned: &mut Vec<u32>, pid: u32) -> Owned {
        owned.push(pid);
        Owned(Some(pid))
    }
}

/// Spawns `command` and marks the child as the agent's own at once (no
/// await between), so a check on this thread never takes it for a
/// leftover. Every process the agent starts with `Command` goes through
/// here; `launch` marks its own the same way.
pub fn spawn_owned(
    command: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Owned)> {
    let mut list = owned();
    let child = command.spawn()?;
    let mark = match child.id() {
        Some(pid) => Owned::mark(&mut list, pid),
        None => Owned(None),
    };
    Ok((child, mark))
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let mut all = owned();
            if let Some(i) = all.iter().position(|p| *p == pid) {
                all.swap_remove(i);
            }
        }
    }
}

/// Whether anything an ended attempt started may still be alive, judged
/// from the agent's children once the attempt's leader is reaped: with
/// orphans adopted, a survivor is a child of the agent (or below one) that
/// the agent did not spawn itself. Leftovers that already died are reaped
/// here. True whenever it cannot tell: orphans not adopted, not on the main
/// thread (where spawns happen and orphans are attached), /proc unreadable.
fn maybe_left_behind() -> bool {
    if !ADOPTING.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    // The kernel re-parents orphans to the reaper's main thread, and only
    // this thread reaps (tokio's driver runs here), so the list is read
    // whole: no child leaves it during the read.
    CHILDREN.with(|children| {
        let mut children = children.borrow_mut();
        let Some(list) = children.read() else {
            return true;
        };
        let owned = owned();
        let mut alive = false;
        for pid in list
            .split(|b| b.is_ascii_whitespace())
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok())
        {
            if owned.contains(&pid) {
                continue;
            }
            if !super::procfs::alive(pid) {
                // A leftover that died (a zombie, or already gone): reap
                // it, since nobody else will.
                let mut status = 0;
                // SAFETY: waitpid on one child that no Child handle owns.
                unsafe {
                    libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
                }
                continue;
            }
            alive = true;
        }
        alive
    })
}

/// This thread's children list, open once: re-read from the start with
/// `pread`, which regenerates the list, instead of a path walk, an open
/// and a close at the end of every attempt (a tenth of an agent's CPU on
/// short tasks).
struct ChildrenList {
    /// None off the main thread (orphans are re-parented to the main
    /// thread only), or when /proc could not be opened.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

thread_local! {
    static CHILDREN: std::cell::RefCell<ChildrenList> = std::cell::RefCell::new(ChildrenList::open());
}

impl ChildrenList {
    fn open() -> ChildrenList {
        let me = std::process::id();
        // SAFETY: gettid has no arguments and no preconditions.
        let on_main_thread = unsafe { libc::gettid() } as u32 == me;
        ChildrenList::of_thread(on_main_thread.then_some(me))
    }

    fn of_thread(tid: Option<u32>) -> ChildrenList {
        let me = std::process::id();
        let file =
            tid.and_then(|tid| std::fs::File::open(format!("/proc/{me}/task/{tid}/children")).ok());
        ChildrenList {
            file,
            buf: Vec::new(),
        }
    }

    /// The pids, space-separated, as the kernel lists them now.
    fn read(&mut self) -> Option<&[u8]> {
        use std::os::unix::fs::FileExt;
        let file = self.file.as_ref()?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read_at(&mut chunk, self.buf.len() as u64) {
                Ok(0) => return Some(&self.buf),
                // The kernel fills a read with every whole entry that fits
                // (a pid and a space: at most 11 bytes), so a read that left
                // room for more found the end: no second read to hear it.
                Ok(n) if n + CHILDREN_ENTRY_BYTES_MAX < chunk.len() => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Some(&self.buf);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// Longest entry of a thread's `children` list: a pid (at most 10 digits)
/// and its separator, with room to spare.
const CHILDREN_ENTRY_BYTES_MAX: usize = 16;

/// Rounds of sweeping: a process forking while it is being killed can
/// leave a child that the next round finds.
const SWEEP_ROUNDS_MAX: usize = 8;

/// An attempt's process tree: its group leader and its tag.
#[derive(Debug, Clone)]
pub struct Tracked {
    pid: u32,
    tag: String,
    /// A time in clock ticks since boot no later than the leader's start
    /// (so no later than any descendant's).
    started: u64,
    /// The attempt's cgroup, which holds every process it started.
    group: Option<std::sync::Arc<super::cgroup::Group>>,
}

impl Tracked {
    /// `since`: [`boot_ticks`] read before the leader was started.
    pub fn new(pid: u32, tag: String, since: u64, group: Option<&super::cgroup::Lease>) -> Self {
        Tracked {
            pid,
            tag,
            started: since,
            group: group.map(|g| g.group()),
        }
    }

    /// SIGKILLs the process group, then every tagged process that left
    /// it, then whatever is left in the attempt's cgroup (a process that
    /// cleared its environment and left the session).
    pub fn kill(&self) {
        self.sweep(last_pid());
        if let Some(group) = &self.group {
            group.kill();
        }
    }

    /// [`Tracked::kill`] of an attempt whose leader was reaped, done here
    /// when the agent's children show nothing of it left (then there is
    /// nothing to kill), or only a few pids are to be probed (cheap enough
    /// for the agent's own thread); false, with nothing done, when the
    /// sweep would be long enough to belong on another.
    ///
    /// With orphans adopted, every survivor of the attempt is below a
    /// child of the agent that is not a running leader, which is what
    /// [`maybe_left_behind`] looks for; so when it finds none, even the
    /// group kill is skipped. That kill would fail with ESRCH at best,
    /// and at worst, the group's id being free again, hit whatever group
    /// took the number since.
    pub fn kill_if_cheap(&self) -> bool {
        // With a cgroup, one read of its list tells whether anything of
        // the attempt is alive; a task user cannot leave the group. It is
        // asked first: the agent's list of children can miss an orphan
        // the kernel gave to another of its threads (an escaped process
        // outlived its attempt that way, once, under load). The list is
        // still read: it reaps leftovers that died.
        let maybe = maybe_left_behind();
        if let Some(group) = &self.group {
            return group.is_empty();
        }
        if !maybe {
            return true;
        }
        let last = last_pid();
        if !last.is_some_and(|l| l >= self.pid && l - self.pid <= PROBE_PIDS_CHEAP) {
            return false;
        }
        self.sweep(last);
        true
    }

    /// The kill, with `last` the newest pid read just before (so the first
    /// round does not read it again).
    fn sweep(&self, mut last: Option<u32>) {
        // SAFETY: kill(2) on the process group the leader was started in
        // (process_group(0)); the group id is the leader's pid.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let needle = format!("{TAG_VAR}={}", self.tag).into_bytes();
        let me = std::process::id();
        for _ in 0..SWEEP_ROUNDS_MAX {
            let mut killed = 0;
            for pid in tagged(&needle, self.pid, self.started, me, last) {
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
            // What the killed left behind started after this read.
            last = last_pid();
        }
    }
}

/// Pids to probe that an agent sweeps inline, without a thread hand-off.
const PROBE_PIDS_CHEAP: u32 = 32;

/// Most pids probed one by one before a sweep lists /proc instead.
const PROBE_PIDS_MAX: u32 = 512;

/// Processes started since the attempt's leader (at or after `since`)
/// whose environment holds `needle`; `last` is the newest pid handed out.
fn tagged(needle: &[u8], leader: u32, since: u64, me: u32, last: Option<u32>) -> Vec<u32> {
    // Pids are handed out in increasing order until the counter wraps:
    // what the attempt started is numbered between its leader and the
    // newest pid. A short task leaves a handful of pids to look at, and
    // probing them costs far less than listing every process of the
    // machine (each /proc entry listed is built by the kernel).
    let (candidates, probing): (Vec<u32>, bool) = match last {
        // The leader too: one that moved to another group of its session
        // is not reached by the group kill.
        Some(last) if last >= leader && last - leader <= PROBE_PIDS_MAX => {
            ((leader..=last).collect(), true)
        }
        // Many processes since, or the counter wrapped: every process,
        // whatever its number; the start time still rules out the old.
        _ => (all_pids(), false),
    };
    let mut out = Vec::new();
    for pid in candidates {
        // Probed pids are all newer than the leader: the tag alone decides.
        // Listed ones may be old: their start time rules most out without
        // reading their environment.
        if pid == me || (!probing && start_ticks(pid).is_none_or(|t| t < since)) {
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

/// Now, in the clock ticks since boot that /proc/PID/stat gives start
/// times in (the same clock, truncated the same way), without a file read.
pub fn boot_ticks() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } == 0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if !ok || hz <= 0 {
        // Start times then rule nothing out; the tag still decides.
        return 0;
    }
    let ns = now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128;
    (ns * hz as u128 / 1_000_000_000) as u64
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
    fn a_children_list_kept_open_is_current_at_every_read() {
        // SAFETY: gettid has no arguments and no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let mut list = ChildrenList::of_thread(Some(tid));
        let pids = |list: &mut ChildrenList| -> Vec<u32> {
            let bytes = list.read().expect("the children list is readable");
            std::str::from_utf8(bytes)
                .unwrap()
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect()
        };
        let mut first = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut second = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let seen = pids(&mut list);
        assert!(
            seen.contains(&first.id()) && seen.contains(&second.id()),
            "{seen:?}"
        );
        first.kill().unwrap();
        first.wait().unwrap();
        let seen = pids(&mut list);
        assert!(
            !seen.contains(&first.id()) && seen.contains(&second.id()),
            "{seen:?}"
        );
        second.kill().unwrap();
        second.wait().unwrap();
        let seen = pids(&mut list);
        assert!(!seen.contains(&second.id()), "{seen:?}");
        let mut third = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(pids(&mut list).contains(&third.id()));
        third.kill().unwrap();
        third.wait().unwrap();
    }

    #[test]
    fn the_newest_pid_is_read() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let last = last_pid().expect("/proc/loadavg names the newest pid");
        let _ = child.wait();
        // Unless the pid counter wrapped just now, the child is no newer.
        assert!(last >= child.id() || last < 1000, "{last} < {}", child.id());
        assert!(all_pids().contains(&std::process::id()));
    }

    #[test]
    fn boot_ticks_bound_a_new_process_start() {
        let before = boot_ticks();
        let mut child = std::process::Command::new("sleep")
            .arg("1")
            .spawn()
            .unwrap();
        let started = start_ticks(child.id()).expect("child's start time");
        let after = boot_ticks();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            before <= started && started <= after,
            "{before} {started} {after}"
        );
    }

    #[test]
    fn own_start_time_is_read() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(start_ticks(u32::MAX).is_none());
    }
}
