//! Jobs that really run: the server binary, agent processes that join a
//! remote pool with its token, tasks as real processes.

mod compute_support;
mod server_support;

use std::path::Path;
use std::time::{Duration, Instant};

use compute_support::*;
use lote::api::{Request, Response};
use lote::domain::pool::{NodeProvider, SchedulingPolicy};
use lote::domain::spec::CommandLine;
use lote::domain::task::{FailureCategory, TaskSpec, TaskStatus};
use lote::types::{JobId, PoolId, TaskId};
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_agents_run_tasks_with_retries_launch_failures_and_timeouts() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "farm", 2, SchedulingPolicy::Spread).await;
    create_job(&client, "j", "farm").await;
    let nodes = open_tempdir();
    let runs = open_tempdir();
    let roots = [nodes.path().join("n0"), nodes.path().join("n1")];
    let _agents = start_agents(&server, "farm", &token, &[&roots[0], &roots[1]], 2);
    // Both nodes up before the work comes: a node that registers late
    // could find every task already placed on the other (spread or not).
    nodes_ready(&client, &PoolId::new("farm").unwrap(), 2).await;

    let mut tasks: Vec<TaskSpec> = (0..12)
        .map(|i| shell(&format!("ok-{i}"), "echo \"hello from $LOTE_TASK_ID attempt $LOTE_TASK_ATTEMPT\"; test -d \"$LOTE_NODE_SHARED_DIR\""))
        .collect();
    for retries in [0u32, 1, 3] {
        let mut t = shell(
            &format!("fail-{retries}"),
            &format!(
                "echo run >> {}/fail-{retries}; exit 3",
                runs.path().display()
            ),
        );
        t.constraints.max_task_retries = Some(retries);
        tasks.push(t);
    }
    let mut missing = TaskSpec::simple(
        TaskId::new("missing").unwrap(),
        CommandLine::Argv(vec!["/nonexistent/program".into()]),
    );
    missing.constraints.max_task_retries = Some(3);
    tasks.push(missing);
    let mut slow = shell(
        "slow",
        &format!(
            "sleep 300 & echo $! > {dir}/slow-child.pid; sh -c 'sleep 300' & echo $! > {dir}/slow-grandchild.pid; sleep 300",
            dir = runs.path().display()
        ),
    );
    slow.constraints.max_wall_clock_secs = Some(1);
    tasks.push(slow);
    add(&client, "j", tasks).await;

    wait_job(&client, "j", Duration::from_secs(60)).await;

    for i in 0..12 {
        let t = task(&client, "j", &format!("ok-{i}")).await;
        assert_eq!(t.state.status, TaskStatus::Completed);
        assert!(
            t.state.last_result.as_ref().unwrap().succeeded(),
            "{:?}",
            t.state.last_result
        );
    }
    for (retries, expected_runs) in [(0, 1), (1, 2), (3, 4)] {
        let runs = std::fs::read_to_string(runs.path().join(format!("fail-{retries}"))).unwrap();
        assert_eq!(runs.lines().count(), expected_runs, "retry count {retries}");
        let t = task(&client, "j", &format!("fail-{retries}")).await;
        let result = t.state.last_result.unwrap();
        assert_eq!(result.exit_code, Some(3));
        assert_eq!(result.failure.unwrap().0, FailureCategory::NonZeroExit);
    }
    let t = task(&client, "j", "missing").await;
    assert_eq!(t.state.attempt, 1, "a launch failure is not retried");
    assert_eq!(
        t.state.last_result.unwrap().failure.unwrap().0,
        FailureCategory::LaunchFailure
    );
    let t = task(&client, "j", "slow").await;
    assert_eq!(
        t.state.last_result.unwrap().failure.unwrap().0,
        FailureCategory::Timeout
    );
    // Its children in the background died with it.
    for pidfile in ["slow-child.pid", "slow-grandchild.pid"] {
        let pid = std::fs::read_to_string(runs.path().join(pidfile)).unwrap();
        let alive = Path::new(&format!("/proc/{}", pid.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "{pidfile} {} survived", pid.trim());
    }

    // Outputs are in each attempt's directory on the node that ran it,
    // and both nodes got work (spread).
    let mut outputs = 0;
    for root in &roots {
        let mut here = 0;
        for i in 0..12 {
            let out = root.join(format!("tasks/j/ok-{i}/1/stdout.txt"));
            if let Ok(text) = std::fs::read_to_string(out) {
                assert_eq!(text.trim(), format!("hello from ok-{i} attempt 1"));
                here += 1;
            }
        }
        assert!(here > 0, "{} ran nothing", root.display());
        outputs += here;
    }
    assert_eq!(outputs, 12);

    // The log of all this replays without a mismatch.
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_fills_one_node_before_the_next_and_oversized_tasks_are_refused() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "packed", 3, SchedulingPolicy::Pack).await;
    create_job(&client, "p", "packed").await;
    // A task needing 4 slots on 3-slot nodes can never run.
    let mut big = shell("big", "true");
    big.required_slots = 4;
    let err = client
        .call(&Request::AddTasks {
            job: JobId::new("p").unwrap(),
            tasks: vec![big],
            request_id: None,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("slots"), "{err}");

    let nodes = open_tempdir();
    let roots = [nodes.path().join("a"), nodes.path().join("b")];
    let _agents = start_agents(&server, "packed", &token, &[&roots[0], &roots[1]], 3);
    // Wait for both nodes to be up before adding work.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = list_nodes(&client, "packed").await;
        if n.len() == 2 && n.iter().all(|n| format!("{:?}", n.state.state) == "Idle") {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not idle: {n:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Three tasks that hold their slot for a while: pack puts all three on
    // one node.
    let tasks = (0..3).map(|i| shell(&format!("t{i}"), "sleep 1")).collect();
    add(&client, "p", tasks).await;
    wait_job(&client, "p", Duration::from_secs(30)).await;
    let mut placed = std::collections::BTreeSet::new();
    for i in 0..3 {
        let t = task(&client, "p", &format!("t{i}")).await;
        placed.insert(t.state.placement.unwrap().node.to_string());
    }
    assert_eq!(placed.len(), 1, "pack used {placed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_pool_starts_its_agents_runs_tasks_and_deleting_it_stops_everything() {
    // The nodes live apart from the log (--nodes-dir).
    let nodes = open_tempdir();
    let server = ServerProcess::start(&["--nodes-dir", nodes.path().to_str().unwrap()]);
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("local").nodes(2).slots(2).without_waiting().await;
    env.job("j").on("local").await;
    let marks = open_tempdir();
    let mut tasks: Vec<TaskSpec> = (0..20)
        .map(|i| shell(&format!("t{i}"), "sha256sum /etc/hostname > digest.txt"))
        .collect();
    tasks.push(shell(
        "long",
        &format!("echo $$ > {}/long.pid; sleep 300", marks.path().display()),
    ));
    add(&client, "j", tasks).await;

    // The 20 short ones finish; the long one runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = show_job(&client, "j").await;
        let done = j.state.tasks_added - j.state.unfinished();
        if done == 20 && marks.path().join("long.pid").exists() {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", j.state.task_counts);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!server.data_dir.join("nodes").exists());
    let pool_dir = nodes.path().join("acme/local");
    let mut digests = 0;
    let mut agent_pids = Vec::new();
    for node in ["node-0", "node-1"] {
        let root = pool_dir.join(node);
        agent_pids.push(std::fs::read_to_string(root.join("agent.pid")).unwrap());
        for i in 0..20 {
            if root.join(format!("tasks/j/t{i}/1/wd/digest.txt")).exists() {
                digests += 1;
            }
        }
    }
    assert_eq!(digests, 20);
    let long_pid = std::fs::read_to_string(marks.path().join("long.pid")).unwrap();
    assert!(alive(&long_pid));

    client
        .call(&Request::DeletePool {
            pool: PoolId::new("local").unwrap(),
            // Its job still runs the long task: deleting ends it.
            force: true,
        })
        .await
        .unwrap();
    for pid in agent_pids.iter().chain([&long_pid]) {
        assert!(!alive(pid), "process {} survived the pool", pid.trim());
    }
    assert!(!pool_dir.join("node-0").exists() && !pool_dir.join("node-1").exists());
    assert!(list_pools(&client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_task_keeps_its_node_out_of_placement() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    for (pool, line) in [
        ("good", "echo ready > \"$LOTE_NODE_SHARED_DIR/marker\""),
        (
            "bad",
            "echo tried >> \"$LOTE_NODE_SHARED_DIR/tries\"; exit 7",
        ),
    ] {
        let st = start_task(line, true, 1);
        create_pool(&client, pool, NodeProvider::Remote, 0, 1, Some(st)).await;
        create_job(&client, pool, pool).await;
        add(
            &client,
            pool,
            vec![shell("t", "cat \"$LOTE_NODE_SHARED_DIR/marker\"")],
        )
        .await;
    }
    let roots = open_tempdir();
    let good_root = roots.path().join("good");
    let bad_root = roots.path().join("bad");
    let _good = start_agents(
        &server,
        "good",
        &join_token(&client, "good").await,
        &[&good_root],
        1,
    );
    let _bad = start_agents(
        &server,
        "bad",
        &join_token(&client, "bad").await,
        &[&bad_root],
        1,
    );

    // The good pool's node runs its start task, then the task.
    wait_job(&client, "good", Duration::from_secs(30)).await;
    let t = task(&client, "good", "t").await;
    assert!(t.state.last_result.unwrap().succeeded());

    // The bad pool's node tried twice (1 retry), failed, and got nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = list_nodes(&client, "bad").await;
        if nodes.len() == 1 && format!("{:?}", nodes[0].state.state) == "StartTaskFailed" {
            break;
        }
        assert!(Instant::now() < deadline, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tries = std::fs::read_to_string(bad_root.join("shared/tries")).unwrap();
    assert_eq!(tries.lines().count(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = task(&client, "bad", "t").await;
    assert_eq!(
        t.state.status,
        TaskStatus::Active,
        "placed on a node whose start task failed"
    );
}

/// Nothing of the server's environment reaches a local agent or a task
/// (a server started with a secret in its environment, as `LOTE_ADMIN_KEY`
/// would be): a task gets the base PATH and LANG, HOME at its working
/// directory, the `LOTE_*` variables and its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_local_agents_get_none_of_the_servers_environment() {
    const SECRET: &str = "lote-test-secret-that-must-not-leak";
    let temp = open_tempdir();
    let mut cmd = std::process::Command::new(lote_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path())
        .env_remove("LOTE_ADMIN_KEY")
        .env("LOTE_LOG", "warn")
        .env("LOTE_TEST_SERVER_SECRET", SECRET)
        .stderr(std::process::Stdio::piped());
    let server = ServerProcess::from_command(cmd, temp.path());
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("clean").await;
    let mut task = shell("t", "env");
    task.env = vec![lote::domain::EnvVar {
        name: "MINE".into(),
        value: "yes".into(),
    }];
    env.job("j").on("clean").tasks([task]).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    let lote::api::Response::TaskOutput { chunk, .. } = client
        .call(&Request::ReadTaskOutput {
            job: JobId::new("j").unwrap(),
            task: TaskId::new("t").unwrap(),
            attempt: 0,
            stream: lote::api::OutputStream::Stdout,
            offset: 0,
            max_bytes: 1 << 20,
        })
        .await
        .unwrap()
    else {
        panic!("output expected")
    };
    let printed = String::from_utf8(chunk.data).unwrap();
    assert!(!printed.contains(SECRET), "{printed}");
    let mut names: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        // What the shell adds of its own.
        .filter(|n| !matches!(*n, "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "LOTE_ACCOUNT",
            "LOTE_ATTEMPT_TAG",
            "LOTE_JOB_ID",
            "LOTE_NODE_ID",
            "LOTE_NODE_ROOT_DIR",
            "LOTE_NODE_SHARED_DIR",
            "LOTE_NODE_STARTUP_DIR",
            "LOTE_POOL_ID",
            "LOTE_SECRETS_DIR",
            "LOTE_TASK_ATTEMPT",
            "LOTE_TASK_DIR",
            "LOTE_TASK_ID",
            "LOTE_TASK_WORKING_DIR",
            "MINE",
            "PATH"
        ],
        "{printed}"
    );
    let value = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(value("HOME"), value("LOTE_TASK_WORKING_DIR"));
    // The node's directories, as the agent lays them out.
    let root = value("LOTE_NODE_ROOT_DIR");
    assert!(!root.is_empty());
    assert_eq!(value("LOTE_TASK_DIR"), format!("{root}/tasks/j/t/1"));
    assert_eq!(
        value("LOTE_TASK_WORKING_DIR"),
        format!("{root}/tasks/j/t/1/wd")
    );
    assert_eq!(value("LOTE_NODE_SHARED_DIR"), format!("{root}/shared"));
    assert_eq!(value("LOTE_NODE_STARTUP_DIR"), format!("{root}/starttask"));
    assert_eq!(value("LOTE_SECRETS_DIR"), format!("{root}/secrets"));
    assert_eq!(
        value("PATH"),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // The local agent itself was started without it.
    let nodes = temp.path().join("nodes/acme/clean");
    let node = std::fs::read_dir(&nodes).unwrap().next().unwrap().unwrap();
    let pid = std::fs::read_to_string(node.path().join("agent.pid")).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains(SECRET), "{environ}");
    assert!(!environ.contains("LOTE_TEST_SERVER_SECRET"), "{environ}");
    // The server keeps transparent huge pages off for itself; its agent,
    // and so its tasks, have the machine's setting back.
    let thp = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()))
    };
    match thp(&server.pid().to_string()) {
        None => eprintln!("skipped: this kernel does not report THP_enabled"),
        Some(server_thp) => {
            assert_eq!(server_thp, "0", "the server's transparent huge pages");
            assert_eq!(thp(pid.trim()).as_deref(), Some("1"), "the agent's");
        }
    }
}

/// A remote agent says what happened when the server refuses it: a wrong
/// join token, or a node removed (whose credential the server no longer
/// accepts), not "bad signature".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_says_why() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "far", 1, SchedulingPolicy::Pack).await;
    let root = open_tempdir();
    let agent = |token: &str| {
        std::process::Command::new(lote_bin())
            .args(["agent", "--server", &server.addr])
            .args(["--pool-account", "acme", "--pool", "far"])
            .args(["--join-token", token, "--slots", "1", "--name", "a"])
            .arg("--root")
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wrong = agent("not-the-token").wait_with_output().unwrap();
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("refused the join token of pool acme/far"),
        "{said}"
    );

    let joined = agent(&token);
    let nodes = nodes_ready(&client, &PoolId::new("far").unwrap(), 1).await;
    let node = nodes[0].state.id.clone().unwrap();
    client
        .call(&Request::RemoveNode {
            pool: PoolId::new("far").unwrap(),
            node,
            deallocation: lote::domain::pool::Deallocation::Requeue,
        })
        .await
        .unwrap();
    let removed = tokio::task::spawn_blocking(move || joined.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!removed.status.success());
    let said = String::from_utf8_lossy(&removed.stderr);
    assert!(
        said.contains("no longer accepts this node's credential"),
        "{said}"
    );
}

/// Tasks run as their pool's unprivileged user: a corpus of attempts to
/// read the server's keys and log, another node's credential, the agent's
/// log, another tenant's running task, or to write outside their own
/// directories, each of which must fail; their own working directory and
/// the node's shared directory stay theirs. Needs root (an agent that is
/// not root runs tasks as itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_read_the_servers_keys_other_nodes_or_other_tenants() {
    if !lote::agent::user::is_root() {
        eprintln!("skipped: tasks switch users only under an agent running as root");
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let (other, _, _) = server.account("other").await;
    // Another tenant's task, running, with a file of its own.
    Env::new(&other).pool("q").nodes(1).slots(1).await;
    Env::new(&other)
        .job("theirs")
        .on("q")
        .tasks([shell("secret", "echo othersecret > mine.txt; sleep 120")])
        .await;
    eventually(Duration::from_secs(30), "their task running", || async {
        match task(&other, "theirs", "secret").await.state.status {
            TaskStatus::Running => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    Env::new(&client).pool("p").nodes(2).slots(1).await;
    let data = server.data_dir.display().to_string();
    let nodes = format!("{data}/nodes");
    let theirs = format!("{nodes}/other/q/node-0");
    let reads = [
        ("admin-key", format!("{data}/admin.key")),
        ("server-secret", format!("{data}/server.secret")),
        ("log-current", format!("{data}/CURRENT")),
        ("blob-index", format!("{data}/blobs/index/CURRENT")),
        (
            "other-node-credential",
            format!("{nodes}/acme/p/node-1/node.toml"),
        ),
        (
            "own-node-credential",
            format!("{nodes}/acme/p/node-0/node.toml"),
        ),
        ("own-agent-log", format!("{nodes}/acme/p/node-0/agent.log")),
        ("other-tenant-credential", format!("{theirs}/node.toml")),
        (
            "other-tenant-task-file",
            format!("{theirs}/tasks/theirs/secret/1/wd/mine.txt"),
        ),
    ];
    let lists = [
        ("list-data-dir", data.clone()),
        ("list-nodes", nodes.clone()),
        ("list-other-tenant-tasks", format!("{theirs}/tasks")),
        ("list-other-tenant-job", format!("{theirs}/tasks/theirs")),
        (
            "list-other-tenant-attempt",
            format!("{theirs}/tasks/theirs/secret/1"),
        ),
        ("list-cache", format!("{nodes}/acme/p/node-0/cache")),
    ];
    let writes = [
        ("write-data-dir", format!("{data}/pwned")),
        ("write-node-root", format!("{nodes}/acme/p/node-0/pwned")),
        ("write-etc", "/etc/lote-pwned".to_string()),
        ("write-other-shared", format!("{theirs}/shared/pwned")),
    ];
    let mut script = String::from("id -u; ");
    for (name, path) in &reads {
        script += &format!("cat '{path}' >/dev/null 2>&1 && echo LEAK:{name}; ");
    }
    for (name, path) in &lists {
        script += &format!("ls '{path}' >/dev/null 2>&1 && echo LEAK:{name}; ");
    }
    for (name, path) in &writes {
        script += &format!("touch '{path}' 2>/dev/null && echo LEAK:{name}; ");
    }
    script += "echo mine > own.txt && echo CAN:own; ";
    script += "echo ours > \"$LOTE_NODE_SHARED_DIR/ours\" && echo CAN:shared; ";
    script += "cat \"$LOTE_TASK_WORKING_DIR/own.txt\" >/dev/null && echo CAN:own-by-path";
    Env::new(&client)
        .job("probe")
        .on("p")
        .tasks([shell("attack", &script)])
        .await;
    wait_job(&client, "probe", Duration::from_secs(60)).await;
    let t = task(&client, "probe", "attack").await.state;
    let node = t.placement.as_ref().map(|p| p.node.to_string()).unwrap();
    let out = std::fs::read_to_string(format!(
        "{nodes}/acme/p/{node}/tasks/probe/attack/1/stdout.txt"
    ))
    .unwrap();
    let leaks: Vec<&str> = out.lines().filter(|l| l.starts_with("LEAK:")).collect();
    assert!(leaks.is_empty(), "a task got through: {leaks:?}\n{out}");
    for can in ["CAN:own", "CAN:shared", "CAN:own-by-path"] {
        assert!(out.lines().any(|l| l == can), "{can} missing:\n{out}");
    }
    let uid: u32 = out.lines().next().unwrap().trim().parse().unwrap();
    let range = lote::agent::user::TASK_UID_BASE
        ..lote::agent::user::TASK_UID_BASE + lote::agent::user::TASK_UID_SPAN;
    assert!(range.contains(&uid), "the task ran as uid {uid}");
    assert!(!Path::new("/etc/lote-pwned").exists());
}

/// A fork bomb stops at the pool user's process limit: the agent, the
/// machine and the node's next task are untouched, and everything the
/// bomb started dies with its attempt. Needs root (the limit comes with
/// the switch to the pool's user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pool_users_process_limit() {
    if !lote::agent::user::is_root() {
        eprintln!("skipped: the process limit comes with the pool's user, which needs root");
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "bomb", 1, SchedulingPolicy::Pack).await;
    let nodes = open_tempdir();
    let root = nodes.path().join("n0");
    let _agents = start_agents_with(
        &server,
        "bomb",
        &token,
        &[&root],
        1,
        &["--task-processes-max", "64"],
    );
    nodes_ready(&client, &PoolId::new("bomb").unwrap(), 1).await;
    create_job(&client, "j", "bomb").await;
    let mut bomb = shell(
        "bomb",
        "i=0; while [ $i -lt 500 ]; do sleep 60 & i=$((i+1)); done; echo started; wait",
    );
    bomb.constraints.max_wall_clock_secs = Some(5);
    add(&client, "j", vec![bomb, shell("after", "echo fine")]).await;
    wait_job(&client, "j", Duration::from_secs(60)).await;
    let user = lote::agent::user::pool_user(
        &lote::types::AccountName::new("acme").unwrap(),
        &PoolId::new("bomb").unwrap(),
    );
    let err = std::fs::read_to_string(root.join("tasks/j/bomb/1/stderr.txt")).unwrap();
    assert!(
        err.to_lowercase().contains("fork"),
        "the limit was not hit:\n{err}"
    );
    let after = task(&client, "j", "after").await.state;
    assert!(
        after.last_result.unwrap().succeeded(),
        "the node's next task failed"
    );
    // Nothing of the bomb's is left running as the pool's user.
    let left = eventually(
        Duration::from_secs(10),
        "the bomb's processes gone",
        || async {
            let mut n = 0;
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let status =
                    std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
                n += usize::from(uid == Some(user.uid));
            }
            if n == 0 {
                Ok(n)
            } else {
                Err(format!("{n} processes left"))
            }
        },
    )
    .await;
    assert_eq!(left, 0);
}

/// Skips a test that needs root and cgroups, saying which is missing.
fn cgroups_here() -> bool {
    if !lote::agent::user::is_root() {
        eprintln!("skipped: attempt cgroups need an agent running as root");
        return false;
    }
    if let Err(why) = lote::agent::cgroup::available() {
        eprintln!("skipped: no cgroups for attempts here: {why}");
        return false;
    }
    true
}

/// The cgroup files of the group a task's `cat /proc/self/cgroup` named
/// for `controller`, v1 or v2.
fn group_file(cgroups: &str, controller: &str, file: &str) -> std::path::PathBuf {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let line = cgroups
        .lines()
        .find(|l| {
            let list = l.split(':').nth(1).unwrap_or("");
            if unified {
                list.is_empty()
            } else {
                list.split(',').any(|c| c == controller)
            }
        })
        .unwrap_or_else(|| panic!("no {controller} line in:\n{cgroups}"));
    let path = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
    let mount = if unified {
        "/sys/fs/cgroup".to_string()
    } else {
        format!("/sys/fs/cgroup/{controller}")
    };
    Path::new(&mount).join(path).join(file)
}

fn pid_alive(pid: u32) -> bool {
    alive(&pid.to_string())
}

/// Each attempt runs in a cgroup of its own with the node's limits: a
/// memory hog is killed there and reported as out of memory, a process
/// that leaves the attempt's session with a cleared environment dies
/// at the attempt's end, the node's next task runs, and the groups are
/// gone when the agent stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempts_cgroup_holds_its_memory_cpu_share_and_escaped_processes() {
    if !cgroups_here() {
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "caged", 1, SchedulingPolicy::Pack).await;
    let nodes = open_tempdir();
    let root = nodes.path().join("n0");
    let agents = start_agents_with(
        &server,
        "caged",
        &token,
        &[&root],
        1,
        &[
            "--task-memory-max",
            "64",
            "--task-cpu-weight",
            "250",
            "--task-processes-max",
            "77",
        ],
    );
    nodes_ready(&client, &PoolId::new("caged").unwrap(), 1).await;
    create_job(&client, "j", "caged").await;
    // One at a time, so each runs alone in the node's one slot.
    for (id, line) in [
        ("where", "cat /proc/self/cgroup"),
        // tail keeps a line it has not seen the end of: 400 MB of zeros.
        ("hog", "head -c 400000000 /dev/zero | tail -n 1 > /dev/null"),
        (
            "escape",
            "env -i setsid sh -c 'echo $$ > escaped.pid; exec sleep 300' & sleep 1; echo left",
        ),
        ("after", "echo fine"),
    ] {
        add(&client, "j", vec![shell(id, line)]).await;
        eventually(Duration::from_secs(60), "the task done", || async {
            let t = task(&client, "j", id).await.state;
            match t.status {
                TaskStatus::Completed => Ok(()),
                other => Err(format!("{id} is {other:?}")),
            }
        })
        .await;
    }

    let cgroups = std::fs::read_to_string(root.join("tasks/j/where/1/stdout.txt")).unwrap();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (memory, pids, cpu) = if unified {
        ("memory.max", "pids.max", "cpu.weight")
    } else {
        ("memory.limit_in_bytes", "pids.max", "cpu.shares")
    };
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(group_file(&cgroups, controller, file))
            .unwrap_or_else(|e| panic!("{controller}/{file}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", memory), (64u64 << 20).to_string());
    assert_eq!(read("pids", pids), "77");
    let weight = read("cpu", cpu);
    assert!(
        weight == "250" || weight == (250 * 1024 / 100).to_string(),
        "cpu weight 250 set as {weight}"
    );

    let hog = task(&client, "j", "hog").await.state;
    let failure = hog.last_result.unwrap().failure.expect("the hog failed");
    assert_eq!(failure.0, FailureCategory::OutOfMemory, "{failure:?}");
    assert!(failure.1.contains("64 MiB"), "{failure:?}");

    let escape = task(&client, "j", "escape").await.state;
    assert!(escape.last_result.unwrap().succeeded());
    let escaped: u32 = std::fs::read_to_string(root.join("tasks/j/escape/1/wd/escaped.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the escaped process dead",
        || async {
            match pid_alive(escaped) {
                true => Err(format!("pid {escaped} still runs")),
                false => Ok(()),
            }
        },
    )
    .await;
    let after = task(&client, "j", "after").await.state;
    assert!(after.last_result.unwrap().succeeded());

    // The agent gone, its watchdog removes the node's groups.
    let group = group_file(&cgroups, "pids", "");
    assert!(group.exists(), "{}", group.display());
    drop(agents);
    eventually(Duration::from_secs(5), "the groups removed", || async {
        match group.parent().unwrap().exists() {
            true => Err(format!("{} is still there", group.display())),
            false => Ok(()),
        }
    })
    .await;
}

/// An agent killed with its watchdog (nothing left to sweep for it)
/// leaves its attempt's processes behind; the next agent on the same
/// root kills them before it runs anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_kills_what_its_previous_life_left_running() {
    if !cgroups_here() {
        return;
    }
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "again", 1, SchedulingPolicy::Pack).await;
    let nodes = open_tempdir();
    let root = nodes.path().join("n0");
    let first = start_agents_with(&server, "again", &token, &[&root], 1, &[]);
    nodes_ready(&client, &PoolId::new("again").unwrap(), 1).await;
    create_job(&client, "j", "again").await;
    add(
        &client,
        "j",
        vec![shell(
            "long",
            "env -i setsid sh -c 'echo $$ > left.pid; exec sleep 300' & exec sleep 300",
        )],
    )
    .await;
    let left_file = root.join("tasks/j/long/1/wd/left.pid");
    let left = eventually(Duration::from_secs(30), "the task running", || async {
        std::fs::read_to_string(&left_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .ok_or_else(|| "no pid yet".to_string())
    })
    .await;
    // The agent and its watchdog (the agent's child that is no task)
    // killed at once, as a machine's OOM killer or an operator might.
    let agent = first.pids()[0];
    let watchdogs: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                == Some(agent)
                && std::fs::read_link(format!("/proc/{pid}/exe")).ok()
                    == std::fs::read_link(format!("/proc/{agent}/exe")).ok()
        })
        .collect();
    assert_eq!(watchdogs.len(), 1, "one watchdog: {watchdogs:?}");
    signal(watchdogs[0], libc::SIGKILL);
    signal(agent, libc::SIGKILL);
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pid_alive(left),
        "the leftover should outlive a dead watchdog"
    );

    let _second = start_agents_with(&server, "again", &token, &[&root], 1, &[]);
    eventually(
        Duration::from_secs(10),
        "the leftover killed by the next agent",
        || async {
            match pid_alive(left) {
                true => Err(format!("pid {left} still runs")),
                false => Ok(()),
            }
        },
    )
    .await;
}

/// `WaitJob` (what `lote job wait` sends) is answered when the job's last
/// task ends, not on a poll: a short wait comes back at its deadline with
/// the task unfinished; a long one comes back with the job done, long
/// before its deadline; another account's job is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_wait_is_answered_when_the_job_ends() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("local").nodes(1).slots(1).await;
    env.job("j").on("local").await;
    let gate = open_tempdir();
    let go = gate.path().join("go");
    let line = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    add(&client, "j", vec![shell("t", &line)]).await;
    let wait = |wait_ms| Request::WaitJob {
        job: JobId::new("j").unwrap(),
        wait_ms,
    };
    let Response::Job(job) = client.call(&wait(300)).await.unwrap() else {
        panic!("a job")
    };
    assert_eq!(job.state.unfinished(), 1, "{:?}", job.state.task_counts);

    let asked = Instant::now();
    let open_gate = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(&go, b"").unwrap();
    };
    let long_wait = wait(lote::api::WAIT_JOB_MS_MAX);
    let (answer, ()) = tokio::join!(client.call(&long_wait), open_gate);
    let Response::Job(job) = answer.unwrap() else {
        panic!("a job")
    };
    assert_eq!(job.state.unfinished(), 0, "{:?}", job.state.task_counts);
    // Its deadline was 20 s: an answer well before it came from the end.
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "answered after {:?}",
        asked.elapsed()
    );

    let (other, _, _) = server.account("other").await;
    let refused = other.call(&wait(100)).await.unwrap_err();
    assert_eq!(
        refused.api().and_then(|a| a.rejection),
        Some(lote::domain::RejectionCode::JobNotFound),
        "{refused}"
    );
}
