//! The local provider: node agents as processes on the server's machine.
//!
//! Each node gets `NODES_DIR/ACCOUNT/POOL/NODE/` (`NODES_DIR` is
//! `DATA_DIR/nodes` unless `--nodes-dir` says otherwise) with its credential
//! (`node.toml`, written here, so the agent needs no join token), its pid
//! and its log. Agents run in their own process group, detached from the
//! server: a server restart does not stop them; they reconnect.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::api::agent::NodeCredential;
use crate::api::ApiError;
use crate::private_file::write_owner_only;
use crate::types::{AccountName, NodeId, PoolId};

/// The only variables of the server's environment a local agent is
/// started with: where programs are, the locale and time zone, and how
/// it logs.
const AGENT_ENV: [&str; 7] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "LOTE_LOG",
    "LOTE_LOG_FORMAT",
    "RUST_BACKTRACE",
];

/// Where the local nodes of a pool live.
pub fn pool_dir(nodes_dir: &Path, account: &AccountName, pool: &PoolId) -> PathBuf {
    nodes_dir.join(account.as_str()).join(pool.as_str())
}

/// Writes the node's credential and starts its agent.
pub fn start_agent(
    nodes_dir: &Path,
    server_addr: &str,
    cred: &NodeCredential,
    slots: u32,
) -> Result<u32, ApiError> {
    let root = pool_dir(nodes_dir, &cred.account, &cred.pool).join(cred.node.as_str());
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::new(
            crate::api::ErrorKind::Internal,
            format!("cannot start the agent of node {}: {what}: {e}", cred.node),
        )
    };
    std::fs::create_dir_all(&root).map_err(|e| fail("node directory", &e))?;
    // Tasks run as their pool's user: they may pass through the nodes
    // directory to their own node's, and list nothing on the way.
    let pool = root.parent().expect("a node directory is in its pool's");
    for dir in [nodes_dir, pool.parent().unwrap_or(pool), pool, &root] {
        traversable(dir).map_err(|e| fail("node directory", &e))?;
    }
    let text = toml::to_string(cred).map_err(|e| fail("credential", &e))?;
    write_owner_only(&root.join("node.toml"), &text, "node credential", true)
        .map_err(|e| fail("credential", &e))?;
    // The agent is this same binary, unless an embedder (a benchmark, a
    // test harness) names the lote binary to use.
    let exe = match std::env::var_os("LOTE_AGENT_EXE") {
        Some(exe) => PathBuf::from(exe),
        None => std::env::current_exe().map_err(|e| fail("lote executable", &e))?,
    };
    let log = std::fs::File::create(root.join("agent.log")).map_err(|e| fail("agent log", &e))?;
    let err_log = log.try_clone().map_err(|e| fail("agent log", &e))?;
    let mut command = std::process::Command::new(exe);
    command
        // The agent gets none of the server's environment (an admin key
        // in LOTE_ADMIN_KEY, cloud credentials...): its tasks could read
        // it in /proc. Only what the agent itself reads is passed.
        .env_clear()
        .envs(
            AGENT_ENV
                .iter()
                .filter_map(|name| Some((name, std::env::var_os(name)?))),
        )
        .args(["agent", "--server", server_addr])
        .args([
            "--pool-account",
            cred.account.as_str(),
            "--pool",
            cred.pool.as_str(),
        ])
        .args(["--slots", &slots.to_string(), "--name", cred.node.as_str()])
        .arg("--root")
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err_log)
        // Its own group: Ctrl-C on the server's terminal does not reach it.
        .process_group(0);
    // The server turned transparent huge pages off for itself, and that is
    // inherited: the agent, and so its tasks, get the machine's setting
    // back.
    // SAFETY: prctl is async-signal-safe and changes only the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| fail("spawn", &e))?;
    let pid = child.id();
    std::fs::write(root.join("agent.pid"), format!("{pid}\n")).map_err(|e| fail("pid file", &e))?;
    // Reap it when it exits, so no zombie is left while the server runs.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// Lets others pass through a directory (0711) without listing it.
pub fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Removes a deleted pool's directory, and its account's when that is left
/// empty; a directory that still holds anything (a node being removed) is
/// kept.
pub fn remove_pool_dir(nodes_dir: &Path, account: &AccountName, pool: &PoolId) {
    let dir = pool_dir(nodes_dir, account, pool);
    if std::fs::remove_dir(&dir).is_ok() {
        if let Some(account_dir) = dir.parent() {
            let _ = std::fs::remove_dir(account_dir);
        }
    }
}

/// Stops a node's agent (and everything in its process group) and removes
/// the node's directory: a removed node loses its files.
pub fn stop_agent(nodes_dir: &Path, account: &AccountName, pool: &PoolId, node: &NodeId) {
    let root = pool_dir(nodes_dir, account, pool).join(node.as_str());
    if let Ok(text) = std::fs::read_to_string(root.join("agent.pid")) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            if pid > 1 {
                // SIGTERM first: the agent kills its tasks' process groups
                // (which are not its own group) and exits.
                // SAFETY: kill(2) on the agent's process group (it leads it).
                unsafe {
                    libc::kill(-pid, libc::SIGTERM);
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while alive(pid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(root = %root.display(), error = %e, "cannot remove a node directory");
        }
    }
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}
