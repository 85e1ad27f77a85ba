//! Who tasks run as and what they may read, end to end with real agents
//! running as root: a user per task (or per pool, when the pool says
//! so), admin elevation for tasks and start tasks, per-pool limits, and
//! pool secrets that reach their pool's tasks and nobody else, rotate
//! within seconds, and never reach the log or the logs in clear.

mod compute_support;
mod server_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use compute_support::*;
use lote::client::Client;
use lote::domain::pool::{
    Elevation, NodeProvider, PoolSpec, SchedulingPolicy, TaskSettings, UserScope,
};
use lote::domain::spec::{CommandLine, StartTask};
use lote::domain::task::{Task, TaskStatus};
use lote::types::{AccountName, PoolId};
use server_support::*;

fn as_root() -> bool {
    if !lote::agent::user::is_root() {
        eprintln!("skipped: task users need agents running as root");
        return false;
    }
    true
}

/// A remote pool of one node with `settings`, its agent started on `root`.
async fn pool_with(
    server: &ServerProcess,
    client: &Client,
    id: &str,
    settings: TaskSettings,
    start_task: Option<&str>,
    root: &Path,
) -> Agents {
    let spec = PoolSpec {
        provider: NodeProvider::Remote,
        scheduling: SchedulingPolicy::Pack,
        task_settings: settings,
        start_task: start_task.map(|line| StartTask {
            command_line: CommandLine::Shell(line.into()),
            env: vec![],
            resource_files: vec![],
            wait_for_success: true,
            retry_count_max: 0,
        }),
        ..PoolSpec::fixed(
            PoolId::new(id).unwrap(),
            AccountName::new("x").unwrap(),
            0,
            2,
        )
    };
    create_pool_spec(client, spec).await;
    let token = join_token(client, id).await;
    let agents = start_agents(server, id, &token, &[root], 2);
    nodes_ready(client, &PoolId::new(id).unwrap(), 1).await;
    create_job(client, &format!("{id}-j"), id).await;
    agents
}

/// Runs one shell task to its end on `pool`'s job.
async fn run(client: &Client, pool: &str, id: &str, line: &str) -> Task {
    let job = format!("{pool}-j");
    add(client, &job, vec![shell(id, line)]).await;
    eventually(Duration::from_secs(60), "the task done", || async {
        let t = task(client, &job, id).await.state;
        match t.status {
            TaskStatus::Completed => Ok(t),
            other => Err(format!("{id} is {other:?}")),
        }
    })
    .await
}

fn stdout_of(root: &Path, pool: &str, id: &str) -> String {
    std::fs::read_to_string(root.join(format!("tasks/{pool}-j/{id}/1/stdout.txt")))
        .unwrap()
        .trim()
        .to_string()
}

