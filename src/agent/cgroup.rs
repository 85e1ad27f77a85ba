//! A control group per running attempt: its memory, process-count and CPU
//! share limits, the out-of-memory kills it suffered, and a kill that
//! reaches every process it started, however it left the attempt's
//! process group or cleared its environment.
//!
//! A node's groups live under one directory per hierarchy, below the
//! agent's own group (so whatever limits the agent's group has, its tasks
//! are inside them): `lote/n-HASH` where HASH names the node's root
//! directory, so an agent restarted on the same root finds what its
//! previous life left and kills it before it runs anything. Under it, one
//! group per task slot in use (`a0`, `a1`, ...), reused from attempt to
//! attempt once empty: making and removing groups per attempt would cost
//! more than the attempt on short tasks.
//!
//! Two layouts: cgroup v2 (one hierarchy; the agent's own group must be
//! delegated to it, and the agent moves itself into a leaf so the group
//! may enable controllers for its children) and v1 (a hierarchy per
//! controller; root creates groups anywhere). Without either (an agent
//! not running as root, no controllers), tasks run with rlimits only;
//! see ARCHITECTURE.md for what is lost.
//!
//! The attempt's first process puts itself in its group before it drops
//! to the task user (it writes 0 to each hierarchy's `cgroup.procs`, the
//! descriptors opened here), so nothing it runs is ever outside.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A task's CPU weight when nothing sets one: the kernel's own default.
pub const CPU_WEIGHT_DEFAULT: u32 = 100;

/// The limits every attempt of a node runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (and swap) an attempt's processes may hold together;
    /// None: no limit of its own (the agent's group's still applies).
    pub memory_bytes: Option<u64>,
    /// Processes (and threads) an attempt may have at once.
    pub processes_max: u64,
    /// Its share of CPU against the node's other attempts, 1..=10000.
    pub cpu_weight: u32,
}

/// Which cgroup layout a node's groups are in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// One directory per controller hierarchy: memory, pids, then cpu when
    /// mounted.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// The node's directory in the unified hierarchy.
    V2(PathBuf),
}

impl Layout {
    /// The node's directory in every hierarchy it uses.
    fn bases(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 { memory, pids, cpu } => [Some(memory), Some(pids), cpu.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            Layout::V2(dir) => vec![dir.clone()],
        }
    }

    /// The base whose `cgroup.procs` lists a group's processes.
    fn listing(&self) -> &Path {
        match self {
            Layout::V1 { pids, .. } => pids,
            Layout::V2(dir) => dir,
        }
    }
}

/// A node's attempt groups.
pub struct Groups {
    layout: Layout,
    limits: Mutex<Limits>,
    /// Moves with every change of limits: groups made before are not
    /// lent again.
    generation: AtomicU64,
    free: Mutex<Vec<Arc<Group>>>,
    next: AtomicU32,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("layout", &self.layout)
            .field("limits", &self.limits)
            .finish()
    }
}

/// One attempt group: the descriptors its first process joins it by, its
/// process list, and the out-of-memory kills counted so far.
#[derive(Debug)]
pub struct Group {
    /// Found empty since a process last could join (see `stays_empty`).
    found_empty: AtomicBool,
    dirs: Vec<PathBuf>,
    join: Vec<File>,
    listing: File,
    listing_path: PathBuf,
    /// `memory.oom_control` (v1) or `memory.events` (v2), open: read
    /// after every attempt.
    oom_counter: File,
    oom_seen: AtomicU64,
    v2: bool,
    /// The limits' generation it was made with.
    generation: u64,
}

/// A group lent to one attempt; it goes back to the node's free list when
/// the lease ends, if nothing of the attempt is left in it.
pub struct Lease {
    group: Arc<Group>,
    groups: Arc<Groups>,
}

