//! The console in a real headless Chromium (Debian's, through
//! chromedriver), against the real server binary, with state made through
//! the real message API while the pages are open: nothing mocked.
//!
//! Needs `chromium` and `chromium-driver` (scripts/test.sh installs them).
//! Where they are missing the test says so and passes, except under CI
//! (`CI` set), where a missing browser is a failure.

mod compute_support;
mod console_support;
mod server_support;

use std::time::{Duration, Instant};

use compute_support::*;
use console_support::*;
use fantoccini::{Client as Browser, Locator};
use lote::api::Request;
use lote::types::{JobId, PoolId};
use server_support::*;

/// Polls `check` (a JavaScript expression's value) until `ok` holds.
async fn until(
    b: &Browser,
    what: &str,
    script: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = b
            .execute(script, vec![])
            .await
            .unwrap_or(serde_json::Value::Null);
        if ok(&value) {
            return value;
        }
        if Instant::now() > deadline {
            let page = b
                .find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap_or_default();
            panic!("{what}: still {value} after 30 s; the page says:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until at least one element matches `css`.
async fn some(b: &Browser, what: &str, css: &str) {
    let script = format!("return document.querySelectorAll({css:?}).length;");
    until(b, what, &script, |v| v.as_u64().is_some_and(|n| n >= 1)).await;
}

/// Waits until the text of the elements matching `css` holds `needle`;
/// returns that text.
async fn shows(b: &Browser, what: &str, css: &str, needle: &str) -> String {
    let text = until(b, what, &texts(css), |v| {
        v.as_str().is_some_and(|t| t.contains(needle))
    })
    .await;
    text.as_str().unwrap_or_default().to_string()
}

/// The text of the elements matching `css`, joined.
fn texts(css: &str) -> String {
    format!("return [...document.querySelectorAll({css:?})].map(e => e.textContent).join('\\n');")
}

async fn shot(b: &Browser, name: &str) {
    eprintln!("screenshot {name}");
    let png = b.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Moves to a console page without reloading (as a click on a link does).
async fn navigate(b: &Browser, path: &str) {
    let script = "history.pushState(null, '', arguments[0]); dispatchEvent(new PopStateEvent('popstate')); return 1;";
    b.execute(script, vec![serde_json::json!(path)])
        .await
        .unwrap();
}

async fn sign_in(b: &Browser, console: &str, account: &str, key: &str) {
    b.goto(&format!("http://{console}/ui/")).await.unwrap();
    let form = b
        .wait()
        .for_element(Locator::Css("[data-testid=signin]"))
        .await
        .unwrap();
    form.find(Locator::Css("[data-testid=account]"))
        .await
        .unwrap()
        .send_keys(account)
        .await
        .unwrap();
    form.find(Locator::Css("[data-testid=key]"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    form.find(Locator::Css("[data-testid=signin-submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A page on another origin that posts a form to the console, as a
/// malicious site would: served on a port of its own.
fn attacker_site(console: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let page = format!(
        r#"<!doctype html><form id="f" method="POST" enctype="text/plain" action="http://{console}/api/call"><input name='{{"CreatePool":{{"spec":{{"id":"forged"' value='"}}}}'></form><script>document.getElementById("f").submit()</script>"#
    );
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let driver = match Driver::start() {
        Ok(d) => d,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let server = ServerProcess::start(&["--autoscale-sample-secs", "1"]);
    let console = server.console.clone().expect("a console");
    let (client, key, _) = server.account("acme").await;
    let (other, other_key, _) = server.account("rival").await;
    local_pool(&other, "rival-pool", 0, 1).await;
    create_job(&other, "rival-job", "rival-pool").await;

    let b = driver.browser().await;

    // A wrong key cannot sign in.
    sign_in(&b, &console, "acme", &"0".repeat(64)).await;
    shows(
        &b,
        "the sign-in error",
        "[data-testid=signin-error]",
        "wrong account name or key",
    )
    .await;
    shot(&b, "signin-refused").await;

    sign_in(&b, &console, "acme", &key).await;
    until(&b, "the overview", &texts("h1"), |v| v == "Overview").await;
    // Marks this document: a reload would lose it.
    b.execute("window.__same = 'page'; return 1;", vec![])
        .await
        .unwrap();
    let same_page = || async {
        b.execute("return window.__same || null;", vec![])
            .await
            .unwrap()
            == "page"
    };

    // A pool made through the API: its heatmap grows and turns to running
    // without a reload.
    local_pool(&client, "render", 1, 2).await;
    nodes_up(&client, "render", 1).await;
    navigate(&b, "/ui/pools/render").await;
    until(
        &b,
        "one idle tile",
        "return document.querySelectorAll('[data-testid=tile][data-state=idle]').length;",
        |v| v == 1,
    )
    .await;
    client
        .call(&Request::ResizePool {
            pool: PoolId::new("render").unwrap(),
            target_nodes: 2,
            deallocation: Default::default(),
        })
        .await
        .unwrap();
    until(
        &b,
        "two tiles",
        "return document.querySelectorAll('[data-testid=tile]').length;",
        |v| v == 2,
    )
    .await;
    create_job(&client, "frames", "render").await;
    let ticker = "for i in $(seq 1 40); do echo tick-$i; sleep 0.25; done";
    let mut tasks = vec![shell("ticker", ticker)];
    tasks.extend((1..=5).map(|i| shell(&format!("f{i}"), "sleep 2")));
    tasks.push(shell("bad", "echo failing >&2; exit 3"));
    tasks.push(shell(
        "markup",
        "echo '<script>window.__pwned=1</script><b>bold</b>'; exit 0",
    ));
    add(&client, "frames", tasks).await;
    some(
        &b,
        "a running tile",
        "[data-testid=tile][data-state=running]",
    )
    .await;
    shot(&b, "pool").await;
    assert!(same_page().await, "the heatmap changed without a reload");

    // The job's page: its progress bar moves to the end by itself.
    navigate(&b, "/ui/jobs/frames").await;
    let first = until(
        &b,
        "the progress",
        &texts("[data-testid=job-info] [data-testid=progress-text]"),
        |v| v.as_str().is_some_and(|t| t.ends_with("/ 8")),
    )
    .await;
    shot(&b, "job-running").await;
    // The markup in a command is text on the page, never run.
    let commands = shows(&b, "commands", "[data-testid=tasks] code", "<script>").await;
    assert!(commands
        .as_str()
        .contains("<script>window.__pwned=1</script>"));

    // The ticking task: its stdout grows while it runs.
    navigate(&b, "/ui/jobs/frames/tasks/ticker").await;
    let early = shows(&b, "some output", "[data-testid=output]", "tick-2").await;
    // Its node's page lists it among what the node runs.
    let node = client
        .call(&Request::ShowTask {
            job: lote::types::JobId::new("frames").unwrap(),
            task: lote::types::TaskId::new("ticker").unwrap(),
        })
        .await
        .unwrap();
    let lote::api::Response::Task(t) = node else {
        panic!("a task")
    };
    let on = t.state.placement.expect("placed").node;
    navigate(&b, &format!("/ui/pools/render/nodes/{on}")).await;
    shows(
        &b,
        "the node's tasks",
        "[data-testid=node-tasks] td",
        "ticker",
    )
    .await;
    shot(&b, "node-running").await;
    b.execute("history.back(); return 1;", vec![])
        .await
        .unwrap();
    let later = until(&b, "more output", &texts("[data-testid=output]"), |v| {
        v.as_str()
            .is_some_and(|t| t.len() > early.as_str().len() + 20)
    })
    .await;
    assert!(later.as_str().unwrap().starts_with("tick-1"), "{later}");
    shot(&b, "task-tailing").await;
    until(
        &b,
        "the ticker's end",
        &texts("[data-testid=task-info] [data-testid=state]"),
        |v| v == "completed",
    )
    .await;

    // Its audit trail: at the slider's start it was queued, at its end done.
    b.execute("const s = document.querySelector('[data-testid=audit-slider]'); s.value = 0; s.dispatchEvent(new Event('input')); return 1;", vec![]).await.unwrap();
    until(
        &b,
        "the earliest state",
        &texts("[data-testid=audit-state] [data-testid=state]"),
        |v| v == "active",
    )
    .await;
    b.execute(
        "document.querySelector('[data-testid=audit-slider]').scrollIntoView(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    shot(&b, "task-audit-past").await;
    b.execute("const s = document.querySelector('[data-testid=audit-slider]'); s.value = 1000; s.dispatchEvent(new Event('input')); return 1;", vec![]).await.unwrap();
    until(
        &b,
        "the latest state",
        &texts("[data-testid=audit-state] [data-testid=state]"),
        |v| v == "completed",
    )
    .await;
    let attempts = shows(&b, "the attempts", "[data-testid=attempts] td", "node-").await;
    assert!(attempts.as_str().contains('0'), "exit code 0: {attempts}");

    // The markup task's output is text too.
    navigate(&b, "/ui/jobs/frames/tasks/markup").await;
    shows(&b, "markup output", "[data-testid=output]", "<b>bold</b>").await;
    assert_eq!(
        b.execute("return window.__pwned === undefined;", vec![])
            .await
            .unwrap(),
        true
    );

    // The job ends; its page shows it without a reload.
    wait_job(&client, "frames", Duration::from_secs(60)).await;
    navigate(&b, "/ui/jobs/frames").await;
    let done = until(
        &b,
        "all done",
        &texts("[data-testid=job-info] [data-testid=progress-text]"),
        |v| v == "8 / 8",
    )
    .await;
    assert_ne!(first, done);
    assert!(same_page().await);
    shot(&b, "job-done").await;

    // A failed task: its exit code and failure category, and its stderr.
    navigate(&b, "/ui/jobs/frames/tasks/bad").await;
    let result = shows(&b, "the failure", "[data-testid=result]", "exit code 3").await;
    assert!(result.as_str().contains("non_zero_exit"), "{result}");
    b.find(Locator::Css("[data-testid=tab-stderr]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shows(&b, "its stderr", "[data-testid=output]", "failing").await;
    shot(&b, "task-failed").await;

    // A waiting task: its reasons, in words.
    local_pool(&client, "empty", 0, 1).await;
    create_job(&client, "stuck", "empty").await;
    add(
        &client,
        "stuck",
        vec![shell("w1", "true"), shell("w2", "true")],
    )
    .await;
    navigate(&b, "/ui/jobs/stuck").await;
    until(
        &b,
        "the job's wait",
        &texts("[data-testid=wait-group]"),
        |v| {
            v.as_str()
                .is_some_and(|t| t.starts_with("2 tasks wait") && t.contains("empty"))
        },
    )
    .await;
    shot(&b, "job-waiting").await;
    // The table is redrawn as the log moves: the link is clicked where it
    // is at that instant, not through a handle a redraw may have replaced.
    b.execute(
        "document.querySelector('[data-testid=task-link]').click(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    let reasons = shows(&b, "the task's reasons", "[data-testid=reason]", "empty").await;
    assert!(reasons.as_str().contains("target is 0 nodes"), "{reasons}");
    shot(&b, "task-waiting").await;

    // A pool whose start task fails: the banner, and the output one click
    // away.
    let spec = lote::domain::pool::PoolSpec {
        start_task: Some(start_task("echo broken-setup >&2; exit 1", true, 0)),
        ..lote::domain::pool::PoolSpec::fixed(
            PoolId::new("setup").unwrap(),
            lote::types::AccountName::new("acme").unwrap(),
            1,
            1,
        )
    };
    create_pool_spec(&client, spec).await;
    navigate(&b, "/ui/pools/setup").await;
    shows(
        &b,
        "the start-task banner",
        "[data-testid=start-task-banner]",
        "1 of 1 nodes failed their start task",
    )
    .await;
    until(&b, "an error tile", "return document.querySelectorAll('[data-testid=tile][data-state=startTaskFailed]').length;", |v| v == 1).await;
    shot(&b, "pool-start-task-failed").await;
    // Autoscale's evaluation with its trace, nothing changed.
    b.find(Locator::Css("[data-testid=formula]"))
        .await
        .unwrap()
        .send_keys("$TargetDedicatedNodes = max(2, $PendingTasks.GetSample(1));")
        .await
        .unwrap();
    b.execute(
        "document.querySelector('[data-testid=evaluate]').click(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    let trace = shows(
        &b,
        "the trace",
        "[data-testid=trace]",
        "$TargetDedicatedNodes",
    )
    .await;
    assert!(trace.as_str().contains("assign"), "{trace}");
    shows(
        &b,
        "the results",
        "[data-testid=evaluation] p",
        "$TargetDedicatedNodes=2",
    )
    .await;
    shot(&b, "pool-autoscale-evaluated").await;
    // The replay of that formula over the pool's history, and the pool's
    // recorded samples as charts (sampled every second here).
    b.execute(
        "document.querySelector('[data-testid=replay-button]').click(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    some(&b, "the replay chart", "[data-testid=replay-chart] path").await;
    some(&b, "the nodes chart", "[data-testid=nodes-chart] path").await;
    shot(&b, "pool-charts").await;
    b.execute(
        "document.querySelector('[data-testid=start-task-banner] a').click(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    shows(
        &b,
        "the start task's stderr",
        "[data-testid='starttask-stderr.txt']",
        "broken-setup",
    )
    .await;
    shot(&b, "node-start-task-output").await;

    // An app and a run of it: the apps page lists both, the run's status
    // following it without a reload.
    let app = open_tempdir();
    std::fs::write(
        app.path().join("app.toml"),
        "name = \"tiny-app\"\nversion = \"1.0\"\ndescription = \"says hello\"\n\
         [parameters.who]\ntype = \"string\"\ndefault = \"world\"\n\
         [[stages]]\ncommand = \"echo hello {who}\"\n",
    )
    .unwrap();
    lote::blob::app_files::publish(&client, app.path(), true, |_, _| {})
        .await
        .unwrap();
    navigate(&b, "/ui/apps").await;
    shows(&b, "the app", "[data-testid=apps]", "who (string) = world").await;
    client
        .call(&Request::RunApp {
            app: "tiny-app".into(),
            version: None,
            job: Some(JobId::new("tiny-run").unwrap()),
            params: vec![],
            inputs: vec![],
            pool: Some(PoolId::new("render").unwrap()),
            auto_pool: None,
            request_id: None,
        })
        .await
        .unwrap();
    shows(
        &b,
        "the run, succeeded",
        "[data-testid=run-row-tiny-run]",
        "succeeded",
    )
    .await;
    assert!(same_page().await, "the apps page reloaded");
    shot(&b, "apps").await;

    // The other views open, and show nothing of the rival account.
    for (path, name) in [
        ("/ui/", "overview"),
        ("/ui/pools", "pools"),
        ("/ui/jobs", "jobs"),
        ("/ui/events", "events"),
        ("/ui/blobs", "blobs"),
        ("/ui/packages", "packages"),
        ("/ui/schedules", "schedules"),
        ("/ui/apps", "apps"),
        ("/ui/pools/render/nodes/node-0", "node"),
    ] {
        b.goto(&format!("http://{console}{path}")).await.unwrap();
        until(&b, name, "return document.querySelector('h1') ? document.querySelector('h1').textContent : null;", |v| v.is_string()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let page = b
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !page.contains("rival"),
            "{name} shows the other account:\n{page}"
        );
        assert!(!page.contains("Cannot show this page"), "{name}:\n{page}");
        shot(&b, name).await;
    }
    // The events page tails what is written while it is open.
    b.goto(&format!("http://{console}/ui/events?type=JobCreated"))
        .await
        .unwrap();
    until(&b, "the events page", &texts("h1"), |v| v == "Events").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    create_job(&client, "late", "render").await;
    until(
        &b,
        "the new job's event",
        &texts("[data-testid=event-row]"),
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("job/acme/late") && t.contains("JobCreated"))
        },
    )
    .await;
    shot(&b, "events-tail").await;

    // A file uploaded from the browser lands in the blob store.
    let upload = driver.profile.join("upload-me.txt");
    std::fs::write(&upload, "uploaded from a browser\n").unwrap();
    b.goto(&format!("http://{console}/ui/blobs")).await.unwrap();
    let file = b
        .wait()
        .for_element(Locator::Css("[data-testid=upload-file]"))
        .await
        .unwrap();
    file.send_keys(&upload.display().to_string()).await.unwrap();
    b.find(Locator::Css("[data-testid=upload-container]"))
        .await
        .unwrap()
        .send_keys("inbox")
        .await
        .unwrap();
    b.execute(
        "document.querySelector('[data-testid=upload]').click(); return 1;",
        vec![],
    )
    .await
    .unwrap();
    shows(
        &b,
        "the uploaded blob",
        "[data-testid=blobs] td",
        "upload-me.txt",
    )
    .await;
    shot(&b, "blobs-uploaded").await;

    b.goto(&format!("http://{console}/ui/jobs/rival-job"))
        .await
        .unwrap();
    shows(&b, "not found", "[data-testid=error]", "no job rival-job").await;

    // A forged cross-site POST: the browser sends the form, the server
    // refuses it, and nothing was created.
    let evil = attacker_site(&console);
    b.goto(&format!("http://{evil}/")).await.unwrap();
    until(
        &b,
        "the refusal",
        "return document.body ? document.body.innerText : null;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("refused") || t.contains("sign in first"))
        },
    )
    .await;
    let pools = list_pools(&client).await;
    assert!(pools
        .iter()
        .all(|p| p.state.spec.as_ref().unwrap().id.as_str() != "forged"));

    // The operator's view.
    let op = driver.browser().await;
    sign_in(&op, &console, "", &server.admin_key).await;
    until(&op, "accounts", &texts("[data-testid=accounts] td"), |v| {
        v.as_str()
            .is_some_and(|t| t.contains("acme") && t.contains("rival"))
    })
    .await;
    shot(&op, "accounts").await;
    let _ = other_key;
    op.close().await.ok();
    b.close().await.ok();
}
