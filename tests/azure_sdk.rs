//! Azure Batch's own Python SDK (azure-batch 15.1.0 from PyPI, pinned, in
//! a virtual environment this test makes once under
//! `~/.cache/lote/azure-venv`) runs ordinary user code against lote's
//! gateway (`tests/azure_sdk/batch_user.py`): pools, nodes, jobs, tasks
//! with files, task counts, autoscale evaluation, errors and paging.
//! Signatures are checked by the server as Azure checks them; raw HTTP
//! tests beside it try tampered, old-key, stale and cross-account requests.
//!
//! Without python3 the test says so and passes, except under CI
//! (`CI=true`), where it fails.

mod compute_support;
mod server_support;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use compute_support::*;
use server_support::*;

const SDK: &[&str] = &["azure-batch==15.1.0", "azure-core==1.41.0"];

fn venv() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
        .join(".cache/lote/azure-venv");
    let python = dir.join("bin/python");
    let ready = dir.join("ready-15.1.0");
    if ready.exists() {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 -m venv failed under CI: install python3-venv (scripts/deps.sh does)"
        );
        eprintln!("skipped: no python3 with venv here (scripts/deps.sh installs it)");
        return None;
    }
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(SDK)
        .status()
        .unwrap();
    assert!(pip.success(), "pip install {SDK:?} failed");
    std::fs::write(&ready, "").unwrap();
    Some(python)
}