/// By default each task has a user of its own (in the pool's group) and
/// cannot read another's working directory; a pool of `pool` scope runs
/// them as one user, which can. Admin tasks and start tasks run as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_have_users_of_their_own_unless_their_pool_shares_one() {
    if !as_root() {
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let nodes = open_tempdir();
    let write_then_id = "echo private > own.txt; echo $(id -u) $(id -g)";
    let read_other = |root: &Path, pool: &str| {
        format!(
            "cat {}/tasks/{pool}-j/a/1/wd/own.txt && echo $(id -u) $(id -g)",
            root.display()
        )
    };

    let split_root = nodes.path().join("split");
    let _split = pool_with(
        &server,
        &client,
        "split",
        TaskSettings::default(),
        None,
        &split_root,
    )
    .await;
    assert!(run(&client, "split", "a", write_then_id)
        .await
        .last_result
        .unwrap()
        .succeeded());
    let b = run(&client, "split", "b", &read_other(&split_root, "split")).await;
    assert!(
        !b.last_result.unwrap().succeeded(),
        "a task of its own user read another's working directory"
    );
    let denied = std::fs::read_to_string(split_root.join("tasks/split-j/b/1/stderr.txt")).unwrap();
    assert!(denied.contains("Permission denied"), "{denied}");
    let ids_a = stdout_of(&split_root, "split", "a");
    let (uid_a, gid_a) = ids_a.split_once(' ').unwrap();
    run(&client, "split", "c", "echo $(id -u) $(id -g)").await;
    let ids_c = stdout_of(&split_root, "split", "c");
    let (uid_c, gid_c) = ids_c.split_once(' ').unwrap();
    assert_ne!(uid_a, uid_c, "two tasks, two users");
    assert_eq!(gid_a, gid_c, "one pool, one group");
    assert_ne!(uid_a, "0");

    let shared_root = nodes.path().join("shared");
    let _shared = pool_with(
        &server,
        &client,
        "shared",
        TaskSettings {
            user_scope: UserScope::Pool,
            ..TaskSettings::default()
        },
        None,
        &shared_root,
    )
    .await;
    run(&client, "shared", "a", write_then_id).await;
    let b = run(&client, "shared", "b", &read_other(&shared_root, "shared")).await;
    assert!(
        b.last_result.unwrap().succeeded(),
        "a pool-scoped task could not read its sibling's"
    );
    let out = stdout_of(&shared_root, "shared", "b");
    assert!(out.starts_with("private\n"), "{out}");
    assert_eq!(
        out.lines().nth(1).unwrap(),
        stdout_of(&shared_root, "shared", "a"),
        "one user for the pool"
    );

    let admin_root = nodes.path().join("admin");
    let _admin = pool_with(
        &server,
        &client,
        "admin",
        TaskSettings {
            elevation: Elevation::Admin,
            start_task_elevation: Elevation::Admin,
            ..TaskSettings::default()
        },
        Some("id -u > $LOTE_NODE_SHARED_DIR/start-uid"),
        &admin_root,
    )
    .await;
    run(&client, "admin", "a", "id -u").await;
    assert_eq!(stdout_of(&admin_root, "admin", "a"), "0");
    assert_eq!(
        std::fs::read_to_string(admin_root.join("shared/start-uid"))
            .unwrap()
            .trim(),
        "0"
    );
    // And a non-admin start task of the split pool's kind runs as the
    // pool's user: shown by the default pool's start task below.
    let plain_root = nodes.path().join("plain");
    let _plain = pool_with(
        &server,
        &client,
        "plain",
        TaskSettings::default(),
        Some("id -u > $LOTE_NODE_SHARED_DIR/start-uid"),
        &plain_root,
    )
    .await;
    let start_uid = std::fs::read_to_string(plain_root.join("shared/start-uid")).unwrap();
    let pool_uid = lote::agent::user::pool_user(
        &AccountName::new("acme").unwrap(),
        &PoolId::new("plain").unwrap(),
    )
    .uid;
    assert_eq!(start_uid.trim(), pool_uid.to_string());
}

/// A pool's own limits, under the node's, are what its attempts get: the
/// memory limit in the task's cgroup is the pool's when it asks for less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_limits_apply_to_its_attempts() {
    if !as_root() {
        return;
    }
    if let Err(why) = lote::agent::cgroup::available() {
        eprintln!("skipped: no cgroups here: {why}");
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let nodes = open_tempdir();
    let root = nodes.path().join("n");
    let _agents = pool_with(
        &server,
        &client,
        "small",
        TaskSettings {
            memory_mib: Some(48),
            processes_max: Some(33),
            ..TaskSettings::default()
        },
        None,
        &root,
    )
    .await;
    run(&client, "small", "where", "cat /proc/self/cgroup").await;
    let cgroups = stdout_of(&root, "small", "where");
    let file = |controller: &str, name: &str| {
        let line = cgroups
            .lines()
            .find(|l| {
                let list = l.split(':').nth(1).unwrap_or("");
                list.split(',').any(|c| c == controller) || list.is_empty()
            })
            .unwrap();
        let path = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let mount = if unified {
            "/sys/fs/cgroup".to_string()
        } else {
            format!("/sys/fs/cgroup/{controller}")
        };
        let name = match (unified, name) {
            (true, "memory") => "memory.max",
            (false, "memory") => "memory.limit_in_bytes",
            (_, other) => other,
        };
        std::fs::read_to_string(Path::new(&mount).join(path).join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(file("memory", "memory"), (48u64 << 20).to_string());
    assert_eq!(file("pids", "pids.max"), "33");
}

fn random_value() -> String {
    format!(
        "{}{}",
        lote::clock::new_uuid().simple(),
        lote::clock::new_uuid().simple()
    )
}

/// Every file under `dir` (the data directory: the log, its write-ahead
/// log, snapshots), searched for `needle`'s bytes.
fn found_in_files(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(path);
                }
            }
        }
    }
    hits
}