impl Groups {
    /// The node's groups for the node rooted at `root`, made ready: what a
    /// previous agent on this root left running is killed first. Err says
    /// why there are none (not root, no controllers, not delegated).
    pub fn open(root: &Path, limits: Limits) -> Result<Arc<Groups>, String> {
        let name = node_group_name(root);
        let layout = match detect_v2(&name) {
            Some(Ok(layout)) => layout,
            Some(Err(why)) => detect_v1(&name).map_err(|v1| format!("{why}; {v1}"))?,
            None => detect_v1(&name)?,
        };
        for base in layout.bases() {
            std::fs::create_dir_all(&base)
                .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        }
        if let Layout::V2(dir) = &layout {
            enable_controllers(dir)?;
        }
        // Leftovers of a previous life on this root.
        kill_tree(&layout.bases());
        remove_children(&layout.bases());
        let groups = Arc::new(Groups {
            layout,
            limits: Mutex::new(limits),
            generation: AtomicU64::new(0),
            free: Mutex::default(),
            next: AtomicU32::new(0),
        });
        // One group made now, so a machine that refuses them says so at
        // start rather than at the first task.
        let first = groups
            .make()
            .map_err(|e| format!("cannot make an attempt group: {e}"))?;
        groups.lock_free().push(Arc::new(first));
        Ok(groups)
    }

