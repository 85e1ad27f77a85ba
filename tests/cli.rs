//! The `lote` CLI against a real server: output formats, exit codes,
//! credentials from flags, environment and profiles, errors with hints.

mod server_support;

use std::process::{Command, Output};

use serde_json::Value;
use server_support::*;

struct Cli<'a> {
    server: &'a ServerProcess,
    env: Vec<(String, String)>,
    config_home: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(server: &'a ServerProcess) -> Self {
        Cli {
            server,
            env: vec![("LOTE_SERVER".into(), server.addr.clone())],
            config_home: open_tempdir(),
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.env.push((name.into(), value.into()));
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(lote_bin());
        cmd.args(args)
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env_remove("LOTE_ACCOUNT")
            .env_remove("LOTE_KEY")
            .env_remove("LOTE_ADMIN_KEY")
            .env_remove("LOTE_ADMIN_KEY_FILE")
            .env_remove("LOTE_PROFILE")
            .env_remove("LOTE_OUTPUT");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Runs with `--output json`; returns the exit code and the one value.
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON value ({e}): {stdout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), value)
    }

    fn admin_key_file(&self) -> String {
        self.server
            .data_dir
            .join("admin.key")
            .to_string_lossy()
            .into_owned()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn accounts_pools_jobs_tasks_and_events_through_the_cli() {
    let server = ServerProcess::start(&[]);
    let mut cli = Cli::new(&server);
    let key_file = cli.admin_key_file();

    // Account management needs the admin key; without it, a usage error
    // that says where the key is.
    let out = cli.run(&["account", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("admin.key"), "{}", text(&out));

    let (code, keys) = cli.json(&["account", "create", "acme", "--admin-key-file", &key_file]);
    assert_eq!(code, 0, "{keys}");
    let primary = keys["primary"].as_str().unwrap().to_string();
    let secondary = keys["secondary"].as_str().unwrap().to_string();
    assert_eq!(primary.len(), 64);
    let (_, list) = cli.json(&["account", "list", "--admin-key-file", &key_file]);
    assert_eq!(list[0]["name"], "acme");
    assert_eq!(list[0]["status"], "active");

    // No account credentials: usage error naming the flags.
    let out = cli.run(&["pool", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--account"), "{}", text(&out));

    cli.set("LOTE_ACCOUNT", "acme");
    cli.set("LOTE_KEY", &primary);
    let out = cli.run(&["pool", "create", "render", "--nodes", "2", "--slots", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("created pool/acme/render"));
    let (code, pool) = cli.json(&["pool", "show", "render"]);
    assert_eq!(code, 0);
    assert_eq!(pool["target_nodes"], 2);
    assert_eq!(pool["spec"]["node_size"]["task_slots"], 4);
    assert_eq!(
        pool["spec"]["account"], "acme",
        "the server set the account"
    );

    // Not found: exit 1, a JSON error object with the code and a hint.
    // A start task from the command line: run by each node as it joins.
    let (code, created) = cli.json(&[
        "pool",
        "create",
        "prepared",
        "--start-task",
        "echo ready > \"$LOTE_NODE_SHARED_DIR/../started\"",
        "--start-task-retries",
        "2",
        "--start-task-env",
        "STAGE=one",
    ]);
    assert_eq!(code, 0, "{created}");
    let (_, pool) = cli.json(&["pool", "show", "prepared"]);
    let start = &pool["spec"]["start_task"];
    assert_eq!(start["retry_count_max"], 2, "{pool}");
    assert_eq!(start["wait_for_success"], true, "{pool}");
    assert_eq!(start["env"][0]["name"], "STAGE", "{pool}");
    assert!(
        start["command_line"]["shell"]
            .as_str()
            .unwrap_or_default()
            .starts_with("echo ready"),
        "{pool}"
    );
    // Its options without it are a usage error.
    let out = cli.run(&["pool", "create", "half", "--start-task-retries", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // The pool's update changes it (nodes take it as they join or reboot),
    // or removes it; an update that names nothing, or both, is a usage
    // error.
    let (code, out) = cli.json(&[
        "pool",
        "update",
        "prepared",
        "--start-task",
        "echo v2",
        "--start-task-no-wait",
    ]);
    assert_eq!(code, 0, "{out}");
    let (_, pool) = cli.json(&["pool", "show", "prepared"]);
    let start = &pool["spec"]["start_task"];
    assert_eq!(start["command_line"]["shell"], "echo v2", "{pool}");
    assert_eq!(start["wait_for_success"], false, "{pool}");
    let (code, out) = cli.json(&["pool", "update", "prepared", "--no-start-task"]);
    assert_eq!(code, 0, "{out}");
    let (_, pool) = cli.json(&["pool", "show", "prepared"]);
    assert!(pool["spec"]["start_task"].is_null(), "{pool}");
    for args in [
        &["pool", "update", "prepared"][..],
        &[
            "pool",
            "update",
            "prepared",
            "--start-task",
            "x",
            "--no-start-task",
        ],
        &["pool", "update", "prepared", "--start-task-retries", "1"],
    ] {
        let out = cli.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let (code, err) = cli.json(&["pool", "update", "nope", "--no-apps"]);
    assert_eq!(code, 1);
    assert_eq!(err["error"]["name"], "PoolNotFound", "{err}");
    // A flag nothing would act on is refused, not stored and ignored.
    let (code, err) = cli.json(&["pool", "create", "mpi", "--inter-node-communication"]);
    assert_eq!(code, 1);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("inter-node communication is not available yet"),
        "{err}"
    );
    // Output of a task of a job that does not exist names the job.
    let (code, err) = cli.json(&["task", "output", "no-such-job", "t1"]);
    assert_eq!(code, 1);
    assert_eq!(err["error"]["name"], "JobNotFound", "{err}");
    let (code, err) = cli.json(&["pool", "show", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(err["error"]["name"], "PoolNotFound");
    assert!(err["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("lote pool list"));
    let out = cli.run(&["pool", "show", "nope"]);
    assert!(
        text(&out).contains("hint: list pools with: lote pool list"),
        "{}",
        text(&out)
    );

    // Usage errors: exit 2.
    assert_eq!(cli.run(&["pool", "create"]).status.code(), Some(2));
    assert_eq!(
        cli.run(&["pool", "create", "bad/id"]).status.code(),
        Some(2)
    );

    let out = cli.run(&[
        "job",
        "create",
        "frames",
        "--pool",
        "render",
        "--priority",
        "-5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli.run(&["task", "add", "frames", "frame-0", "--", "echo", "hello"]);
    assert!(out.status.success(), "{}", text(&out));
    // Without an id the task gets a fresh one, shown in the reply.
    let out = cli.run(&[
        "--output",
        "json",
        "task",
        "add",
        "frames",
        "--",
        "echo",
        "anonymous",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The words after `--` are an argv, each word as given.
    assert_eq!(
        added["spec"]["command_line"]["argv"],
        serde_json::json!(["echo", "anonymous"])
    );
    let id = added["spec"]["id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("task-") && id.len() > 10, "{added}");
    // Another job, so that the counts of `frames` below stay as they are.
    let out = cli.run(&["job", "create", "quoting", "--pool", "render"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli.run(&[
        "--output",
        "json",
        "task",
        "add",
        "quoting",
        "quoted",
        "--",
        "sh",
        "-c",
        "env; id -u",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        added["spec"]["command_line"]["argv"],
        serde_json::json!(["sh", "-c", "env; id -u"])
    );
    // --command is the shell form; both at once is a usage error.
    let out = cli.run(&[
        "--output",
        "json",
        "task",
        "add",
        "quoting",
        "line",
        "--command",
        "echo a; echo b",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["spec"]["command_line"]["shell"], "echo a; echo b");
    // Everyday options are flags too.
    // (`--output json` before `--`: after it, it would be the task's.)
    let out = cli.run(&[
        "--output",
        "json",
        "task",
        "add",
        "quoting",
        "opts",
        "--env",
        "COLOR=blue",
        "--max-wall-clock-secs",
        "30",
        "--max-task-retries",
        "2",
        "--retention-secs",
        "60",
        "--slots",
        "2",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        added["spec"]["command_line"]["argv"],
        serde_json::json!(["true"])
    );
    assert_eq!(
        added["spec"]["env"],
        serde_json::json!([{"name": "COLOR", "value": "blue"}])
    );
    assert_eq!(
        added["spec"]["constraints"],
        serde_json::json!({"max_wall_clock_secs": 30, "max_task_retries": 2, "retention_secs": 60})
    );
    assert_eq!(added["spec"]["required_slots"], 2);
    // A file argument's syntax error is a usage error, before anything is sent.
    let out = cli.run(&[
        "task",
        "add",
        "quoting",
        "bad-input",
        "--input",
        "no-slash",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--input"), "{}", text(&out));
    // An empty range and a batch over the limit are refused.
    let out = cli.run(&[
        "task",
        "add-range",
        "quoting",
        "5",
        "1",
        "--command",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is empty"), "{}", text(&out));
    let out = cli.run(&[
        "task",
        "add-range",
        "quoting",
        "1",
        "2",
        "--command",
        "true",
        "--batch",
        "5000",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = cli.run(&[
        "task",
        "add",
        "quoting",
        "both",
        "--command",
        "true",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = cli.run(&[
        "task",
        "add-range",
        "frames",
        "1",
        "120",
        "--command",
        "render --frame {i}",
        "--batch",
        "50",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("added 120 task(s)"), "{}", text(&out));
    // The pool is local: its two agents run the tasks. `render` is no
    // program here, so those fail, and `job wait` says so with exit 1.
    let out = cli.run(&["job", "wait", "frames", "--timeout-secs", "60"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("120 task(s) failed"), "{}", text(&out));
    // The hint names the job, and the list shows why tasks failed.
    assert!(
        text(&out).contains("lote task list frames --state failed"),
        "{}",
        text(&out)
    );
    let (code, failed) = cli.json(&["task", "list", "frames", "--state", "failed"]);
    assert_eq!(code, 0);
    assert_eq!(failed.as_array().unwrap().len(), 120);
    let (_, succeeded) = cli.json(&["task", "list", "frames", "--state", "succeeded"]);
    assert_eq!(succeeded.as_array().unwrap().len(), 2);
    let out = cli.run(&["task", "list", "frames"]);
    let table = text(&out);
    let ids: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // Natural order: task-2 comes before task-10.
    let position = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert!(position("task-2") < position("task-10"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("task-7 "))
        .unwrap_or_default();
    assert!(row.contains("failed: non_zero_exit"), "{table}");
    assert!(row.contains("127"), "{table}");
    let (_, hello) = cli.json(&["task", "show", "frames", "frame-0"]);
    assert_eq!(hello["status"], "completed");
    assert_eq!(hello["last_result"]["exit_code"], 0);
    let (_, tasks) = cli.json(&["task", "list", "frames"]);
    assert_eq!(tasks.as_array().unwrap().len(), 122);
    let (_, some) = cli.json(&["task", "list", "frames", "--limit", "5"]);
    assert_eq!(some.as_array().unwrap().len(), 5);
    let (_, task) = cli.json(&["task", "show", "frames", "task-7"]);
    assert_eq!(task["spec"]["command_line"]["shell"], "render --frame 7");
    // Table mode shows objects in words, not JSON.
    let shown = text(&cli.run(&["task", "show", "frames", "task-7"]));
    assert!(
        shown.starts_with("task task-7 of job frames (failed: non_zero_exit)"),
        "{shown}"
    );
    assert!(
        shown.contains("command:  sh -c \"render --frame 7\""),
        "{shown}"
    );
    assert!(!shown.contains('{'), "{shown}");
    let shown = text(&cli.run(&["pool", "show", "render"]));
    assert!(shown.starts_with("pool render (active)"), "{shown}");
    assert!(shown.contains("4 task slot(s)"), "{shown}");
    let shown = text(&cli.run(&["job", "show", "frames"]));
    assert!(shown.starts_with("job frames on pool render"), "{shown}");
    assert!(shown.contains("120 failed"), "{shown}");
    let (_, job) = cli.json(&["job", "show", "frames"]);
    assert_eq!(job["tasks_added"], 122);
    let out = cli.run(&["node", "disable", "render", "node-0"]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, node) = cli.json(&["node", "show", "render", "node-0"]);
    assert_eq!(node["state"], "offline");
    let out = cli.run(&["node", "enable", "render", "node-0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(job["spec"]["priority"], -5);
    let out = cli.run(&["job", "list"]);
    assert!(
        text(&out).contains("frames") && text(&out).contains("122"),
        "{}",
        text(&out)
    );

    // The account's events from the start, as one JSON array.
    let (code, events) = cli.json(&["events", "tail", "--from", "1", "--count", "3"]);
    assert_eq!(code, 0);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["event_type"], "AccountCreated");
    assert_eq!(
        events[0]["data"]["AccountCreated"]["primary_key"],
        "<redacted>"
    );
    assert_eq!(events[1]["event_type"], "PoolCreated");
    assert_eq!(events[1]["principal"]["account"]["account"], "acme");

    // Regenerating the primary key: the old one is refused with a hint,
    // the secondary still works.
    let (code, keys) = cli.json(&[
        "account",
        "keys",
        "regenerate",
        "acme",
        "primary",
        "--admin-key-file",
        &key_file,
    ]);
    assert_eq!(code, 0);
    assert_ne!(keys["primary"], primary.as_str());
    assert_eq!(keys["secondary"], secondary.as_str());
    let (code, err) = cli.json(&["pool", "list"]);
    assert_eq!(code, 1);
    assert_eq!(err["error"]["kind"], "bad_signature");
    assert!(err["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("lote account keys show"));
    let (code, _) = cli.json(&["pool", "list", "--key", &secondary]);
    assert_eq!(code, 0);

    // A profile supplies what flags and environment do not.
    std::fs::create_dir_all(cli.config_home.path().join("lote")).unwrap();
    std::fs::write(
        cli.config_home.path().join("lote/profiles.toml"),
        format!(
            "[default]\nserver = \"{}\"\naccount = \"acme\"\nkey = \"{secondary}\"\n\n[ops]\nserver = \"{}\"\nadmin_key_file = \"{key_file}\"\n",
            server.addr, server.addr
        ),
    )
    .unwrap();
    let bare = Cli::new(&server);
    std::fs::create_dir_all(bare.config_home.path().join("lote")).unwrap();
    std::fs::copy(
        cli.config_home.path().join("lote/profiles.toml"),
        bare.config_home.path().join("lote/profiles.toml"),
    )
    .unwrap();
    let (code, who) = bare.json(&["whoami"]);
    assert_eq!(code, 0, "{who}");
    assert_eq!(who["principal"]["account"]["account"], "acme");
    let (code, list) = bare.json(&["account", "list", "--profile", "ops"]);
    assert_eq!(code, 0, "{list}");
    let out = bare.run(&["whoami", "--profile", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ops"), "{}", text(&out));

    // Unreachable server: exit 1 and how to start one.
    let out = bare.run(&["whoami", "--server", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("lote server"), "{}", text(&out));
}

#[test]
fn help_teaches() {
    let out = Command::new(lote_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes",
        "lote server",
        "lote account create",
        "lote task add",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let out = Command::new(lote_bin())
        .args(["task", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples"));
    let out = Command::new(lote_bin())
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("LOTE_LISTEN") && help.contains("--config"),
        "{help}"
    );
    // Completion scripts for the shells people use.
    for (shell, mark) in [
        ("bash", "complete -F _lote"),
        ("zsh", "#compdef lote"),
        ("fish", "complete -c lote"),
    ] {
        let out = Command::new(lote_bin())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("add-range"), "{shell} lacks subcommands");
    }
    let out = Command::new(lote_bin())
        .args(["agent", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--pool-account acme"));
    // A command's own options come apart from the connection's.
    let out = Command::new(lote_bin())
        .args(["task", "add", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let (own, connection) = help
        .split_once("Connection:")
        .unwrap_or_else(|| panic!("no Connection heading:\n{help}"));
    assert!(own.contains("--max-wall-clock-secs"), "{help}");
    assert!(!own.contains("--admin-key-file"), "{help}");
    assert!(connection.contains("--admin-key-file"), "{help}");
    // Every subcommand says what it does in its noun's --help.
    let mut bare = Vec::new();
    for noun in [
        &["account"][..],
        &["account", "keys"],
        &["pool"],
        &["pool", "autoscale"],
        &["node"],
        &["job"],
        &["task"],
        &["blob"],
        &["app"],
        &["app", "job"],
        &["package"],
        &["events"],
    ] {
        let out = Command::new(lote_bin())
            .args(noun)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let commands = help
            .split("Commands:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{noun:?} --help lists no commands:\n{help}"));
        for line in commands.lines().take_while(|l| !l.trim().is_empty()) {
            if line.split_whitespace().count() == 1 {
                bare.push(format!("{} {}", noun.join(" "), line.trim()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "subcommands without a description: {bare:?}"
    );
}

#[tokio::test]
async fn server_settings_come_from_flag_then_environment_then_file() {
    use lote::api::{Credential, Request};
    let data = open_tempdir();
    let config = data.path().join("server.toml");
    std::fs::write(
        &config,
        "admin_key = \"file-key-0123456789\"\nmax_calls_in_flight = 8\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let ping = |server: &ServerProcess, key: &str| {
        let client = server.client(Credential::Admin, key);
        async move { client.call(&Request::Ping).await.is_ok() }
    };

    let start = |env: Option<&str>, extra: &[&str]| {
        let mut cmd = Command::new(lote_bin());
        cmd.args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config,
            "--data-dir",
        ])
        .arg(data.path().join("d"))
        .args(extra)
        .env_remove("LOTE_ADMIN_KEY")
        .stdout(std::process::Stdio::piped());
        if let Some(k) = env {
            cmd.env("LOTE_ADMIN_KEY", k);
        }
        ServerProcess::from_command(cmd, &data.path().join("d"))
    };

    // The file alone.
    let mut s = start(None, &[]);
    assert!(ping(&s, "file-key-0123456789").await);
    assert!(s.terminate().success());
    // The environment beats the file.
    let mut s = start(Some("env-key-0123456789"), &[]);
    assert!(ping(&s, "env-key-0123456789").await);
    assert!(!ping(&s, "file-key-0123456789").await);
    assert!(s.terminate().success());
    // The flag beats both.
    let mut s = start(
        Some("env-key-0123456789"),
        &["--admin-key", "flag-key-0123456789"],
    );
    assert!(ping(&s, "flag-key-0123456789").await);
    assert!(!ping(&s, "env-key-0123456789").await);
    assert!(s.terminate().success());

    // A typo in the file is a usage error naming the key.
    std::fs::write(data.path().join("bad.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(lote_bin())
        .args(["server", "--config"])
        .arg(data.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}
