//! What every benchmark binary shares: its arguments and smoke mode.
#![allow(dead_code)]

// The allocator the `lote` binary uses, so a server measured inside a
// benchmark process costs what it costs in `lote server`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
/// then a benchmark runs as a quick smoke test of itself.
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The word after `name` on the command line.
pub fn arg_value(name: &str) -> Option<String> {
    let mut args = std::env::args();
    args.position(|a| a == name)?;
    args.next()
}

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    arg_value(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A scratch directory under the directory given after `flag`, if any.
pub fn scratch_dir_in(flag: &str) -> Option<tempfile::TempDir> {
    arg_value(flag).map(|dir| {
        tempfile::tempdir_in(&dir)
            .unwrap_or_else(|e| panic!("a scratch directory under {flag} {dir}: {e}"))
    })
}

/// A scratch directory under `--dir DIR` when given (to measure on a chosen
/// filesystem), else under the system's temporary directory.
pub fn scratch_dir() -> tempfile::TempDir {
    scratch_dir_in("--dir").unwrap_or_else(|| tempfile::tempdir().expect("a scratch directory"))
}

/// With `--tls`: trust in the certificate the server in `data_dir` made
/// (clients pin it); None: plaintext on loopback.
#[allow(dead_code)]
pub fn tls_trust(data_dir: &std::path::Path) -> Option<lote::api::tls::Trust> {
    if !std::env::args().any(|a| a == "--tls") {
        return None;
    }
    let fp = lote::server::tls::certificate_fingerprint(&data_dir.join("tls/cert.pem"))
        .expect("the server's certificate");
    Some(lote::api::tls::Trust::Fingerprint(
        lote::api::tls::parse_fingerprint(&fp).unwrap(),
    ))
}

/// Creates account `name` with the admin key; returns its primary key.
pub async fn new_account(
    addr: &str,
    admin_key: &str,
    name: &lote::types::AccountName,
    trust: Option<lote::api::tls::Trust>,
) -> String {
    use lote::api::{Credential, Request, Response};
    use lote::client::{Client, ClientConfig};
    let admin = Client::new(
        ClientConfig::new(addr.to_string(), Credential::Admin, admin_key.to_string())
            .with_trust(trust),
    );
    admin
        .call(&Request::CreateAccount {
            name: name.clone(),
            request_id: None,
        })
        .await
        .unwrap();
    let Response::Keys { primary, .. } = admin
        .call(&Request::ShowKeys { name: name.clone() })
        .await
        .unwrap()
    else {
        panic!("keys")
    };
    primary
}

/// A request of a benchmark's set-up, which must succeed.
pub async fn must(
    client: &lote::client::Client,
    request: lote::api::Request,
) -> lote::api::Response {
    match client.call(&request).await {
        Ok(response) => response,
        Err(e) => panic!("{}: {e}", request.name()),
    }
}

pub mod instant_agent;
pub mod server_process;

/// A task's whole life as a busy log records it: added, assigned to
/// `node`, started and succeeded, all at `at`.
pub fn finished_task_events(
    account: &lote::types::AccountName,
    job: &lote::types::JobId,
    pool: &lote::types::PoolId,
    spec: lote::domain::task::TaskSpec,
    node: &str,
    at: lote::types::Timestamp,
) -> [lote::domain::task::TaskEvent; 4] {
    use lote::domain::task::{Placement, TaskEvent, TaskResult};
    [
        TaskEvent::TaskAdded {
            account: account.clone(),
            job: job.clone(),
            pool: pool.clone(),
            spec,
            max_task_retries: 0,
            at,
        },
        TaskEvent::TaskAssigned {
            placement: Placement {
                pool: pool.clone(),
                node: lote::types::NodeId::new(node).unwrap(),
            },
            attempt: 1,
            at,
        },
        TaskEvent::TaskStarted { attempt: 1, at },
        TaskEvent::TaskCompleted {
            attempt: 1,
            result: TaskResult {
                exit_code: Some(0),
                signal: None,
                duration_ms: 1000,
                failure: None,
            },
            at,
        },
    ]
}