    /// Where the node's groups are, for the agent's start message.
    pub fn describe(&self) -> String {
        match &self.layout {
            Layout::V1 { pids, .. } => format!("cgroup v1, {}", pids.display()),
            Layout::V2(dir) => format!("cgroup v2, {}", dir.display()),
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New limits for the attempts to come (the pool's settings, at
    /// registration): the free groups, made with the old, are removed.
    pub fn set_limits(&self, limits: Limits) {
        {
            let mut current = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            if *current == limits {
                return;
            }
            *current = limits;
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        let old: Vec<Arc<Group>> = std::mem::take(&mut *self.lock_free());
        for group in old {
            group.remove();
        }
    }

    /// The node's directories in every hierarchy: what the watchdog sweeps.
    pub fn bases(&self) -> Vec<PathBuf> {
        self.layout.bases()
    }

    fn lock_free(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Group>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty group for one attempt.
    pub fn take(self: &Arc<Self>) -> io::Result<Lease> {
        let group = match self.lock_free().pop() {
            Some(group) => group,
            None => Arc::new(self.make()?),
        };
        Ok(Lease {
            group,
            groups: self.clone(),
        })
    }

    fn make(&self) -> io::Result<Group> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let leaf = format!("a{n}");
        // v1 puts a process in each hierarchy by a write of its own, about
        // 25 µs each: the cpu hierarchy only when a weight other than the
        // default is asked for (the default would change nothing).
        let with_cpu = self.limits().cpu_weight != CPU_WEIGHT_DEFAULT;
        let dirs: Vec<PathBuf> = match &self.layout {
            Layout::V1 { memory, pids, cpu } => {
                [Some(memory), Some(pids), cpu.as_ref().filter(|_| with_cpu)]
                    .into_iter()
                    .flatten()
                    .map(|b| b.join(&leaf))
                    .collect()
            }
            Layout::V2(dir) => vec![dir.join(&leaf)],
        };
        for dir in &dirs {
            match std::fs::create_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
        }
        let l = self.limits();
        let generation = self.generation.load(Ordering::Relaxed);
        let v2 = matches!(self.layout, Layout::V2(_));
        let (memory_dir, pids_dir, cpu_dir) =
            (&dirs[0], &dirs[if v2 { 0 } else { 1 }], dirs.get(2));
        if let Some(bytes) = l.memory_bytes {
            if v2 {
                write(memory_dir, "memory.max", &bytes.to_string())?;
                // No swap: the limit is the memory the attempt may take.
                let _ = write(memory_dir, "memory.swap.max", "0");
            } else {
                write(memory_dir, "memory.limit_in_bytes", &bytes.to_string())?;
                // Swap accounting may be off; then there is nothing to cap.
                let _ = write(
                    memory_dir,
                    "memory.memsw.limit_in_bytes",
                    &bytes.to_string(),
                );
            }
        }
        write(pids_dir, "pids.max", &l.processes_max.to_string())?;
        if v2 {
            // The cpu controller may be absent; weight is then not enforced.
            let _ = write(&dirs[0], "cpu.weight", &l.cpu_weight.to_string());
        } else if let Some(cpu) = cpu_dir {
            write(cpu, "cpu.shares", &v1_shares(l.cpu_weight).to_string())?;
        }
        let join = dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let listing_dir = self.layout.listing().join(&leaf);
        let listing_path = listing_dir.join("cgroup.procs");
        let listing = File::open(&listing_path)?;
        let oom_counter = File::open(memory_dir.join(if v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        }))?;
        let group = Group {
            found_empty: AtomicBool::new(false),
            generation,
            oom_seen: AtomicU64::new(read_oom_kills(&oom_counter).unwrap_or(0)),
            dirs,
            join,
            listing,
            listing_path,
            oom_counter,
            v2,
        };
        Ok(group)
    }

    /// Kills every process in every group of the node (the agent stops).
    pub fn kill_all(&self) {
        kill_tree(&self.layout.bases());
    }
}

impl Lease {
    /// The descriptors the attempt's first process writes 0 to, one per
    /// hierarchy, to join the group.
    pub fn join_fds(&self) -> Vec<RawFd> {
        // A process may join through these from now on.
        self.group.found_empty.store(false, Ordering::Relaxed);
        self.group.join.iter().map(|f| f.as_raw_fd()).collect()
    }

    pub fn group(&self) -> Arc<Group> {
        self.group.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A group something still runs in is not lent again: it is
        // swept when the agent next starts on this root. One made with
        // old limits goes.
        if !self.group.stays_empty() {
            return;
        }
        if self.group.generation == self.groups.generation.load(Ordering::Relaxed) {
            self.groups.lock_free().push(self.group.clone());
        } else {
            self.group.remove();
        }
    }
}

impl Group {
    /// Its processes now (one small read).
    pub fn pids(&self) -> Vec<u32> {
        let mut text = String::new();
        let read = self.read_listing(|mut f| f.rewind().and_then(|_| f.read_to_string(&mut text)));
        if read.is_err() {
            return Vec::new();
        }
        text.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Whether nothing runs in it (one byte read).
    pub fn is_empty(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut byte = [0u8; 1];
        let empty = matches!(self.read_listing(|f| f.read_at(&mut byte, 0)), Ok(0));
        if empty {
            self.found_empty.store(true, Ordering::Relaxed);
        }
        empty
    }

    /// [`is_empty`](Self::is_empty), without the read when it was found
    /// empty since the lease's join descriptors were last handed out: an
    /// empty group stays empty, since nothing in it can fork and only the
    /// agent (root) can move a process in. The end of every attempt asks
    /// twice (its processes, then its lease); the second read was an open,
    /// a read and a close.
    fn stays_empty(&self) -> bool {
        self.found_empty.load(Ordering::Relaxed) || self.is_empty()
    }

    /// Runs `read` on the group's current `cgroup.procs`. With cgroup v2
    /// that is the file kept open. Version 1 keeps a list of pids per open
    /// file and hands the same one out again for a second after a read:
    /// read through the open file, a group that was empty a moment ago
    /// (before an escaped process forked) still looked empty at the
    /// attempt's end, and the process was never killed (the
    /// escaped-process test failed that way in CI). So v1 opens the list
    /// afresh, which makes a new one.
    fn read_listing<T>(&self, read: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        match self.v2 {
            true => read(&self.listing),
            false => read(&File::open(&self.listing_path)?),
        }
    }

    /// SIGKILLs everything in it until it is empty (or a few seconds pass:
    /// a process stuck in the kernel cannot be hurried). Processes forking
    /// meanwhile are caught by the next round; the process limit bounds
    /// how many there can be.
    pub fn kill(&self) {
        kill_dir(&self.dirs[0], self.v2, || self.pids());
    }

    /// Removes its directories (it must be empty; a process in it keeps
    /// it, to be swept when the agent next starts).
    fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Whether the kernel's out-of-memory killer acted in it since the
    /// last call (the counter grows over the group's whole life).
    pub fn oom_killed(&self) -> bool {
        let Some(now) = read_oom_kills(&self.oom_counter) else {
            return false;
        };
        let before = self.oom_seen.swap(now, Ordering::Relaxed);
        now > before
    }
}

/// How long a kill waits for a group to empty.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

fn kill_dir(dir: &Path, v2: bool, pids: impl Fn() -> Vec<u32>) {
    // cgroup.kill (Linux 5.14) kills the whole group at once, forks and
    // all; older kernels and v1 get rounds of kill(2).
    let whole = v2 && write(dir, "cgroup.kill", "1").is_ok();
    let deadline = std::time::Instant::now() + KILL_PATIENCE;
    loop {
        // A killed process not reaped yet still shows in v1 lists.
        let left: Vec<u32> = pids()
            .into_iter()
            .filter(|p| super::procfs::alive(*p))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        if !whole {
            for pid in left {
                // SAFETY: kill(2) on a process listed in the group, which
                // only the attempt's processes are put in.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills every process in every group below `bases` (not the bases'
/// own members, which are not the node's tasks). Used at start for what
/// a previous life left, at the agent's end, and by the watchdog.
pub fn kill_tree(bases: &[PathBuf]) {
    let v2 = bases.len() == 1 && bases[0].join("cgroup.controllers").exists();
    // v1: the pids hierarchy lists everything (the second base); the other
    // hierarchies hold the same processes.
    let listing = if v2 {
        &bases[0]
    } else {
        bases.get(1).unwrap_or(&bases[0])
    };
    let Ok(children) = std::fs::read_dir(listing) else {
        return;
    };
    for child in children.flatten() {
        let dir = child.path();
        if !dir.is_dir() {
            continue;
        }
        let procs = dir.join("cgroup.procs");
        kill_dir(&dir, v2, || {
            std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        });
    }
}

/// Removes the (emptied) attempt groups below the bases; a group still
/// holding a process stays (rmdir refuses it).
pub fn remove_children(bases: &[PathBuf]) {
    for base in bases {
        let Ok(children) = std::fs::read_dir(base) else {
            continue;
        };
        for child in children.flatten() {
            if child.path().is_dir() {
                let _ = std::fs::remove_dir(child.path());
            }
        }
    }
}

/// Removes the node's groups and their bases (the agent has stopped).
pub fn remove_all(bases: &[PathBuf]) {
    remove_children(bases);
    for base in bases {
        let _ = std::fs::remove_dir(base);
        // `lote` above it, once no node of this machine has groups there.
        if let Some(parent) = base.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// `n-` and 16 hex digits of the node root's path (FNV-1a, stable across
/// builds): the same root always maps to the same groups.
fn node_group_name(root: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("n-{h:016x}")
}

/// cpu.shares for a v2-style weight: 100 is the default 1024.
fn v1_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
}

/// The `oom_kill N` line of a v1 `memory.oom_control` or v2
/// `memory.events` (read from the start, so an open file is current).
fn read_oom_kills(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The agent's own group in each hierarchy, from /proc/self/cgroup:
/// `(controllers, path)` per line (`""` for the v2 line).
fn own_groups() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Where the v1 hierarchy holding `controller` is mounted.
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn detect_v1(name: &str) -> Result<Layout, String> {
    let own = own_groups();
    let base = |controller: &str| -> Option<PathBuf> {
        let mount = v1_mount(controller)?;
        let path = own
            .iter()
            .find(|(list, _)| list.split(',').any(|c| c == controller))
            .map(|(_, p)| p.trim_start_matches('/').to_string())
            .unwrap_or_default();
        Some(mount.join(path).join("lote").join(name))
    };
    match (base("memory"), base("pids")) {
        (Some(memory), Some(pids)) => Ok(Layout::V1 {
            memory,
            pids,
            cpu: base("cpu"),
        }),
        _ => Err("no cgroup v1 memory and pids hierarchies are mounted".into()),
    }
}

/// Whether an agent running as root here would put attempts in cgroups:
/// the hierarchies it needs are mounted (v1) or offered to this process's
/// group (v2). Changes nothing; for tests and diagnostics.
pub fn available() -> Result<(), String> {
    let unified = Path::new("/sys/fs/cgroup");
    if unified.join("cgroup.controllers").exists() {
        let own = own_groups()
            .into_iter()
            .find(|(list, _)| list.is_empty())
            .map(|(_, p)| p.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let offered = std::fs::read_to_string(unified.join(own).join("cgroup.controllers"))
            .unwrap_or_default();
        return ["memory", "pids"]
            .iter()
            .all(|c| offered.split_whitespace().any(|o| o == *c))
            .then_some(())
            .ok_or_else(|| {
                "this process's cgroup v2 group offers no memory and pids controllers".into()
            });
    }
    detect_v1("probe").map(|_| ())
}

/// Where the unified hierarchy is the only one (`/sys/fs/cgroup` is
/// cgroup2): the node's groups under the agent's own group, which must
/// offer the memory and pids controllers. None when the machine is not
/// on v2 alone.
fn detect_v2(name: &str) -> Option<Result<Layout, String>> {
    let mount = Path::new("/sys/fs/cgroup");
    if !mount.join("cgroup.controllers").exists() {
        return None;
    }
    let own = own_groups()
        .into_iter()
        .find(|(list, _)| list.is_empty())
        .map(|(_, p)| p.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let group = mount.join(own);
    let offered = std::fs::read_to_string(group.join("cgroup.controllers")).unwrap_or_default();
    if !["memory", "pids"]
        .iter()
        .all(|c| offered.split_whitespace().any(|o| o == *c))
    {
        return Some(Err(format!(
            "the agent's cgroup {} is not delegated the memory and pids controllers",
            group.display()
        )));
    }
    // A group with processes cannot hand controllers to its children:
    // the agent moves into a leaf of its own first.
    let leaf = group.join("lote-agent");
    let moved = std::fs::create_dir_all(&leaf)
        .and_then(|_| write(&leaf, "cgroup.procs", "0"))
        .and_then(|_| write(&group, "cgroup.subtree_control", "+memory +pids"));
    if let Err(e) = moved {
        let _ = write(&group, "cgroup.procs", "0");
        return Some(Err(format!(
            "cannot enable controllers below {} (other processes share it?): {e}",
            group.display()
        )));
    }
    let _ = write(&group, "cgroup.subtree_control", "+cpu");
    Some(Ok(Layout::V2(group.join("lote").join(name))))
}

/// Lets the node's v2 directory (and `lote` above it) hand the controllers
/// down to the attempt groups.
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let parent = dir.parent().unwrap_or(dir);
    for d in [parent, dir] {
        write(d, "cgroup.subtree_control", "+memory +pids")
            .map_err(|e| format!("cannot enable controllers in {}: {e}", d.display()))?;
        let _ = write(d, "cgroup.subtree_control", "+cpu");
    }
    Ok(())
}

/// A process, started by the agent before its runtime, that kills the
/// node's groups when the agent dies, however it dies: it waits for the
/// end of a pipe only the agent holds.
pub struct Watchdog {
    /// The agent's end: closed when the agent is gone.
    _pipe: std::os::fd::OwnedFd,
    pub pid: u32,
}

impl Watchdog {
    /// Forks the watchdog. Call while the process has one thread (before
    /// any runtime starts): the child runs ordinary code after the fork.
    pub fn start(bases: Vec<PathBuf>) -> io::Result<Watchdog> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made and are owned here only.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the caller guarantees one thread, so the child's copy of
        // the process is consistent (no lock held by another thread).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(write_end);
            watch(read_end, &bases);
        }
        drop(read_end);
        Ok(Watchdog {
            _pipe: write_end,
            pid: pid as u32,
        })
    }
}

/// The watchdog's life: its own session (a terminal's signals are for
/// the agent), deaf to SIGTERM and SIGINT, blocked on the pipe until the
/// agent's end closes; then the sweep, and the groups removed.
fn watch(pipe: std::os::fd::OwnedFd, bases: &[PathBuf]) -> ! {
    // SAFETY: setsid, signal and close_range act on this process only;
    // the descriptors closed are the agent's copies, which this process
    // never uses (the pipe is kept: it is below no range closed).
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        let keep = pipe.as_raw_fd() as libc::c_uint;
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
    let mut file = File::from(pipe);
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kill_tree(bases);
    remove_all(bases);
    // SAFETY: _exit ends this process without running the agent's
    // destructors, which are not this process's to run.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_root_always_names_the_same_groups() {
        let a = node_group_name(Path::new("/nonexistent/lote/node-a"));
        assert_eq!(a, node_group_name(Path::new("/nonexistent/lote/node-a")));
        assert_ne!(a, node_group_name(Path::new("/nonexistent/lote/node-b")));
        assert!(a.starts_with("n-") && a.len() == 18, "{a}");
    }

    #[test]
    fn weights_map_to_v1_shares_around_the_default() {
        assert_eq!(v1_shares(CPU_WEIGHT_DEFAULT), 1024);
        assert_eq!(v1_shares(1), 10);
        assert_eq!(v1_shares(10_000), 102_400);
    }

    #[test]
    fn out_of_memory_kills_are_read_from_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_oom_kills(&File::open(&v1).unwrap()), Some(3));
        let v2 = dir.path().join("memory.events");
        std::fs::write(
            &v2,
            "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(read_oom_kills(&File::open(&v2).unwrap()), Some(2));
    }
}