/// Secrets set with the CLI reach their pool's tasks (in a file) and its
/// start task (in its environment, when asked), and no other pool's
/// tasks; a new value reaches running nodes within seconds, a removed
/// one goes; the value is nowhere in the data directory, `lote audit`,
/// `lote replay --json` or the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_their_pool_only_and_never_the_log_or_the_logs() {
    let data = open_tempdir();
    let log_path = data.path().join("server.log");
    let mut cmd = std::process::Command::new(lote_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("data"))
        .env_remove("LOTE_ADMIN_KEY")
        .env("LOTE_LOG", "debug")
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()));
    let server = ServerProcess::from_command(cmd, &data.path().join("data"));
    let (client, key, _) = server.account("acme").await;
    let (first, second) = (random_value(), random_value());
    let files = open_tempdir();
    let first_file = files.path().join("first");
    std::fs::write(&first_file, &first).unwrap();
    let second_file = files.path().join("second");
    std::fs::write(&second_file, &second).unwrap();

    // Refused: a value on the command line.
    let out = cli(
        &server,
        &key,
        &["pool", "create", "nope", "--secret", "db=hunter2"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NAME=@FILE"),
        "{out:?}"
    );

    let secret_arg = format!("db=@{}", first_file.display());
    let out = cli(
        &server,
        &key,
        &[
            "pool",
            "create",
            "sec",
            "--provider",
            "remote",
            "--nodes",
            "0",
            "--secret",
            &secret_arg,
            "--start-task-secret",
            "db",
            "--start-task",
            "printf %s \"$db\" > $LOTE_NODE_SHARED_DIR/from-env",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let shown = cli(&server, &key, &["pool", "show", "sec"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains("secret:     db (also in the start task's environment)"),
        "{shown}"
    );
    assert!(!shown.contains(&first));

    let nodes = open_tempdir();
    let root = nodes.path().join("sec");
    let token = join_token(&client, "sec").await;
    let _agents = start_agents(&server, "sec", &token, &[&root], 1);
    nodes_ready(&client, &PoolId::new("sec").unwrap(), 1).await;
    create_job(&client, "sec-j", "sec").await;
    run(&client, "sec", "reads", "cat $LOTE_SECRETS_DIR/db").await;
    assert_eq!(stdout_of(&root, "sec", "reads"), first);
    assert_eq!(
        std::fs::read_to_string(root.join("shared/from-env")).unwrap(),
        first
    );

    if lote::agent::user::is_root() {
        // Another pool's task on the same machine cannot read it.
        let other_root = nodes.path().join("other");
        let _other = pool_with(
            &server,
            &client,
            "other",
            TaskSettings::default(),
            None,
            &other_root,
        )
        .await;
        let line = format!("cat {}/secrets/db", root.display());
        let stolen = run(&client, "other", "steal", &line).await;
        assert!(!stolen.last_result.unwrap().succeeded());
        assert!(!stdout_of(&other_root, "other", "steal").contains(&first));
    }

    // Rotated: the node has the new value within seconds.
    let rotate_arg = format!("db=@{}", second_file.display());
    let out = cli(
        &server,
        &key,
        &["pool", "secret", "set", "sec", &rotate_arg],
    );
    assert!(out.status.success(), "{out:?}");
    let on_node = root.join("secrets/db");
    eventually(
        Duration::from_secs(10),
        "the new value on the node",
        || async {
            match std::fs::read_to_string(&on_node) {
                Ok(v) if v == second => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    run(&client, "sec", "reads-again", "cat $LOTE_SECRETS_DIR/db").await;
    assert_eq!(stdout_of(&root, "sec", "reads-again"), second);
    let out = cli(&server, &key, &["pool", "secret", "remove", "sec", "db"]);
    assert!(out.status.success(), "{out:?}");
    eventually(
        Duration::from_secs(10),
        "the secret gone from the node",
        || async {
            match on_node.exists() {
                true => Err("still there".to_string()),
                false => Ok(()),
            }
        },
    )
    .await;

    // Nowhere in clear: not in the data directory's files, not in what the
    // audit and replay print, not in the server's log.
    let data_dir = server.data_dir.clone();
    let mut server = server;
    assert!(server.terminate().success());
    // The search reads the log's files: the sealed values are there.
    assert!(!found_in_files(&data_dir, "sealed:v1:").is_empty());
    for value in [&first, &second] {
        let hits = found_in_files(&data_dir, value);
        assert!(hits.is_empty(), "found in {hits:?}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(!log.is_empty(), "the server logged nothing at debug");
        assert!(!log.contains(value.as_str()), "in the server's log");
    }
    let replay = std::process::Command::new(lote_bin())
        .args(["replay", "--json", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let audit = std::process::Command::new(lote_bin())
        .args(["audit", "--data-dir"])
        .arg(&data_dir)
        .arg("pool/acme/sec")
        .output()
        .unwrap();
    assert!(audit.status.success(), "{audit:?}");
    let audit_text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit_text.contains("PoolSecretSet"), "{audit_text}");
    assert!(audit_text.contains("PoolSecretRemoved"), "{audit_text}");
    for value in [&first, &second] {
        assert!(!String::from_utf8_lossy(&replay.stdout).contains(value.as_str()));
        assert!(!audit_text.contains(value.as_str()));
    }
}
