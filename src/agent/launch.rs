//! Starting a task's process with `posix_spawn` and a defined environment.
//!
//! A task never sees the agent's environment (nor, through it, the
//! server's): it starts from [`BASE_ENV`] (a minimal `PATH` and `LANG`)
//! and gets only what is set for it. The base is turned into `NAME=VALUE`
//! strings once per agent, and a spawn only builds the dozen it sets
//! (`std::process::Command` rebuilds every variable at each spawn, which
//! was about 6% of the agent's CPU per task). The child is waited for
//! through a pidfd, so nothing depends on SIGCHLD.
//!
//! [`launch`] answers `None` where it would differ from `Command` (the
//! task changes `PATH` and names a program to look up in it; a kernel
//! without pidfds): the caller then uses `Command`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use super::proc_tree::{self, Owned};

/// What a task's process is started with.
pub struct Launch<'a> {
    pub program: &'a OsStr,
    pub args: &'a [&'a OsStr],
    pub dir: &'a Path,
    pub stdin: &'a std::fs::File,
    /// Files the child creates (or truncates) before it runs the program:
    /// no descriptor to open and close in the agent, which at a few
    /// thousand tasks a second is worth it. If one cannot be created the
    /// launch fails with the error.
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// Set over [`BASE_ENV`], later entries winning.
    pub env: &'a [(&'a OsStr, &'a OsStr)],
    /// Run as this uid and gid, with no supplementary groups and at most
    /// this many processes of the user (the agent is root and the task is
    /// not); `None`: as the agent.
    pub user: Option<(u32, u32, u64)>,
    /// `cgroup.procs` descriptors of the attempt's group, one per
    /// hierarchy: the child joins the group before anything else runs.
    pub cgroup: &'a [RawFd],
    /// Bytes of address space the process may map, where no cgroup limits
    /// its memory (see `cgroup`).
    pub address_space_max: Option<u64>,
}

/// A started process: its pid, a pidfd that becomes readable when it
/// ends, and its mark as the agent's own.
pub struct Launched {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    _owned: Owned,
}

/// What every task's environment starts from, whatever the agent's own
/// holds: programs in the system's usual places, and a UTF-8 locale that
/// every system has.
pub const BASE_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LANG", "C.UTF-8"),
];

/// Whether the agent's own PATH is the base one (asked once).
fn agent_path_is_base() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| std::env::var_os("PATH").as_deref() == Some(OsStr::new(BASE_ENV[0].1)))
}

/// [`BASE_ENV`] as `NAME=VALUE`, built once.
fn base() -> &'static [(OsString, CString)] {
    static ENV: std::sync::OnceLock<Vec<(OsString, CString)>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        BASE_ENV
            .iter()
            .filter_map(|(name, value)| {
                let (name, value): (&OsStr, &OsStr) = (name.as_ref(), value.as_ref());
                Some((name.to_os_string(), assignment(name, value)?))
            })
            .collect()
    })
}

fn assignment(name: &OsStr, value: &OsStr) -> Option<CString> {
    let mut bytes = Vec::with_capacity(name.len() + value.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).ok()
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

/// Whether this kernel gives pidfds; asked once.
fn pidfds() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| pidfd_open(std::process::id()).is_ok())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; nothing of ours is touched.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nobody
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Starts the process in a process group of its own, with stdio, working
/// directory and environment as given, the signal mask empty and SIGPIPE at
/// its default (as `Command` does). `None`: use `Command` instead.
pub fn launch(spec: &Launch<'_>) -> Option<io::Result<Launched>> {
    let looks_up = !spec.program.as_bytes().contains(&b'/');
    // posix_spawnp searches the agent's own PATH; the task's may differ
    // (its own, or the base one), and then `Command` searches the task's.
    let other_path = spec.env.iter().any(|(name, _)| *name == "PATH") || !agent_path_is_base();
    if (looks_up && other_path) || !pidfds() {
        return None;
    }
    Some(spawn(spec, looks_up))
}

/// The program and its arguments as C strings.
fn c_args(spec: &Launch<'_>) -> io::Result<Vec<CString>> {
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(c_string(spec.program)?);
    for arg in spec.args {
        argv.push(c_string(arg)?);
    }
    Ok(argv)
}

/// The variables set for the process, the last of a name winning.
fn assignments<'a>(spec: &Launch<'a>) -> io::Result<Vec<(&'a OsStr, CString)>> {
    let mut set: Vec<(&OsStr, CString)> = Vec::with_capacity(spec.env.len());
    for (name, value) in spec.env {
        let Some(entry) = assignment(name, value) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("environment variable {name:?} contains a NUL byte"),
            ));
        };
        match set.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = entry,
            None => set.push((name, entry)),
        }
    }
    Ok(set)
}

