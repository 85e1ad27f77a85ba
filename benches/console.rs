//! The console at scale: how long the requests behind each page take with
//! a pool of `--nodes` nodes (1,000) and a job of `--tasks` queued tasks
//! (100,000), over the console's own HTTP with a signed-in session.
//!
//!   cargo bench --bench console
//!   cargo bench --bench console -- --nodes 1000 --tasks 100000
//!
//! The nodes join a remote pool the way agents do (a join token per call)
//! and never run anything, so every task stays queued: the job page must
//! page and summarise 100,000 tasks on the server. Each page's figure is
//! the sum of its requests, as its view sends them; the goal is under a
//! second. Without `--bench` it is a quick smoke run of itself.

mod common;

use std::io::{Read, Write};
use std::time::Instant;

use common::{arg, must, new_account, smoke};
use lote::api::{Credential, Request, Response};
use lote::client::{Client, ClientConfig};
use lote::domain::job::JobSpec;
use lote::domain::pool::{NodeProvider, PoolSpec};
use lote::domain::spec::CommandLine;
use lote::domain::task::TaskSpec;
use lote::server::{Embedded, ServerConfig};
use lote::store::Durability;
use lote::types::{AccountName, JobId, PoolId, TaskId};

/// One of a page's requests, timed: (status, body, milliseconds).
type Timed<'a> = Box<dyn Fn() -> (u16, String, f64) + 'a>;

/// One request over a fresh connection; (status, body, milliseconds).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: &str,
    body: &str,
) -> (u16, String, f64) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncookie: {cookie}\r\nx-lote-csrf: {csrf}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, ms)
}

