//! The admin console, `/metrics` and the health checks, against the real
//! server binary: sessions and their defences over raw HTTP, the metrics
//! parsed by a Prometheus parser and checked against the API, and the
//! console itself in a real headless Chromium (`console_browser.rs`).

mod compute_support;
mod console_support;
mod server_support;

use std::time::Duration;

use compute_support::*;
use console_support::*;
use lote::types::AccountName;
use server_support::*;

fn console(server: &ServerProcess) -> String {
    server
        .console
        .clone()
        .expect("the server prints its console address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_cookies_that_only_the_consoles_own_page_can_use() {
    let server = ServerProcess::start(&[]);
    let addr = console(&server);
    let (_, key_a, _) = server.account("alpha").await;
    let (b, _, _) = server.account("beta").await;
    local_pool(&b, "bp", 0, 1).await;
    create_job(&b, "secret-job", "bp").await;

    // A wrong key, an unknown account and a wrong admin key: the same 401.
    for (account, key) in [
        (Some("alpha"), "0".repeat(64)),
        (Some("nobody"), key_a.clone()),
        (None, key_a.clone()),
    ] {
        let refused = Session::sign_in(&addr, account, &key)
            .err()
            .expect("refused");
        assert_eq!(refused.status, 401, "{}", refused.text());
        assert!(refused.header("set-cookie").is_none());
    }
    let a = Session::sign_in(&addr, Some("alpha"), &key_a).expect("signed in");

    // The cookie: HttpOnly, SameSite=Strict, with an expiry; no key in it.
    let r = http(
        &addr,
        "POST",
        "/api/session",
        &[("content-type", "application/json")],
        serde_json::json!({ "account": "alpha", "key": key_a })
            .to_string()
            .as_bytes(),
    );
    let cookie = r.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains(&key_a));
    assert!(!r.text().contains(&key_a), "the key is never sent back");

    // Another site's page cannot sign a browser in: a form post (not
    // JSON) and a foreign Origin are both refused.
    let form = format!("account=alpha&key={key_a}");
    let r = http(
        &addr,
        "POST",
        "/api/session",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        &addr,
        "POST",
        "/api/session",
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        serde_json::json!({ "account": "alpha", "key": key_a })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // Reads need the cookie; changes need the CSRF token too, and an
    // origin of this host when the browser names one.
    let pool = serde_json::json!({ "CreatePool": { "spec": pool_spec("alpha", "p1"), "request_id": null } });
    assert_eq!(
        http(
            &addr,
            "POST",
            "/api/call",
            &[("content-type", "application/json")],
            pool.to_string().as_bytes()
        )
        .status,
        401
    );
    let no_token = http(
        &addr,
        "POST",
        "/api/call",
        &[("cookie", &a.cookie), ("content-type", "application/json")],
        pool.to_string().as_bytes(),
    );
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let wrong_token = http(
        &addr,
        "POST",
        "/api/call",
        &[
            ("cookie", &a.cookie),
            ("x-lote-csrf", &"f".repeat(64)),
            ("content-type", "application/json"),
        ],
        pool.to_string().as_bytes(),
    );
    assert_eq!(wrong_token.status, 403);
    let foreign = http(
        &addr,
        "POST",
        "/api/call",
        &[
            ("cookie", &a.cookie),
            ("x-lote-csrf", &a.csrf),
            ("origin", "http://evil.example"),
            ("content-type", "application/json"),
        ],
        pool.to_string().as_bytes(),
    );
    assert_eq!(foreign.status, 403);
    let created = a.call(pool.clone());
    assert_eq!(created.status, 200, "{}", created.text());
    let listed = a.call(serde_json::json!("ListPools")).json();
    assert_eq!(listed["Pools"][0]["state"]["spec"]["id"], "p1");

    // An account sees only its own: beta's job is "not found", in the
    // API and in the audit trail alike.
    let theirs = a.call(serde_json::json!({ "ShowJob": { "job": "secret-job" } }));
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    assert!(!theirs.text().contains("beta"));
    let audit = a.get("/api/audit?entity=job/beta/secret-job");
    assert_eq!(audit.status, 404, "{}", audit.text());
    let own = a.get("/api/audit?entity=pool/alpha/p1");
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["history"][0]["event_type"], "PoolCreated");
    // What only the operator, a node or a live connection may do.
    let accounts = a.call(serde_json::json!("ListAccounts"));
    assert_eq!(accounts.status, 403, "{}", accounts.text());
    let tail = a.call(serde_json::json!({ "TailEvents": { "from": 0 } }));
    assert_eq!(tail.status, 403, "{}", tail.text());

    // Bad input: a clear error, nothing changed.
    let garbage = http(
        &addr,
        "POST",
        "/api/call",
        &[("cookie", &a.cookie), ("x-lote-csrf", &a.csrf)],
        b"{not json",
    );
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.text().contains("not a request"),
        "{}",
        garbage.text()
    );
    let huge = vec![b' '; 5 * 1024 * 1024];
    let too_big = http(
        &addr,
        "POST",
        "/api/call",
        &[("cookie", &a.cookie), ("x-lote-csrf", &a.csrf)],
        &huge,
    );
    assert_eq!(too_big.status, 413);
    let odd = a.get("/api/audit?entity=task/alpha/%3Cscript%3E/x");
    assert_eq!(odd.status, 400, "{}", odd.text());

    // The operator signs in with the admin key and sees accounts.
    let op = Session::sign_in(&addr, None, &server.admin_key).expect("operator");
    let list = op.call(serde_json::json!("ListAccounts")).json();
    assert_eq!(list["Accounts"].as_array().unwrap().len(), 2);

    // A regenerated key ends the sessions opened with it.
    let regen =
        op.call(serde_json::json!({ "RegenerateKey": { "name": "alpha", "key": "primary" } }));
    assert_eq!(regen.status, 200, "{}", regen.text());
    let after = a.get("/api/session");
    assert_eq!(after.status, 401, "{}", after.text());

    // Sign-out ends the session on the server, not only in the browser.
    let r = http(
        &addr,
        "DELETE",
        "/api/session",
        &[("cookie", &op.cookie), ("x-lote-csrf", &op.csrf)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(op.get("/api/session").status, 401);
}

fn pool_spec(account: &str, id: &str) -> serde_json::Value {
    let spec = lote::domain::pool::PoolSpec::fixed(
        lote::types::PoolId::new(id).unwrap(),
        AccountName::new(account).unwrap(),
        0,
        1,
    );
    serde_json::to_value(spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_match_the_api() {
    let server = ServerProcess::start(&[]);
    let addr = console(&server);
    assert_eq!(http(&addr, "GET", "/healthz", &[], b"").status, 200);
    let ready = eventually(Duration::from_secs(10), "ready", || async {
        let r = http(&addr, "GET", "/readyz", &[], b"");
        if r.status == 200 {
            Ok(r)
        } else {
            Err(r.text())
        }
    })
    .await;
    assert!(ready.text().starts_with("ready"));

    let (client, _, _) = server.account("acme").await;
    local_pool(&client, "render", 2, 2).await;
    nodes_up(&client, "render", 2).await;
    create_job(&client, "frames", "render").await;
    let tasks: Vec<_> = (1..=6)
        .map(|i| shell(&format!("t{i}"), if i == 6 { "exit 3" } else { "true" }))
        .collect();
    add(&client, "frames", tasks).await;
    wait_job(&client, "frames", Duration::from_secs(60)).await;
    let job = show_job(&client, "frames").await;

    let text = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(text.status, 200);
    assert!(text
        .header("content-type")
        .unwrap()
        .contains("openmetrics-text"));
    let lines: Vec<String> = text.text().lines().map(str::to_string).collect();
    let scrape =
        prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let counts = &job.state.task_counts;
    for (bucket, state) in [
        (lote::domain::job::TaskBucket::Succeeded, "succeeded"),
        (lote::domain::job::TaskBucket::Failed, "failed"),
    ] {
        let api = counts.get(&bucket).copied().unwrap_or(0) as f64;
        assert_eq!(
            value("lote_job_tasks", &[("job", "frames"), ("state", state)]),
            api,
            "{state}"
        );
        assert_eq!(
            value("lote_pool_tasks", &[("pool", "render"), ("state", state)]),
            api,
            "{state}"
        );
    }
    assert_eq!(
        value(
            "lote_job_tasks",
            &[("job", "frames"), ("state", "succeeded")]
        ),
        5.0
    );
    let nodes = list_nodes(&client, "render").await;
    assert_eq!(
        value("lote_nodes", &[("account", "acme"), ("pool", "render")]),
        nodes.len() as f64
    );
    assert!(
        value("lote_agents_connected", &[]) >= 2.0,
        "both agents are connected"
    );
    assert!(value("lote_placements_total", &[]) >= 6.0);
    assert!(value("lote_placement_rounds_total", &[]) >= 1.0);
    assert!(value("lote_log_events_total", &[]) > 0.0);
    assert!(value("lote_log_bytes_total", &[]) > 0.0);
    assert!(value("lote_log_fsyncs_total", &[]) > 0.0);
    // Some entity was rebuilt from its stream (the account, the pool).
    assert!(value("lote_log_stream_reads_total", &[]) > 0.0);
    // One AddTasks call, counted in the latency histogram.
    assert_eq!(
        value(
            "lote_api_call_seconds_count",
            &[("kind", "AddTasks"), ("outcome", "ok")]
        ),
        1.0
    );
    // Never a series per task.
    assert!(!text.text().contains("task=\""), "no per-task label");
}

/// Reads the live feed for `secs`: each change message's arrival and its
/// JSON.
fn read_live(addr: &str, cookie: &str, secs: u64) -> Vec<(std::time::Instant, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /api/live HTTP/1.1\r\nhost: {addr}\r\ncookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    let mut text = String::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while std::time::Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        while let Some(at) = text.find("event: change\ndata: ") {
            let rest = &text[at + 20..];
            let Some(nl) = rest.find('\n') else { break };
            seen.push((
                std::time::Instant::now(),
                serde_json::from_str(&rest[..nl]).unwrap(),
            ));
            text = rest[nl..].to_string();
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_job_updates_a_page_a_few_times_a_second_not_per_task() {
    let server = ServerProcess::start(&[]);
    let addr = console(&server);
    let (client, key, _) = server.account("acme").await;
    local_pool(&client, "render", 2, 4).await;
    nodes_up(&client, "render", 2).await;
    create_job(&client, "busy", "render").await;
    let session = Session::sign_in(&addr, Some("acme"), &key).unwrap();
    let cookie = session.cookie.clone();
    let reader = std::thread::spawn(move || read_live(&addr, &cookie, 8));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for batch in 0..2 {
        let tasks: Vec<_> = (0..1000)
            .map(|i| shell(&format!("t{batch}-{i}"), "true"))
            .collect();
        add(&client, "busy", tasks).await;
    }
    wait_job(&client, "busy", Duration::from_secs(60)).await;
    let seen = reader.join().unwrap();
    assert!(!seen.is_empty(), "the feed said nothing");
    let events: u64 = seen.iter().map(|(_, m)| m["count"].as_u64().unwrap()).sum();
    // Each task is added, assigned, started and completed: thousands of
    // events, in a handful of messages.
    assert!(events >= 4 * 2000, "{events} events counted");
    let span = seen.last().unwrap().0 - seen.first().unwrap().0;
    let per_sec = seen.len() as f64 / span.as_secs_f64().max(1.0);
    assert!(per_sec <= 5.0, "{} messages in {span:?}", seen.len());
    // Bounded messages: entity lists are capped, with "more" past the cap.
    assert!(seen
        .iter()
        .all(|(_, m)| m["entities"].as_array().unwrap().len() <= 500));
    assert!(
        seen.iter().any(|(_, m)| m["more"] == true),
        "a busy tick names no more than its cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_task_files_go_up_and_down_through_the_console() {
    let server = ServerProcess::start(&[]);
    let addr = console(&server);
    let (client, key, _) = server.account("acme").await;
    let (_, other_key, _) = server.account("rival").await;
    let a = Session::sign_in(&addr, Some("acme"), &key).unwrap();
    // 2.5 MiB: more than two of the store's chunks, not a multiple of one.
    let data: Vec<u8> = (0..(5u32 << 19))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let up = http(
        &addr,
        "PUT",
        "/api/upload?container=inputs&name=scene%2Fa.bin",
        &[("cookie", &a.cookie), ("x-lote-csrf", &a.csrf)],
        &data,
    );
    assert_eq!(up.status, 200, "{}", up.text());
    let down = a.get("/api/download?kind=blob&container=inputs&name=scene%2Fa.bin");
    assert_eq!(down.status, 200);
    assert_eq!(down.body.len(), data.len());
    assert!(down.body == data, "the same bytes back");
    assert!(down
        .header("content-disposition")
        .unwrap()
        .contains("a.bin"));
    // Listed through the API as the CLI sees it.
    let listed = a.call(serde_json::json!({ "ListBlobs": { "container": "inputs", "prefix": "", "after": null, "limit": 10 } })).json();
    assert_eq!(listed["Blobs"]["blobs"][0]["size"], data.len());
    // Without the CSRF token nothing is written.
    let forged = http(
        &addr,
        "PUT",
        "/api/upload?container=inputs&name=x",
        &[("cookie", &a.cookie)],
        b"x",
    );
    assert_eq!(forged.status, 403);
    // Another account cannot read it.
    let b = Session::sign_in(&addr, Some("rival"), &other_key).unwrap();
    assert_eq!(
        b.get("/api/download?kind=blob&container=inputs&name=scene%2Fa.bin")
            .status,
        404
    );

    // A task's files and output, from its node.
    local_pool(&client, "render", 1, 1).await;
    nodes_up(&client, "render", 1).await;
    create_job(&client, "frames", "render").await;
    add(
        &client,
        "frames",
        vec![
            shell(
                "t1",
                "echo hello-out; echo oops >&2; printf 'result' > r.txt",
            ),
            shell("t2", "exit 4"),
        ],
    )
    .await;
    wait_job(&client, "frames", Duration::from_secs(60)).await;
    let out = a.get("/api/output?job=frames&task=t1&stream=stdout").json();
    assert_eq!(out["text"], "hello-out\n");
    assert_eq!(out["completed"], true);
    let err = a.get("/api/output?job=frames&task=t1&stream=stderr").json();
    assert_eq!(err["text"], "oops\n");
    let file = a.get("/api/download?kind=task&job=frames&task=t1&path=wd%2Fr.txt");
    assert_eq!(file.status, 200, "{}", file.text());
    assert_eq!(file.text(), "result");
    let outside =
        a.get("/api/download?kind=task&job=frames&task=t1&path=..%2F..%2F..%2Fcredential");
    assert!(outside.status >= 400, "{}", outside.text());
    let csv = a.get("/api/tasks.csv?job=frames");
    assert_eq!(csv.status, 200);
    let csv = csv.text();
    assert!(csv.starts_with("id,state,exit_code"), "{csv}");
    assert!(csv.contains("\nt1,completed,0,,"), "{csv}");
    assert!(csv.contains("\nt2,completed,4,non_zero_exit,"), "{csv}");
}

/// One request over TLS, the server's certificate pinned.
async fn https(server: &ServerProcess, addr: &str, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fp = lote::api::tls::parse_fingerprint(&server.tls_fingerprint()).unwrap();
    let trust = lote::api::tls::Trust::Fingerprint(fp);
    let lote::api::tls::Transport::Tls { config, name } =
        lote::api::tls::Transport::choose(addr, Some(&trust), false).unwrap()
    else {
        panic!("TLS")
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_speaks_https_where_plaintext_is_not_allowed() {
    let mut server = ServerProcess::start(&["--plaintext", "never"]);
    server.pin_tls();
    let addr = console(&server);
    let plain = http(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(plain.status, 400);
    assert!(
        plain.text().contains("only TLS") && plain.text().contains("HTTPS"),
        "{}",
        plain.text()
    );
    let ok = https(
        &server,
        &addr,
        format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let (_, key, _) = server.account("acme").await;
    let body = serde_json::json!({ "account": "acme", "key": key }).to_string();
    let signed = https(
        &server,
        &addr,
        format!("POST /api/session HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()),
    )
    .await;
    assert!(signed.starts_with("HTTP/1.1 200"), "{signed}");
    let cookie = signed
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[test]
fn no_http_serves_no_console_and_a_taken_port_is_named() {
    let server = ServerProcess::start(&["--no-http"]);
    assert!(server.console.is_none());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let err = ServerProcess::start_in(&dir.path().join("d"), &["--http-listen", &port])
        .err()
        .expect("refused");
    assert!(
        err.contains("--http-listen") && err.contains("--no-http"),
        "{err}"
    );
}

#[test]
fn hostile_connections_are_answered_or_closed_and_the_console_stays_up() {
    use std::io::{Read, Write};
    let server = ServerProcess::start(&[]);
    let addr = console(&server);
    let exchange = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    // Garbage instead of a request line.
    let r = exchange(b"\x00\x01\x02 not http at all\r\n\r\n");
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
    // A head far over the bound.
    let mut huge = b"GET /healthz HTTP/1.1\r\nx-pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 * 1024));
    huge.extend(b"\r\n\r\n");
    let r = exchange(&huge);
    assert!(
        r.is_empty() || r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 400"),
        "{}",
        &r[..r.len().min(200)]
    );
    // A head that never ends is closed after the header deadline.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after {:?}",
        started.elapsed()
    );
    // A session cookie that is not one, and an unknown page.
    let r = http(
        &addr,
        "GET",
        "/api/session",
        &[("cookie", "lote_session=forged")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(http(&addr, "GET", "/nowhere", &[], b"").status, 404);
    assert_eq!(http(&addr, "GET", "/ui/missing.js", &[], b"").status, 404);
    // Still serving, and a console route deep-links to the page.
    let page = http(&addr, "GET", "/ui/jobs/frames?state=failed", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/ui/app.js"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}