fn spawn(spec: &Launch<'_>, looks_up: bool) -> io::Result<Launched> {
    let argv_owned = c_args(spec)?;
    let program = &argv_owned[0];
    let mut argv: Vec<*mut libc::c_char> = argv_owned
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .collect();
    argv.push(std::ptr::null_mut());

    let set = assignments(spec)?;
    let mut envp: Vec<*mut libc::c_char> = base()
        .iter()
        .filter(|(name, _)| !set.iter().any(|(n, _)| *n == name.as_os_str()))
        .map(|(_, entry)| entry.as_ptr() as *mut libc::c_char)
        .chain(set.iter().map(|(_, e)| e.as_ptr() as *mut libc::c_char))
        .collect();
    envp.push(std::ptr::null_mut());
    let dir = c_string(spec.dir.as_os_str())?;
    let (stdout, stderr) = (
        c_string(spec.stdout.as_os_str())?,
        c_string(spec.stderr.as_os_str())?,
    );

    // SAFETY: every pointer handed to posix_spawn or spawn_as (program,
    // argv, envp, the directory, the output paths) points into vectors and
    // strings that outlive the call, and the arrays end in NULL.
    unsafe {
        // Marked as the agent's own before any other code on this thread
        // can look at its children.
        let mut owned = proc_tree::owned();
        // posix_spawn where the child needs nothing posix_spawn cannot do.
        let plain =
            spec.user.is_none() && spec.cgroup.is_empty() && spec.address_space_max.is_none();
        let pid = if plain {
            posix_spawn(
                spec,
                looks_up,
                program,
                &argv,
                &envp,
                &dir,
                [&stdout, &stderr],
            )?
        } else {
            let child = ChildSpec {
                program: program.as_ptr(),
                argv: argv.as_ptr(),
                envp: envp.as_ptr(),
                dir: dir.as_ptr(),
                outputs: [stdout.as_ptr(), stderr.as_ptr()],
                stdin: spec.stdin.as_raw_fd(),
                user: spec.user,
                cgroup: spec.cgroup.as_ptr(),
                cgroups: spec.cgroup.len(),
                address_space_max: spec.address_space_max,
                looks_up,
                errno: 0,
                agent: agent_pid(),
            };
            spawn_as(child)?
        };
        let pid = pid as u32;
        let mark = proc_tree::Owned::mark(&mut owned, pid);
        drop(owned);
        // An OwnedFd keeps its descriptor open and unchanged for as long as
        // the AsyncFd owns it, which is what register asks.
        let registered =
            pidfd_open(pid).and_then(|fd| AsyncFd::register(fd).map_err(io::Error::from));
        let pidfd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                // Not waitable through a pidfd: stop it rather than lose it.
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
                return Err(e);
            }
        };
        Ok(Launched {
            pid,
            pidfd,
            status: None,
            _owned: mark,
        })
    }
}

/// Starts the process with posix_spawn (no user, group or limit to set);
/// its pid. The file actions and attributes are built only here: glibc
/// checks each action's descriptor against the open-files limit (a
/// `prlimit` call each), which a spawn through `spawn_as` never needs.
///
/// # Safety
/// `argv` and `envp` must be NULL-terminated arrays of pointers to live
/// C strings, as must `program`, `dir` and `outputs` be.
unsafe fn posix_spawn(
    spec: &Launch<'_>,
    looks_up: bool,
    program: &CString,
    argv: &[*mut libc::c_char],
    envp: &[*mut libc::c_char],
    dir: &CString,
    outputs: [&CString; 2],
) -> io::Result<libc::pid_t> {
    // The attribute and file-action objects are initialised before use and
    // destroyed on every path by the guards.
    let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
    check(libc::posix_spawn_file_actions_init(&mut actions))?;
    let actions = Guard(&mut actions, |a| {
        libc::posix_spawn_file_actions_destroy(a);
    });
    let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
    check(libc::posix_spawnattr_init(&mut attr))?;
    let attr = Guard(&mut attr, |a| {
        libc::posix_spawnattr_destroy(a);
    });
    check(libc::posix_spawn_file_actions_adddup2(
        actions.0,
        spec.stdin.as_raw_fd(),
        0,
    ))?;
    // Before the chdir below, so a relative path means what it meant to
    // the caller.
    for (target, path) in [(1, outputs[0]), (2, outputs[1])] {
        check(libc::posix_spawn_file_actions_addopen(
            actions.0,
            target,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o666,
        ))?;
    }
    check(libc::posix_spawn_file_actions_addchdir_np(
        actions.0,
        dir.as_ptr(),
    ))?;
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    check(libc::posix_spawnattr_setsigmask(attr.0, &empty))?;
    let mut defaults: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut defaults);
    libc::sigaddset(&mut defaults, libc::SIGPIPE);
    check(libc::posix_spawnattr_setsigdefault(attr.0, &defaults))?;
    // Its own process group: a timeout or a kill takes every child.
    check(libc::posix_spawnattr_setpgroup(attr.0, 0))?;
    check(libc::posix_spawnattr_setflags(
        attr.0,
        (libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF)
            as libc::c_short,
    ))?;
    let mut pid: libc::pid_t = 0;
    let spawn = if looks_up {
        libc::posix_spawnp
    } else {
        libc::posix_spawn
    };
    check(spawn(
        &mut pid,
        program.as_ptr(),
        actions.0,
        attr.0,
        argv.as_ptr(),
        envp.as_ptr(),
    ))?;
    Ok(pid)
}