fn main() {
    let smoke = smoke();
    let nodes = arg("--nodes", if smoke { 50 } else { 1000 });
    let tasks = arg("--tasks", if smoke { 2000 } else { 100_000 });
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0");
    config.durability = Durability::Buffered;
    config.http_listen = Some("127.0.0.1:0".into());
    // Nodes that never poll stay in the pool (as lost) while we measure.
    let server = Embedded::start(config).expect("server");
    let addr = server.addr.to_string();
    let console = server.console.expect("a console").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let account = AccountName::new("bench").unwrap();
    let pool = PoolId::new("big").unwrap();
    let job = JobId::new("huge").unwrap();
    let key = runtime.block_on(async {
        let key = new_account(&addr, &server.admin_key, &account, None).await;
        let client = Client::new(ClientConfig::new(
            addr.clone(),
            Credential::Account {
                account: account.clone(),
            },
            key.clone(),
        ));
        let spec = PoolSpec {
            provider: NodeProvider::Remote,
            node_count_max: nodes as u32 + 10,
            ..PoolSpec::fixed(pool.clone(), account.clone(), nodes as u32, 4)
        };
        must(
            &client,
            Request::CreatePool {
                spec,
                request_id: None,
            },
        )
        .await;
        let Response::JoinToken { token, .. } =
            must(&client, Request::ShowJoinToken { pool: pool.clone() }).await
        else {
            panic!("a join token")
        };
        let token = token.split('@').next().unwrap().to_string();
        let joiner = Client::new(ClientConfig::new(
            addr.clone(),
            Credential::Join {
                account: account.clone(),
                pool: pool.clone(),
            },
            token,
        ));
        let started = Instant::now();
        for i in 0..nodes {
            must(
                &joiner,
                Request::JoinPool {
                    name: format!("n{i}"),
                },
            )
            .await;
        }
        eprintln!(
            "{nodes} nodes joined in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let spec = JobSpec::on_pool(job.clone(), account.clone(), pool.clone());
        must(
            &client,
            Request::CreateJob {
                spec,
                request_id: None,
            },
        )
        .await;
        let started = Instant::now();
        for batch in 0..tasks.div_ceil(1000) {
            let specs = (batch * 1000..((batch + 1) * 1000).min(tasks))
                .map(|i| {
                    TaskSpec::simple(
                        TaskId::new(format!("t{i:06}")).unwrap(),
                        CommandLine::Shell("true".into()),
                    )
                })
                .collect();
            let add = Request::AddTasks {
                job: job.clone(),
                tasks: specs,
                request_id: None,
            };
            must(&client, add).await;
        }
        eprintln!(
            "{tasks} tasks added in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        key
    });
    let sign_in = format!(r#"{{"account":"bench","key":"{key}"}}"#);
    let mut s = std::net::TcpStream::connect(&console).unwrap();
    write!(s, "POST /api/session HTTP/1.1\r\nhost: {console}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{sign_in}", sign_in.len()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let cookie = raw
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = raw
        .split("\"csrf\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let call = |body: &str| http(&console, "POST", "/api/call", &cookie, &csrf, body);
    let get = |path: &str| http(&console, "GET", path, &cookie, &csrf, "");

    let pages: Vec<(&str, Vec<(String, Timed)>)> = vec![
        (
            "pool page",
            vec![
                (
                    "ShowPool".into(),
                    Box::new(|| call(r#"{"ShowPool":{"pool":"big"}}"#)),
                ),
                (
                    format!("ListNodes ({nodes})"),
                    Box::new(|| call(r#"{"ListNodes":{"pool":"big"}}"#)),
                ),
                (
                    "pool samples".into(),
                    Box::new(|| get("/api/pool-samples?pool=big")),
                ),
                (
                    "AutoscaleHistory".into(),
                    Box::new(|| call(r#"{"AutoscaleHistory":{"pool":"big","limit":50}}"#)),
                ),
            ],
        ),
        (
            "job page",
            vec![
                (
                    "ShowJob".into(),
                    Box::new(|| call(r#"{"ShowJob":{"job":"huge"}}"#)),
                ),
                (
                    "wait reasons".into(),
                    Box::new(|| get("/api/waits?job=huge")),
                ),
                (
                    "first task page (50)".into(),
                    Box::new(|| get("/api/tasks?job=huge&limit=50")),
                ),
            ],
        ),
        (
            "job page, filtered to a state no task has",
            vec![(
                "tasks?state=completed".into(),
                Box::new(|| get("/api/tasks?job=huge&state=completed&limit=50")),
            )],
        ),
        (
            "jobs list",
            vec![("ListJobs".into(), Box::new(|| call(r#""ListJobs""#)))],
        ),
        (
            "overview",
            vec![
                ("ListPools".into(), Box::new(|| call(r#""ListPools""#))),
                ("ListJobs".into(), Box::new(|| call(r#""ListJobs""#))),
                (
                    format!("ListNodes ({nodes})"),
                    Box::new(|| call(r#"{"ListNodes":{"pool":"big"}}"#)),
                ),
            ],
        ),
    ];
    println!("console pages, {nodes} nodes, {tasks} queued tasks (each request timed 3 times; the best and worst)");
    for (page, requests) in &pages {
        let (mut best_total, mut worst_total) = (0.0, 0.0);
        let mut lines = Vec::new();
        for (name, request) in requests {
            let runs: Vec<(u16, String, f64)> = (0..3).map(|_| request()).collect();
            for (status, body, _) in &runs {
                assert_eq!(*status, 200, "{name}: {body}");
            }
            let best = runs.iter().map(|r| r.2).fold(f64::MAX, f64::min);
            let worst = runs.iter().map(|r| r.2).fold(0.0, f64::max);
            let bytes = runs[0].1.len();
            best_total += best;
            worst_total += worst;
            lines.push(format!(
                "    {name}: {best:.1} - {worst:.1} ms, {bytes} bytes"
            ));
        }
        println!("  {page}: {best_total:.0} - {worst_total:.0} ms");
        for l in lines {
            println!("{l}");
        }
    }
    server.stop().unwrap();
}