/// Runs Python with `args`; it must succeed and print `expected`.
async fn run_python(python: PathBuf, args: Vec<String>, expected: &'static str) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(&args)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(expected),
        "the SDK's Python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn azure_key(server: &ServerProcess) -> String {
    let Ok(lote::api::Response::Keys { primary, .. }) = server
        .admin()
        .call(&lote::api::Request::ShowKeys {
            name: lote::types::AccountName::new("acme").unwrap(),
        })
        .await
    else {
        panic!("no keys")
    };
    lote::api::shared_key::azure_key(&primary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azures_own_sdk_runs_unchanged_against_lote() {
    let Some(python) = venv() else { return };
    let server = ServerProcess::start(&["--azure-listen", "127.0.0.1:0"]);
    let (_client, _key, _) = server.account("acme").await;
    let endpoint = format!(
        "http://{}",
        server.azure.clone().expect("the gateway's address")
    );
    let key = azure_key(&server).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azure_sdk/batch_user.py");
    let script = script.display().to_string();
    run_python(python, vec![script, endpoint, "acme".into(), key], "ok").await;
    // Every change it made is in the log, by the account.
    let trail = stop_and_audit(server, &["pool/acme/sdk-pool", "job/acme/sdk-job"]);
    assert!(trail.iter().any(|l| l.contains("PoolCreated")), "{trail:?}");
    assert!(
        trail.iter().any(|l| l.contains("by account:acme")),
        "{trail:?}"
    );
}

/// A signed request, made as the SDK makes it.
fn signed(
    method: &str,
    path_and_query: &str,
    account: &str,
    key: &[u8],
    date: &str,
    body: &[u8],
) -> Vec<u8> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut headers = vec![("ocp-date".to_string(), date.to_string())];
    if !body.is_empty() || method != "GET" {
        headers.push(("content-length".into(), body.len().to_string()));
    }
    if !body.is_empty() {
        headers.push((
            "content-type".into(),
            "application/json; odata=minimalmetadata".into(),
        ));
    }
    let r = lote::api::shared_key::Signed {
        method,
        path,
        query,
        headers: &headers,
    };
    let signature = lote::api::shared_key::sign(
        key,
        &lote::api::shared_key::string_to_sign(account, &r, "0"),
    );
    let mut out = format!("{method} {path_and_query} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: SharedKey {account}:{signature}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn send(addr: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn now() -> chrono::DateTime<chrono::Utc> {
    use lote::clock::Clock;
    lote::clock::SystemClock.now().to_datetime()
}

fn now_rfc1123() -> String {
    now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_as_azure_checks_them() {
    let server = ServerProcess::start(&[
        "--azure-listen",
        "127.0.0.1:0",
        "--azure-vm-size",
        "tiny=1:512",
    ]);
    let (client, _key, _) = server.account("acme").await;
    server.account("other").await;
    local_pool(&client, "mine", 0, 1).await;
    let addr = server.azure.clone().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(azure_key(&server).await).unwrap();
    let date = now_rfc1123();
    let get = "/pools/mine?api-version=2025-06-01";

    let (status, body) = send(&addr, &signed("GET", get, "acme", &key, &date, b"")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"id\":\"mine\"") && body.contains("\"state\":\"active\""),
        "{body}"
    );

    // A tampered path: the signature no longer holds.
    let mut tampered = signed("GET", get, "acme", &key, &date, b"");
    let at = tampered.windows(4).position(|w| w == b"mine").unwrap();
    tampered[at..at + 4].copy_from_slice(b"mino");
    let (status, body) = send(&addr, &tampered).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AuthenticationFailed"), "{body}");

    // A key that was regenerated no longer signs.
    let admin = server.admin();
    admin
        .call(&lote::api::Request::RegenerateKey {
            name: lote::types::AccountName::new("acme").unwrap(),
            key: lote::domain::account::KeyKind::Primary,
        })
        .await
        .unwrap();
    let (status, _) = send(&addr, &signed("GET", get, "acme", &key, &date, b"")).await;
    assert_eq!(status, 403, "an old key still signs");
    let key = b64.decode(azure_key(&server).await).unwrap();

    // A date outside the 15-minute window.
    let stale = (now() - chrono::Duration::minutes(20))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let (status, body) = send(&addr, &signed("GET", get, "acme", &key, &stale, b"")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("15 minutes"), "{body}");

    // Another account's pool is not found, as anywhere in lote.
    let other = server.admin();
    let Ok(lote::api::Response::Keys { primary, .. }) = other
        .call(&lote::api::Request::ShowKeys {
            name: lote::types::AccountName::new("other").unwrap(),
        })
        .await
    else {
        panic!()
    };
    let other_key = lote::api::shared_key::key_bytes(&primary);
    let (status, body) = send(&addr, &signed("GET", get, "other", &other_key, &date, b"")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("PoolNotFound"), "{body}");

    // An unknown api-version, in Azure's error shape.
    let old = "/pools?api-version=2019-01-01";
    let (status, body) = send(&addr, &signed("GET", old, "acme", &key, &date, b"")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("InvalidQueryParameterValue") && body.contains("2025-06-01"),
        "{body}"
    );

    // VM sizes are the server's: a configured one makes that node size,
    // another is refused with the list.
    let body = br#"{"id": "t1", "vmSize": "tiny", "targetDedicatedNodes": 0}"#;
    let post = "/pools?api-version=2025-06-01";
    let create_id = "6f1c2a4e-0b7d-11f1-9c3e-0242ac120002";
    let create = with_client_id(signed("POST", post, "acme", &key, &date, body), create_id);
    let (status, text) = send(&addr, &create).await;
    assert_eq!(status, 201, "{text}");
    assert!(
        text.contains(create_id),
        "the client's id is echoed: {text}"
    );
    // A change that is not a create is recorded under the client's id too.
    let resize_id = "7a2d3b5f-0b7d-11f1-9c3e-0242ac120002";
    let resize = br#"{"targetDedicatedNodes": 0}"#;
    let path = "/pools/t1/resize?api-version=2025-06-01";
    let request = with_client_id(signed("POST", path, "acme", &key, &date, resize), resize_id);
    let (status, text) = send(&addr, &request).await;
    assert_eq!(status, 202, "{text}");
    let one = "/pools/t1?api-version=2025-06-01";
    let (_, text) = send(&addr, &signed("GET", one, "acme", &key, &date, b"")).await;
    assert!(text.contains("\"vmSize\":\"tiny\""), "{text}");
    let body = br#"{"id": "t2", "vmSize": "standard_d2s_v3"}"#;
    let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, body)).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("InvalidPropertyValue") && text.contains("tiny"),
        "{text}"
    );

    // What lote cannot keep is refused, naming it, not dropped.
    let body =
        br#"{"id": "t3", "vmSize": "tiny", "metadata": [{"name": "team", "value": "render"}]}"#;
    let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, body)).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("metadata") && text.contains("no pool metadata"),
        "{text}"
    );
    let body = br#"{"id": "t4", "vmSize": "tiny", "metadata": [], "userAccounts": []}"#;
    let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, body)).await;
    assert_eq!(status, 201, "empty lists ask for nothing: {text}");

    // A body longer than its signed length is refused.
    let mut lying = signed(
        "POST",
        "/pools?api-version=2025-06-01",
        "acme",
        &key,
        &date,
        b"{}",
    );
    lying.extend_from_slice(b"  ");
    let text = String::from_utf8_lossy(&lying).replace("content-length: 2", "content-length: 4");
    let (status, _) = send(&addr, text.as_bytes()).await;
    assert_eq!(status, 403, "a changed length breaks the signature");

    // The audit trail names the client's request ids.
    let trail = stop_and_audit(server, &["pool/acme/t1"]).join("\n");
    assert!(
        trail.contains(create_id) && trail.contains(resize_id),
        "{trail}"
    );
}