/// The agent's pid, asked of the kernel once (glibc no longer caches it;
/// the agent never forks a copy of itself that would need it asked again).
fn agent_pid() -> libc::pid_t {
    static PID: std::sync::OnceLock<libc::pid_t> = std::sync::OnceLock::new();
    // SAFETY: getpid has no preconditions.
    *PID.get_or_init(|| unsafe { libc::getpid() })
}

/// What the child of [`spawn_as`] needs, prepared by the parent: the child
/// shares the parent's memory until it execs and must not allocate.
struct ChildSpec {
    program: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    dir: *const libc::c_char,
    outputs: [*const libc::c_char; 2],
    stdin: libc::c_int,
    /// uid, gid and most processes of the user to drop to; None: stay.
    user: Option<(u32, u32, u64)>,
    /// `cgroups` descriptors to write 0 to (joins the groups).
    cgroup: *const RawFd,
    cgroups: usize,
    address_space_max: Option<u64>,
    looks_up: bool,
    /// The child's errno when it could not exec, written before it exits:
    /// the child shares this memory, and the parent reads it only once the
    /// child has exec'd or exited (CLONE_VFORK). 0: it exec'd.
    errno: libc::c_int,
    /// The agent's pid: the child dies with it.
    agent: libc::pid_t,
}

/// Bytes of stack for the child of [`spawn_as`]: it calls a dozen system
/// calls and exec, nothing deeper.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Starts a process the way posix_spawn starts one (a child sharing the
/// agent's memory, the agent paused until it execs), doing what
/// posix_spawn cannot: the child joins the attempt's cgroup, sets its
/// limits and drops to the task's user (if any) with
/// raw system calls (glibc's setuid would signal the agent's threads),
/// then opens its output files as that user, enters its working directory
/// and execs. Forking instead cost the compute benchmark a quarter of its
/// rate. An error before the exec comes back in `child.errno`.
///
/// # Safety
/// Every pointer in `child` must point to live, NUL-terminated data (the
/// arrays NULL-terminated) for the whole call.
unsafe fn spawn_as(mut child: ChildSpec) -> io::Result<libc::pid_t> {
    // Not zeroed: a stack needs no initial content, and zeroing 64 KiB was
    // a few percent of the agent's CPU per attempt.
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(CHILD_STACK_BYTES);
    let top = stack.as_mut_ptr().add(CHILD_STACK_BYTES) as usize & !15;
    // No signal handler of the agent may run in the child, which shares
    // its memory: all are blocked across the clone (the child empties its
    // mask before exec).
    let mut all: libc::sigset_t = std::mem::zeroed();
    let mut before: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
    let spec: *mut ChildSpec = &mut child;
    let pid = libc::clone(
        child_main,
        top as *mut libc::c_void,
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        spec.cast(),
    );
    let cloned = io::Error::last_os_error();
    libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
    drop(stack);
    if pid < 0 {
        return Err(cloned);
    }
    // Written by the child through the same pointer; read through it too,
    // not through a copy the compiler may have kept from before the clone.
    let errno = std::ptr::read_volatile(&(*spec).errno);
    if errno != 0 {
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(pid)
}

/// The child of [`spawn_as`]: system calls only, then exec or exit.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildSpec, alive while the parent
    // waits (CLONE_VFORK) and unchanged but for the errno the child writes
    // last; every other call below is a system call that touches no
    // shared state of the parent's.
    unsafe {
        let spec = arg as *mut ChildSpec;
        let c = &*spec;
        let fail = || -> libc::c_int {
            // Never 0 once a call failed; EINVAL if errno was not set.
            let errno = match *libc::__errno_location() {
                0 => libc::EINVAL,
                e => e,
            };
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*spec).errno), errno);
            libc::_exit(127)
        };
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::setpgid(0, 0) != 0 || libc::dup2(c.stdin, 0) < 0 {
            return fail();
        }
        // Into the attempt's group first: everything it starts is inside.
        for i in 0..c.cgroups {
            if libc::write(*c.cgroup.add(i), b"0".as_ptr().cast(), 1) != 1 {
                return fail();
            }
        }
        if let Some(bytes) = c.address_space_max {
            let space = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &space) != 0 {
                return fail();
            }
        }
        if let Some((uid, gid, processes_max)) = c.user {
            let processes = libc::rlimit {
                rlim_cur: processes_max as libc::rlim_t,
                rlim_max: processes_max as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &processes) != 0
                || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setgid, gid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0
            {
                return fail();
            }
        }
        // Dies with the agent (a killed agent leaves no task running that
        // the server has requeued elsewhere). Set after the user change,
        // which clears it; an agent gone meanwhile is caught by its pid.
        // (What it starts is in its cgroup, which the agent's watchdog
        // kills; without one, only this first process dies with the agent.)
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != c.agent {
            return fail();
        }
        for (fd, path) in [(1, c.outputs[0]), (2, c.outputs[1])] {
            let opened = libc::open(
                path,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o666,
            );
            if opened < 0 || libc::dup2(opened, fd) < 0 {
                return fail();
            }
            libc::close(opened);
        }
        if libc::chdir(c.dir) != 0 {
            return fail();
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if c.looks_up {
            libc::execvpe(
                c.program,
                c.argv as *const *const libc::c_char,
                c.envp as *const *const libc::c_char,
            );
        } else {
            libc::execve(
                c.program,
                c.argv as *const *const libc::c_char,
                c.envp as *const *const libc::c_char,
            );
        }
        fail()
    }
}

/// Runs `drop` on the value when the guard goes.
struct Guard<T>(*mut T, unsafe fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        // SAFETY: built only over objects initialised just before, and
        // dropped once.
        unsafe { (self.1)(self.0) }
    }
}

impl Launched {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Whether it has been waited for (its pid may then be reused).
    pub fn ended(&self) -> bool {
        self.status.is_some()
    }