/// A request with a `client-request-id` header (not signed, as in Azure).
fn with_client_id(request: Vec<u8>, id: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(&request).into_owned();
    let (first, rest) = text.split_once("\r\n").unwrap();
    format!("{first}\r\nclient-request-id: {id}\r\n{rest}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_speaks_https_where_plaintext_is_not_allowed() {
    let Some(python) = venv() else { return };
    let mut server =
        ServerProcess::start(&["--plaintext", "never", "--azure-listen", "127.0.0.1:0"]);
    server.pin_tls();
    server.account("acme").await;
    let addr = server.azure.clone().expect("the gateway's address");
    // Plain HTTP is answered, readably, that HTTPS is needed.
    let (status, body) = send(
        &addr,
        b"GET /pools?api-version=2025-06-01 HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTPS"), "{body}");
    let key = azure_key(&server).await;
    let cert = server.data_dir.join("tls/cert.pem");
    let code = format!(
        "from azure.batch import BatchClient\nfrom azure.core.credentials import AzureNamedKeyCredential\n\
         c = BatchClient('https://{addr}', AzureNamedKeyCredential('acme', '{key}'), connection_verify='{}')\n\
         print('pools', len(list(c.list_pools())))\n",
        cert.display()
    );
    run_python(python, vec!["-c".into(), code], "pools 0").await;
}

/// A header's value in a raw HTTP response.
fn response_header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts which first answer a response repeats (`None`: it ran).
fn assert_answer_of(text: &str, first: Option<&str>) {
    assert_eq!(response_header(text, "lote-answer-of"), first, "{text}");
}