    /// Waits for the process to end and reaps it. Cancel-safe: dropped
    /// mid-wait, a later call waits again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            let mut raw = 0;
            // SAFETY: waitpid on our own child, writing one int we own.
            let reaped = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut raw, libc::WNOHANG) };
            if reaped == self.pid as libc::pid_t {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(status);
            }
            if reaped < 0 {
                return Err(io::Error::last_os_error());
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_launched_process_gets_its_directory_output_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        // Created by the child, or truncated when it is there.
        std::fs::write(dir.path().join("out"), "longer than what is printed\n").unwrap();
        let err = dir.path().join("err");
        let null = std::fs::File::open("/dev/null").unwrap();
        let out = dir.path().join("out");
        let script: &OsStr = "echo \"$LOTE_X $HOME\"; pwd; echo oops >&2; exit 3".as_ref();
        let spec = Launch {
            program: "/bin/sh".as_ref(),
            args: &["-c".as_ref(), script],
            dir: dir.path(),
            stdin: &null,
            stdout: &out,
            stderr: &err,
            env: &[
                ("LOTE_X".as_ref(), "first".as_ref()),
                ("LOTE_X".as_ref(), "last".as_ref()),
            ],
            user: None,
            cgroup: &[],
            address_space_max: None,
        };
        let mut child = launch(&spec).expect("pidfds here").unwrap();
        assert!(!child.ended());
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(child.ended());
        // Waiting again answers the same, without reaping anything else.
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        // Nothing of the agent's environment (HOME here) reaches the task.
        let printed = std::fs::read_to_string(dir.path().join("out")).unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(printed, format!("last \n{}\n", cwd.display()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("err")).unwrap(),
            "oops\n"
        );
    }

    #[tokio::test]
    async fn a_task_sees_the_base_environment_and_what_is_set_for_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        // The agent's own environment holds more than the base (cargo's
        // variables at least, HOME, a PATH of its own).
        assert!(std::env::vars_os().count() > BASE_ENV.len());
        let spec = Launch {
            program: "/usr/bin/env".as_ref(),
            args: &[],
            dir: dir.path(),
            stdin: &null,
            stdout: &out,
            stderr: &err,
            env: &[("LOTE_TASK_ID".as_ref(), "t1".as_ref())],
            user: None,
            cgroup: &[],
            address_space_max: None,
        };
        let mut child = launch(&spec).expect("pidfds here").unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
        let printed = std::fs::read_to_string(&out).unwrap();
        let mut lines: Vec<&str> = printed.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "LANG=C.UTF-8",
                "LOTE_TASK_ID=t1",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_and_a_changed_path_defers_to_command() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let null = Path::new("/dev/null");
        let spec = |program: &'static str, env: &'static [(&'static str, &'static str)]| {
            let env: Vec<(&OsStr, &OsStr)> =
                env.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
            (program, env)
        };
        let run = |program: &str, env: &[(&OsStr, &OsStr)]| {
            launch(&Launch {
                program: program.as_ref(),
                args: &[],
                dir: dir.path(),
                stdin: &f,
                stdout: null,
                stderr: null,
                env,
                user: None,
                cgroup: &[],
                address_space_max: None,
            })
            .map(|r| r.map(|_| ()).map_err(|e| e.kind()))
        };
        // An output the child cannot create fails the launch, with why.
        let nowhere = dir.path().join("no-such-dir/stdout.txt");
        let unwritable = launch(&Launch {
            program: "/bin/true".as_ref(),
            args: &[],
            dir: dir.path(),
            stdin: &f,
            stdout: &nowhere,
            stderr: null,
            env: &[],
            user: None,
            cgroup: &[],
            address_space_max: None,
        })
        .map(|r| r.map(|_| ()).map_err(|e| e.kind()));
        assert_eq!(unwritable, Some(Err(io::ErrorKind::NotFound)));
        let (missing, none) = spec("/nonexistent/lote-test", &[]);
        assert_eq!(run(missing, &none), Some(Err(io::ErrorKind::NotFound)));
        // A program looked up is searched in the task's PATH: by
        // posix_spawnp when the agent's PATH is the base one, else by
        // Command (deferred).
        let (looked_up, none) = spec("lote-no-such-program", &[]);
        let expected = if agent_path_is_base() {
            Some(Err(io::ErrorKind::NotFound))
        } else {
            None
        };
        assert_eq!(run(looked_up, &none), expected);
        // A PATH of the task's own would be searched by Command, not by
        // posix_spawnp (which searches the agent's): deferred.
        let (looked_up, path) = spec("true", &[("PATH", "/usr/bin:/bin")]);
        assert_eq!(run(looked_up, &path), None);
        let (absolute, path) = spec("/bin/true", &[("PATH", "/usr/bin:/bin")]);
        assert_eq!(run(absolute, &path), Some(Ok(())));
    }

    /// As root, a launch with a user runs as that user, its output files
    /// that user's; a directory the user cannot enter fails the launch
    /// with why, and the child is reaped.
    #[tokio::test]
    async fn a_launch_as_another_user_runs_as_it() {
        use std::os::unix::fs::MetadataExt;
        if !crate::agent::user::is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let id = crate::agent::user::TASK_UID_BASE + 7;
        let dir = tempfile::tempdir().unwrap();
        crate::agent::user::give(
            dir.path(),
            Some(crate::agent::user::TaskUser {
                uid: id,
                gid: id,
                processes_max: 64,
            }),
            0o700,
        )
        .unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let spec = Launch {
            program: "/bin/sh".as_ref(),
            args: &["-c".as_ref(), "id -u; id -g; id -G".as_ref()],
            dir: dir.path(),
            stdin: &null,
            stdout: &out,
            stderr: &err,
            env: &[],
            user: Some((id, id, 64)),
            cgroup: &[],
            address_space_max: None,
        };
        let mut child = launch(&spec).expect("pidfds here").unwrap();
        assert!(child.wait().await.unwrap().success());
        let printed = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            printed,
            format!("{id}\n{id}\n{id}\n"),
            "no other group kept"
        );
        assert_eq!(std::fs::metadata(&out).unwrap().uid(), id);
        // Root's private directory: the user cannot enter it.
        let private = tempfile::tempdir().unwrap();
        crate::agent::user::close(private.path(), 0o700).unwrap();
        let shut = Launch {
            dir: private.path(),
            ..spec
        };
        let e = launch(&shut).expect("pidfds here").err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }
}