/// Polls a pool with fresh signatures until its GET answers `status`.
async fn wait_pool_status(addr: &str, key: &[u8], pool: &str, status: u16) {
    let path = format!("/pools/{pool}?api-version=2025-06-01");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let request = signed("GET", &path, "acme", key, &now_rfc1123(), b"");
        let (got, text) = send(addr, &request).await;
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pool {pool} still answers {got}: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_change_gets_its_first_answer_and_is_done_once() {
    let flags = [
        "--azure-listen",
        "127.0.0.1:0",
        "--azure-vm-size",
        "tiny=1:512",
    ];
    let server = ServerProcess::start(&flags);
    let (client, _, _) = server.account("acme").await;
    let addr = server.azure.clone().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(azure_key(&server).await).unwrap();
    let date = now_rfc1123();
    let post = "/pools?api-version=2025-06-01";
    let body = br#"{"id": "again", "vmSize": "tiny", "targetDedicatedNodes": 0}"#;
    let create = signed("POST", post, "acme", &key, &date, body);
    let first_id = "0a6e1f52-0b7d-11f1-9c3e-0242ac120002";
    let (status, first) = send(&addr, &with_client_id(create.clone(), first_id)).await;
    assert_eq!(status, 201, "{first}");
    let first_request = response_header(&first, "request-id").unwrap().to_string();
    assert_answer_of(&first, None);

    // The SDK's retry keeps its client id: the first answer, nothing made.
    let (status, retry) = send(&addr, &with_client_id(create.clone(), first_id)).await;
    assert_eq!(status, 201, "{retry}");
    assert_answer_of(&retry, Some(&first_request));
    // Another call in the same second (a new client id) signs the same: it
    // runs, as a setup script that creates twice expects.
    let second_id = "3d914285-0b7d-11f1-9c3e-0242ac120002";
    let (status, text) = send(&addr, &with_client_id(create.clone(), second_id)).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("PoolExists"), "{text}");

    // Its owner deletes the pool; later, a copy of the create, sent with a
    // client id of the sender's choosing, gets the first answer and makes
    // nothing.
    let delete = "/pools/again?api-version=2025-06-01";
    let (status, text) = send(&addr, &signed("DELETE", delete, "acme", &key, &date, b"")).await;
    assert_eq!(status, 202, "{text}");
    wait_pool_status(&addr, &key, "again", 404).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let replayer_id = "1b7f2063-0b7d-11f1-9c3e-0242ac120002";
    let (status, again) = send(&addr, &with_client_id(create.clone(), replayer_id)).await;
    assert_eq!(status, 201, "{again}");
    assert_answer_of(&again, Some(&first_request));
    assert_eq!(
        response_header(&again, "client-request-id"),
        Some(replayer_id)
    );
    wait_pool_status(&addr, &key, "again", 404).await;

    // Two different bodies of the same length under one signature (the
    // signature covers the length only) are two requests.
    let a = br#"{"id": "pa", "vmSize": "tiny", "targetDedicatedNodes": 0}"#;
    let b = br#"{"id": "pb", "vmSize": "tiny", "targetDedicatedNodes": 0}"#;
    for body in [a, b] {
        let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, body)).await;
        assert_eq!(status, 201, "{text}");
        assert_answer_of(&text, None);
    }
    wait_pool_status(&addr, &key, "pb", 200).await;

    // A refused change is not kept: once what refused it is gone, the same
    // request runs.
    local_pool(&client, "pe", 0, 1).await;
    let e = br#"{"id": "pe", "vmSize": "tiny", "targetDedicatedNodes": 0}"#;
    let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, e)).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("PoolExists"), "{text}");
    let delete = "/pools/pe?api-version=2025-06-01";
    let (status, text) = send(&addr, &signed("DELETE", delete, "acme", &key, &date, b"")).await;
    assert_eq!(status, 202, "{text}");
    wait_pool_status(&addr, &key, "pe", 404).await;
    let (status, text) = send(&addr, &signed("POST", post, "acme", &key, &date, e)).await;
    assert_eq!(status, 201, "{text}");
    assert_answer_of(&text, None);
    wait_pool_status(&addr, &key, "pe", 200).await;

    // A restart keeps the answers: the copy still makes nothing.
    let server = server.restart_with(&flags);
    let addr = server.azure.clone().unwrap();
    let (status, again) = send(&addr, &with_client_id(create, replayer_id)).await;
    assert_eq!(status, 201, "{again}");
    assert_answer_of(&again, Some(&first_request));
    wait_pool_status(&addr, &key, "again", 404).await;
    drop(server);
}
