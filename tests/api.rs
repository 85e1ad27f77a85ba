//! End to end through the real server binary on 127.0.0.1:0: signing,
//! isolation, idempotency, hostile connections, shutdown.

mod server_support;

use std::collections::BTreeMap;
use std::time::Duration;

use lote::api::auth::{sign, Signed};
use lote::api::{
    ApiError, AttemptRef, Call, ClientFrame, Completion, Credential, ErrorKind, Hello, Request,
    Response, ServerFrame, MAGIC, PROTOCOL_VERSION,
};
use lote::client::call_frame;
use lote::domain::account::KeyKind;
use lote::domain::job::{DisableTasks, JobSpec};
use lote::domain::pool::{Deallocation, NodeProvider, PoolSpec, ResizeState};
use lote::domain::spec::CommandLine;
use lote::domain::task::{TaskResult, TaskSpec, TaskStatus};
use lote::domain::{EnvVar, RejectionCode};
use lote::types::{AccountName, JobId, NodeId, PoolId, TaskId};
use server_support::*;

fn pool_spec(id: &str) -> PoolSpec {
    PoolSpec {
        provider: NodeProvider::Remote,
        ..PoolSpec::fixed(
            PoolId::new(id).unwrap(),
            AccountName::new("ignored").unwrap(),
            1,
            2,
        )
    }
}

fn job_spec(id: &str, pool: &str) -> JobSpec {
    JobSpec::on_pool(
        JobId::new(id).unwrap(),
        AccountName::new("ignored").unwrap(),
        PoolId::new(pool).unwrap(),
    )
}

async fn create_pool(client: &lote::client::Client, id: &str) {
    client
        .call(&Request::CreatePool {
            spec: pool_spec(id),
            request_id: None,
        })
        .await
        .unwrap();
}

async fn create_job(client: &lote::client::Client, id: &str, pool: &str) {
    client
        .call(&Request::CreateJob {
            spec: job_spec(id, pool),
            request_id: None,
        })
        .await
        .unwrap();
}

fn task(id: &str) -> TaskSpec {
    TaskSpec::simple(
        TaskId::new(id).unwrap(),
        CommandLine::Shell(format!("echo {id}")),
    )
}

/// The token a join-token request (show or rotate) answers with, without
/// the server certificate's fingerprint it carries (checked here).
async fn join_token_of(client: &lote::client::Client, request: Request) -> String {
    match client.call(&request).await.unwrap() {
        Response::JoinToken { token, .. } => {
            let (token, fingerprint) = lote::api::tls::split_join_token(&token);
            let fingerprint = fingerprint.expect("a join token carries the fingerprint");
            assert!(
                lote::api::tls::parse_fingerprint(fingerprint).is_ok(),
                "{fingerprint}"
            );
            token.to_string()
        }
        other => panic!("expected a join token, got {other:?}"),
    }
}

/// Joins the joiner's pool as `host-1`: the node and its credential.
async fn join_pool(joiner: &lote::client::Client) -> (NodeId, String) {
    let Response::Joined { node, credential } = joiner
        .call(&Request::JoinPool {
            name: "host-1".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    (node, credential)
}

fn account_cred(name: &str) -> Credential {
    Credential::Account {
        account: AccountName::new(name).unwrap(),
    }
}

fn kind(result: &Result<Response, ApiError>) -> Option<ErrorKind> {
    result.as_ref().err().map(|e| e.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_refuse_tampering_wrong_and_old_keys_replays_and_stale_times() {
    let server = ServerProcess::start(&[]);
    let (client, primary, secondary) = server.account("acme").await;
    assert!(matches!(
        client.call(&Request::ListPools).await.unwrap(),
        Response::Pools(p) if p.is_empty()
    ));
    let acme = account_cred("acme");
    // A ListPools call signed with `key` for `raw`'s connection.
    let list_pools = |id: u64, key: &str, raw: &Raw| {
        call_frame(
            id,
            &acme,
            key,
            now_micros(),
            &raw.challenge,
            &Request::ListPools,
        )
        .unwrap()
    };
    let request = Request::CreatePool {
        spec: pool_spec("p1"),
        request_id: None,
    };

    // Every single-bit change of a valid call, and appended bytes: none is
    // accepted. (A change that breaks decoding ends the connection; a
    // change inside the signed parts fails the signature.)
    let valid_for = |raw: &Raw| {
        call_frame(1, &acme, &primary, now_micros(), &raw.challenge, &request).unwrap()[4..]
            .to_vec()
    };
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut raw = Raw::ready(&server.addr).await;
    let bits = valid_for(&raw).len() * 8;
    for bit in 0..bits {
        // Signed for this connection (a new one has a new challenge).
        let mut copy = valid_for(&raw);
        copy[bit / 8] ^= 1 << (bit % 8);
        let result = raw.exchange(&framed(&copy)).await;
        assert!(
            result.is_err(),
            "bit {bit} flipped was accepted: {result:?}"
        );
        *refused
            .entry(format!("{:?}", kind(&result).unwrap()))
            .or_default() += 1;
        if matches!(
            kind(&result),
            Some(ErrorKind::Malformed | ErrorKind::HandshakeRequired | ErrorKind::Internal)
        ) {
            raw = Raw::ready(&server.addr).await;
        }
    }
    assert!(
        refused.get("BadSignature").copied().unwrap_or(0) > 100,
        "{refused:?}"
    );
    // Bytes appended after the message, inside the frame.
    let mut raw = Raw::ready(&server.addr).await;
    let body = valid_for(&raw);
    let mut longer = body.clone();
    longer.extend_from_slice(b"\0\0\0\0");
    assert_eq!(
        kind(&raw.exchange(&framed(&longer)).await),
        Some(ErrorKind::Malformed)
    );
    // Bytes appended to the signed body: the signature no longer matches.
    let mut raw = Raw::ready(&server.addr).await;
    let body = valid_for(&raw);
    let ClientFrame::Call(call) = lote::codec::decode_message::<ClientFrame>(&body).unwrap() else {
        panic!()
    };
    let mut padded = call.clone();
    padded.body.push(0);
    assert_eq!(
        kind(
            &raw.exchange(&encode_frame(&ClientFrame::Call(padded)))
                .await
        ),
        Some(ErrorKind::BadSignature)
    );
    // Bulk bytes (an upload chunk's) are outside the signature, but their
    // length is inside it: bytes added beside a call fail it.
    let mut raw = Raw::ready(&server.addr).await;
    let ClientFrame::Call(call) =
        lote::codec::decode_message::<ClientFrame>(&valid_for(&raw)).unwrap()
    else {
        panic!()
    };
    let mut bulky = call.clone();
    bulky.bulk = vec![1, 2, 3];
    assert_eq!(
        kind(
            &raw.exchange(&encode_frame(&ClientFrame::Call(bulky.clone())))
                .await
        ),
        Some(ErrorKind::BadSignature)
    );
    // Signed with them, on a request that takes none: malformed.
    let mut raw = Raw::ready(&server.addr).await;
    bulky.auth = sign(
        &primary,
        &raw.challenge,
        bulky.id,
        acme.clone(),
        now_micros(),
        [3; 16],
        Signed {
            body: &bulky.body,
            bulk_len: 3,
        },
    );
    assert_eq!(
        kind(&raw.exchange(&encode_frame(&ClientFrame::Call(bulky))).await),
        Some(ErrorKind::Malformed)
    );
    // None of it created anything.
    assert!(matches!(
        client.call(&Request::ListPools).await.unwrap(),
        Response::Pools(p) if p.is_empty()
    ));

    // Wrong key; unknown account.
    let mut raw = Raw::ready(&server.addr).await;
    let c = raw.challenge;
    let wrong = call_frame(
        2,
        &acme,
        "not-the-key",
        now_micros(),
        &c,
        &Request::ListPools,
    )
    .unwrap();
    assert_eq!(
        kind(&raw.exchange(&wrong).await),
        Some(ErrorKind::BadSignature)
    );
    let nobody = call_frame(
        3,
        &account_cred("nobody"),
        &primary,
        now_micros(),
        &c,
        &Request::ListPools,
    )
    .unwrap();
    assert_eq!(
        kind(&raw.exchange(&nobody).await),
        Some(ErrorKind::BadSignature)
    );

    // Replay: the same frame twice.
    let once = call_frame(4, &acme, &primary, now_micros(), &c, &Request::ListPools).unwrap();
    assert!(raw.exchange(&once).await.is_ok());
    assert_eq!(
        kind(&raw.exchange(&once).await),
        Some(ErrorKind::NonceReplayed)
    );
    // On another connection it does not even verify: its signature covers
    // the first connection's challenge.
    let mut other = Raw::ready(&server.addr).await;
    assert_eq!(
        kind(&other.exchange(&once).await),
        Some(ErrorKind::BadSignature)
    );

    // Timestamps outside the 15-minute window, either side.
    let minute = 60 * 1_000_000;
    for skew in [-16 * minute, 16 * minute] {
        let stale = call_frame(
            5,
            &acme,
            &primary,
            now_micros() + skew,
            &c,
            &Request::ListPools,
        )
        .unwrap();
        assert_eq!(
            kind(&raw.exchange(&stale).await),
            Some(ErrorKind::ClockSkew)
        );
    }
    let inside = call_frame(
        6,
        &acme,
        &primary,
        now_micros() - 14 * minute,
        &c,
        &Request::ListPools,
    )
    .unwrap();
    assert!(raw.exchange(&inside).await.is_ok());

    // Regenerating the primary key: the old one stops at once, the
    // secondary keeps working, the new primary works.
    let admin = server.admin();
    admin
        .call(&Request::RegenerateKey {
            name: AccountName::new("acme").unwrap(),
            key: KeyKind::Primary,
        })
        .await
        .unwrap();
    let Response::Keys {
        primary: new_primary,
        secondary: same_secondary,
        ..
    } = admin
        .call(&Request::ShowKeys {
            name: AccountName::new("acme").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(new_primary, primary);
    assert_eq!(same_secondary, secondary);
    let old = list_pools(7, &primary, &raw);
    assert_eq!(
        kind(&raw.exchange(&old).await),
        Some(ErrorKind::BadSignature)
    );
    let sec = list_pools(8, &secondary, &raw);
    assert!(raw.exchange(&sec).await.is_ok());
    let new = list_pools(9, &new_primary, &raw);
    assert!(raw.exchange(&new).await.is_ok());

    // An account key is not the admin key, and the admin key is no
    // account key.
    let as_admin = call_frame(
        10,
        &Credential::Admin,
        &new_primary,
        now_micros(),
        &raw.challenge,
        &Request::ListAccounts,
    )
    .unwrap();
    assert_eq!(
        kind(&raw.exchange(&as_admin).await),
        Some(ErrorKind::BadSignature)
    );
    let err = client.call(&Request::ListAccounts).await;
    assert!(err.is_err());

    // A call captured before a restart: accepted once before it, refused
    // after it (its signature covers a challenge no new connection has).
    let captured = call_frame(
        13,
        &acme,
        &secondary,
        now_micros(),
        &raw.challenge,
        &Request::ResizePool {
            pool: PoolId::new("p1").unwrap(),
            target_nodes: 0,
            deallocation: Deallocation::Requeue,
        },
    )
    .unwrap();
    let before = raw.exchange(&captured).await;
    assert!(
        !matches!(
            kind(&before),
            Some(ErrorKind::BadSignature | ErrorKind::NonceReplayed | ErrorKind::ClockSkew)
        ),
        "{before:?}"
    );

    // The regeneration survives a restart.
    let again = server.restart();
    let mut raw = Raw::ready(&again.addr).await;
    assert_eq!(
        kind(&raw.exchange(&captured).await),
        Some(ErrorKind::BadSignature)
    );
    let old = list_pools(11, &primary, &raw);
    assert_eq!(
        kind(&raw.exchange(&old).await),
        Some(ErrorKind::BadSignature)
    );
    let new = list_pools(12, &new_primary, &raw);
    assert!(raw.exchange(&new).await.is_ok());
}

/// Every account operation on another account's objects, by id.
fn operations() -> Vec<Request> {
    let p = PoolId::new("shared-pool").unwrap();
    let j = JobId::new("shared-job").unwrap();
    let t = TaskId::new("shared-task").unwrap();
    let n = NodeId::new("shared-node").unwrap();
    vec![
        Request::ShowPool { pool: p.clone() },
        Request::ResizePool {
            pool: p.clone(),
            target_nodes: 3,
            deallocation: Deallocation::Requeue,
        },
        Request::StopResize { pool: p.clone() },
        Request::EnableAutoscale {
            pool: p.clone(),
            formula: "$TargetDedicatedNodes = 1;".into(),
            evaluation_interval_secs: 300,
        },
        Request::DisableAutoscale { pool: p.clone() },
        Request::ShowJoinToken { pool: p.clone() },
        Request::ListNodes { pool: p.clone() },
        Request::ShowNode {
            pool: p.clone(),
            node: n,
        },
        Request::CreateJob {
            spec: job_spec("my-job", "shared-pool"),
            request_id: None,
        },
        Request::ShowJob { job: j.clone() },
        Request::DisableJob {
            job: j.clone(),
            disable_tasks: DisableTasks::Requeue,
        },
        Request::EnableJob { job: j.clone() },
        Request::TerminateJob {
            job: j.clone(),
            reason: "x".into(),
        },
        Request::AddTasks {
            job: j.clone(),
            tasks: vec![task("intruder")],
            request_id: None,
        },
        Request::ListTasks {
            job: j.clone(),
            after: None,
            limit: 0,
        },
        Request::ShowTask {
            job: j.clone(),
            task: t.clone(),
        },
        Request::TerminateTask {
            job: j.clone(),
            task: t.clone(),
            reason: "x".into(),
        },
        Request::DeleteTask {
            job: j.clone(),
            task: t,
        },
        Request::DeleteJob { job: j },
        Request::DeletePool {
            pool: p,
            force: false,
        },
    ]
}

async fn replies(client: &lote::client::Client) -> Vec<String> {
    let mut out = Vec::new();
    for op in operations() {
        let reply = client.call(&op).await;
        out.push(format!(
            "{:?} -> {:?}",
            op.name(),
            reply.map_err(|e| e.to_string())
        ));
    }
    for list in [Request::ListPools, Request::ListJobs] {
        out.push(format!("{:?}", client.call(&list).await.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_objects_are_indistinguishable_from_missing_ones() {
    let server = ServerProcess::start(&[]);
    let (a, _, _) = server.account("alice").await;
    let (b, _, _) = server.account("bob").await;

    // What alice hears when nothing of that name exists anywhere...
    let before = replies(&a).await;
    for line in &before[..operations().len()] {
        assert!(line.contains("Err("), "succeeded without objects: {line}");
    }

    // ...bob creates all of it...
    create_pool(&b, "shared-pool").await;
    create_job(&b, "shared-job", "shared-pool").await;
    b.call(&Request::AddTasks {
        job: JobId::new("shared-job").unwrap(),
        tasks: vec![task("shared-task")],
        request_id: None,
    })
    .await
    .unwrap();
    let mut tail = a.tail(1).await.unwrap();

    // ...and alice hears exactly the same, byte for byte.
    let after = replies(&a).await;
    assert_eq!(before, after);

    // Bob's objects are untouched; alice's tail saw nothing of bob's.
    let job = show_job(&b, "shared-job").await;
    assert_eq!(job.state.tasks_added, 1);
    let Response::Pool(pool) = b
        .call(&Request::ShowPool {
            pool: PoolId::new("shared-pool").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(pool.state.target_nodes, 1);
    create_pool(&a, "alice-pool").await;
    // Alice's tail from the log's start: her own account's events, then
    // her pool, and nothing of bob's in between.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), tail.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            !event.entity.contains("bob") && !event.data.contains("bob"),
            "{event:?}"
        );
        assert!(event.entity.contains("/alice"), "{event:?}");
        if event.entity.starts_with("pool/alice/") {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_creates_once_even_across_a_restart() {
    let server = ServerProcess::start(&[]);
    let (client, primary, _) = server.account("acme").await;
    let client = std::sync::Arc::new(client);
    let id = uuid::Uuid::from_u128(42);
    let create = Request::CreatePool {
        spec: pool_spec("once"),
        request_id: Some(id),
    };
    // 1,000 sends: 10 concurrent senders of 100 each.
    let mut senders = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        let create = create.clone();
        senders.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..100 {
                replies.push(client.call(&create).await);
            }
            replies
        }));
    }
    let mut created = 0;
    for s in senders {
        for reply in s.await.unwrap() {
            assert_eq!(
                reply.unwrap(),
                Response::Created {
                    entity: "pool/acme/once".into()
                }
            );
            created += 1;
        }
    }
    assert_eq!(created, 1000);
    // The pool supervisor completes the (remote) pool's initial resize
    // once; wait for that, then the stream must hold exactly those two.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pools = loop {
        let pools = list_pools(&client).await;
        if pools[0].state.resize == ResizeState::Steady || std::time::Instant::now() > deadline {
            break pools;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pools.len(), 1);
    assert_eq!(
        pools[0].version, 2,
        "one PoolCreated and one PoolResizeCompleted, nothing more"
    );

    // Same id, another body: refused.
    let other = Request::CreatePool {
        spec: pool_spec("twice"),
        request_id: Some(id),
    };
    let err = client.call(&other).await.unwrap_err();
    assert_eq!(
        err.api().unwrap().rejection,
        Some(RejectionCode::RequestIdReused)
    );

    // Batches of tasks too.
    create_job(&client, "j", "once").await;
    let batch = Request::AddTasks {
        job: JobId::new("j").unwrap(),
        tasks: (0..50).map(|i| task(&format!("t{i}"))).collect(),
        request_id: Some(uuid::Uuid::from_u128(7)),
    };
    for _ in 0..3 {
        assert_eq!(
            client.call(&batch).await.unwrap(),
            Response::TasksAdded {
                job: JobId::new("j").unwrap(),
                count: 50
            }
        );
    }

    // Listing pages through the 50 tasks in id order, 20 at a time.
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let Response::Tasks { items, next } = client
            .call(&Request::ListTasks {
                job: JobId::new("j").unwrap(),
                after: after.take(),
                limit: 20,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        pages += 1;
        assert!(items.len() <= 20);
        seen.extend(
            items
                .into_iter()
                .map(|t| t.state.spec.unwrap().id.to_string()),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((pages, seen.len()), (3, 50));
    assert_eq!(seen, sorted, "in id order, no repeats");

    // After a restart the records are still there.
    let again = server.restart();
    let client = again.client(account_cred("acme"), &primary);
    assert_eq!(
        client.call(&create).await.unwrap(),
        Response::Created {
            entity: "pool/acme/once".into()
        }
    );
    assert_eq!(
        rejection(client.call(&other).await),
        Some(RejectionCode::RequestIdReused)
    );
    client.call(&batch).await.unwrap();
    let job = show_job(&client, "j").await;
    assert_eq!(job.state.tasks_added, 50);
    let pools = list_pools(&client).await;
    assert_eq!(pools.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_hurt_only_themselves() {
    let server = ServerProcess::start(&[
        "--read-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "2",
        "--max-connections",
        "8",
    ]);
    let (client, _, _) = server.account("acme").await;
    client.connect().await.unwrap();

    // A client that says hello, then nothing: dropped when idle too long.
    let mut idle = Raw::ready(&server.addr).await;

    // Half a frame, then silence.
    let mut stalled = Raw::ready(&server.addr).await;
    stalled.send(&[0, 0, 1]).await;
    // Before the hello, too.
    let mut stalled_early = Raw::connect(&server.addr).await;
    stalled_early.send(&[0, 0]).await;

    // Others are served meanwhile.
    for _ in 0..200 {
        client.call(&Request::Ping).await.unwrap();
    }
    // And the stalled ones are dropped with a reason.
    match stalled.frame().await {
        Some(ServerFrame::Goodbye { error }) => assert_eq!(error.kind, ErrorKind::Timeout),
        other => panic!("expected a timeout goodbye, got {other:?}"),
    }
    assert!(stalled.closed_within(Duration::from_secs(5)).await);
    assert!(stalled_early.closed_within(Duration::from_secs(5)).await);

    // An oversized length prefix: refused at once, nothing allocated.
    let mut huge = Raw::ready(&server.addr).await;
    huge.send(&u32::MAX.to_be_bytes()).await;
    match huge.frame().await {
        Some(ServerFrame::Goodbye { error }) => assert_eq!(error.kind, ErrorKind::TooLarge),
        other => panic!("expected a too-large goodbye, got {other:?}"),
    }
    assert!(huge.closed_within(Duration::from_secs(5)).await);

    // Garbage in a well-formed frame.
    let mut garbage = Raw::ready(&server.addr).await;
    garbage.send(&framed(&[0xff; 64])).await;
    match garbage.frame().await {
        Some(ServerFrame::Goodbye { error }) => assert_eq!(error.kind, ErrorKind::Malformed),
        other => panic!("expected a malformed goodbye, got {other:?}"),
    }

    // Not lote at all, and a version from the future.
    let mut http = Raw::connect(&server.addr).await;
    http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        matches!(http.frame().await, Some(ServerFrame::Goodbye { error }) if error.kind == ErrorKind::TooLarge)
    );
    let mut future = Raw::connect(&server.addr).await;
    future
        .send(&encode_frame(&ClientFrame::Hello(Hello {
            magic: MAGIC,
            version: 99,
            client: "future".into(),
        })))
        .await;
    match future.frame().await {
        Some(ServerFrame::Goodbye { error }) => {
            assert_eq!(error.kind, ErrorKind::UnsupportedVersion);
            let ours = format!("version {PROTOCOL_VERSION}");
            assert!(error.message.contains(&ours), "{}", error.message);
        }
        other => panic!("expected an unsupported-version goodbye, got {other:?}"),
    }
    // A call before the hello.
    let mut rude = Raw::connect(&server.addr).await;
    rude.send(
        &call_frame(
            1,
            &Credential::Admin,
            "x",
            now_micros(),
            &[0; 16],
            &Request::Ping,
        )
        .unwrap(),
    )
    .await;
    assert!(
        matches!(rude.frame().await, Some(ServerFrame::Goodbye { error }) if error.kind == ErrorKind::HandshakeRequired)
    );

    // A correctly signed body that is not a request: error reply, then
    // that connection (only) closes.
    let mut odd = Raw::ready(&server.addr).await;
    let body = b"\xff\xff\xff not a request".to_vec();
    let auth = sign(
        &server.admin_key,
        &odd.challenge,
        5,
        Credential::Admin,
        now_micros(),
        [9; 16],
        Signed::body(&body),
    );
    odd.send(&encode_frame(&ClientFrame::Call(Call {
        id: 5,
        auth,
        body,
        bulk: Vec::new(),
    })))
    .await;
    assert!(
        matches!(odd.frame().await, Some(ServerFrame::Reply { id: 5, result: Err(e) }) if e.kind == ErrorKind::Malformed)
    );
    assert!(odd.closed_within(Duration::from_secs(5)).await);

    match idle.frame().await {
        Some(ServerFrame::Goodbye { error }) => assert_eq!(error.kind, ErrorKind::Timeout),
        other => panic!("expected an idle goodbye, got {other:?}"),
    }

    // Past the connection cap: told so and closed; others unaffected.
    let mut held = Vec::new();
    let refused = loop {
        let mut next = Raw::connect(&server.addr).await;
        next.send(&lote::client::hello_frame("filler")).await;
        match next.frame().await {
            Some(ServerFrame::Welcome { .. }) => held.push(next),
            Some(ServerFrame::Goodbye { error }) => break error,
            other => panic!("unexpected {other:?}"),
        }
        assert!(held.len() <= 8, "the cap of 8 connections was not enforced");
    };
    assert_eq!(refused.kind, ErrorKind::Overloaded);
    assert!(
        refused.message.contains("8 connections"),
        "{}",
        refused.message
    );
    drop(held);

    // The server is still fine, and the client reconnects after its
    // connection was closed for idling.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(
        client.call(&Request::Ping).await.unwrap(),
        Response::Pong { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_with_a_token_and_credentials_do_not_cross() {
    let server = ServerProcess::start(&[]);
    let (client, primary, _) = server.account("acme").await;
    create_pool(&client, "farm").await;
    let token = join_token_of(
        &client,
        Request::ShowJoinToken {
            pool: PoolId::new("farm").unwrap(),
        },
    )
    .await;
    let join_cred = Credential::Join {
        account: AccountName::new("acme").unwrap(),
        pool: PoolId::new("farm").unwrap(),
    };
    let joiner = server.client(join_cred.clone(), &token);
    // The token joins, and does nothing else.
    let err = joiner.call(&Request::ListPools).await.unwrap_err();
    assert_eq!(
        err.api().unwrap().rejection,
        Some(RejectionCode::PermissionDenied)
    );
    let (node, credential) = join_pool(&joiner).await;
    // A wrong token does not join.
    let bad = server.client(join_cred.clone(), "0000");
    assert_eq!(
        error_kind(bad.call(&Request::JoinPool { name: "x".into() }).await).unwrap(),
        ErrorKind::BadSignature
    );
    let node_cred = Credential::Node {
        account: AccountName::new("acme").unwrap(),
        pool: PoolId::new("farm").unwrap(),
        node: node.clone(),
    };
    let agent = server.client(node_cred, &credential);
    assert!(matches!(
        agent.call(&Request::Whoami).await.unwrap(),
        Response::Whoami {
            principal: lote::types::Principal::Node { .. }
        }
    ));
    // A rotated join token: the old one joins no more, the new one does,
    // and the node that joined keeps its own credential.
    let farm = || PoolId::new("farm").unwrap();
    let rotated = join_token_of(&client, Request::RotateJoinToken { pool: farm() }).await;
    assert_ne!(rotated, token);
    let shown = join_token_of(&client, Request::ShowJoinToken { pool: farm() }).await;
    assert_eq!(shown, rotated, "show gives the rotated token");
    let stale = server.client(join_cred.clone(), &token);
    assert_eq!(
        error_kind(stale.call(&Request::JoinPool { name: "y".into() }).await).unwrap(),
        ErrorKind::BadSignature
    );
    let fresh = server.client(join_cred.clone(), &rotated);
    join_pool(&fresh).await;
    assert!(agent.call(&Request::Whoami).await.is_ok());
    // The node credential cannot act as the account...
    assert_eq!(
        rejection(agent.call(&Request::ListPools).await),
        Some(RejectionCode::PermissionDenied)
    );
    // ...nor sign as the account, nor the account key as the node.
    let as_account = server.client(account_cred("acme"), &credential);
    assert_eq!(
        error_kind(as_account.call(&Request::Ping).await).unwrap(),
        ErrorKind::BadSignature
    );
    let node_with_account_key = server.client(
        Credential::Node {
            account: AccountName::new("acme").unwrap(),
            pool: PoolId::new("farm").unwrap(),
            node: node.clone(),
        },
        &primary,
    );
    assert_eq!(
        error_kind(node_with_account_key.call(&Request::Ping).await).unwrap(),
        ErrorKind::BadSignature
    );
    // The account sees its new node.
    let Response::Nodes(nodes) = client
        .call(&Request::ListNodes {
            pool: PoolId::new("farm").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    // Its first node, and the one that joined with the rotated token.
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().any(|n| n.state.id.as_ref() == Some(&node)));
}

/// An agent's completions travel in batches: each is answered on its own,
/// a resend is recorded once, and a stale or unknown attempt is refused
/// without failing the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_completions_is_answered_one_by_one() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    create_pool(&client, "farm").await;
    let pool = PoolId::new("farm").unwrap();
    let token = join_token_of(&client, Request::ShowJoinToken { pool: pool.clone() }).await;
    let acme = AccountName::new("acme").unwrap();
    let joiner = server.client(
        Credential::Join {
            account: acme.clone(),
            pool: pool.clone(),
        },
        &token,
    );
    let (node, credential) = join_pool(&joiner).await;
    let agent = server.client(
        Credential::Node {
            account: acme,
            pool,
            node,
        },
        &credential,
    );
    agent
        .call(&Request::AgentRegister {
            agent: lote::domain::node::AgentInfo {
                hostname: "host-1".into(),
                address: "127.0.0.1".into(),
                cores: 2,
                memory_mib: 1024,
                task_slots: 2,
                agent_version: "test".into(),
            },
        })
        .await
        .unwrap();
    create_job(&client, "j", "farm").await;
    let job = JobId::new("j").unwrap();
    client
        .call(&Request::AddTasks {
            job: job.clone(),
            tasks: vec![task("a"), task("b")],
            request_id: None,
        })
        .await
        .unwrap();
    let mut assigned = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while assigned.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not assigned: {assigned:?}"
        );
        if let Response::Work { assignments, .. } = agent
            .call(&Request::AgentPoll {
                running: vec![],
                reporting: vec![],
                wait_ms: 500,
                releases_running: vec![],
                usage: None,
                secrets_seen: Some(0),
            })
            .await
            .unwrap()
        {
            for a in assignments {
                if !assigned.iter().any(|(t, _)| t == &a.task) {
                    assigned.push((a.task, a.attempt));
                }
            }
        }
    }
    let attempt_of = |id: &str| {
        assigned
            .iter()
            .find(|(t, _)| t.as_str() == id)
            .map(|(_, n)| *n)
            .unwrap()
    };
    let completion = |id: &str, attempt: u32| Completion {
        job: job.clone(),
        task: TaskId::new(id).unwrap(),
        attempt,
        result: TaskResult {
            exit_code: Some(0),
            signal: None,
            duration_ms: 3,
            failure: None,
        },
        outputs: vec![],
    };
    let Response::Reported { results } = agent
        .call(&Request::AgentCompleted {
            completions: vec![
                completion("a", attempt_of("a")),
                // A resend in the same batch: recorded once, answered ok.
                completion("a", attempt_of("a")),
                completion("b", attempt_of("b") + 7),
                completion("nowhere", 1),
            ],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert_eq!(
        results[2].as_ref().unwrap_err().rejection,
        Some(RejectionCode::StaleAttempt)
    );
    assert_eq!(
        results[3].as_ref().unwrap_err().rejection,
        Some(RejectionCode::TaskNotFound)
    );
    let status = |id: &str| {
        let client = &client;
        let job = job.clone();
        let id = TaskId::new(id).unwrap();
        async move {
            let Response::Task(t) = client
                .call(&Request::ShowTask { job, task: id })
                .await
                .unwrap()
            else {
                panic!()
            };
            t.state
        }
    };
    let a = status("a").await;
    assert_eq!(a.status, TaskStatus::Completed);
    assert_eq!(a.attempt, attempt_of("a"));
    assert!(a.last_result.unwrap().succeeded());
    // The refused completion changed nothing.
    assert_eq!(status("b").await.status, TaskStatus::Assigned);
    // An empty report, or one over the bound, is refused whole.
    for n in [0, lote::api::AGENT_COMPLETIONS_MAX + 1] {
        assert_eq!(
            rejection(
                agent
                    .call(&Request::AgentCompleted {
                        completions: vec![completion("b", attempt_of("b")); n],
                    })
                    .await
            ),
            Some(RejectionCode::InvalidValue)
        );
    }
    assert_eq!(status("b").await.status, TaskStatus::Assigned);

    // "a" ended and is recorded. Listed as running, it is answered as one
    // to stop; listed as reporting (its completion on its way, as an agent
    // lists it until the answer), it is neither that nor handed out, so
    // the poll is parked until its deadline.
    let listed = |id: &str| AttemptRef {
        job: job.clone(),
        task: TaskId::new(id).unwrap(),
        attempt: attempt_of(id),
    };
    let poll = |running: Vec<AttemptRef>, reporting: Vec<AttemptRef>, wait_ms: u32| {
        let request = Request::AgentPoll {
            running,
            reporting,
            wait_ms,
            releases_running: vec![],
            usage: None,
            secrets_seen: Some(0),
        };
        let agent = &agent;
        async move { agent.call(&request).await }
    };
    let Response::Work { cancel, .. } = poll(vec![listed("a"), listed("b")], vec![], 0)
        .await
        .unwrap()
    else {
        panic!("a poll answers Work")
    };
    assert_eq!(cancel, vec![listed("a")]);
    let asked = std::time::Instant::now();
    let Response::Work {
        cancel,
        assignments,
        ..
    } = poll(vec![listed("b")], vec![listed("a")], 400)
        .await
        .unwrap()
    else {
        panic!("a poll answers Work")
    };
    assert!(cancel.is_empty(), "{cancel:?}");
    assert!(assignments.is_empty(), "{assignments:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(350),
        "answered at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_in_flight_and_keeps_every_acknowledged_write() {
    let mut server = ServerProcess::start(&[]);
    let (client, primary, _) = server.account("acme").await;
    create_pool(&client, "p").await;
    create_job(&client, "j", "p").await;
    let client = std::sync::Arc::new(client);
    let mut in_flight = Vec::new();
    for b in 0..40 {
        let client = client.clone();
        in_flight.push(tokio::spawn(async move {
            client
                .call(&Request::AddTasks {
                    job: JobId::new("j").unwrap(),
                    tasks: (0..100).map(|i| task(&format!("b{b}-t{i}"))).collect(),
                    request_id: None,
                })
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _temp = server.take_temp();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    });
    let mut acknowledged = 0;
    for call in in_flight {
        match call.await.unwrap() {
            Ok(Response::TasksAdded { count, .. }) => acknowledged += count as u64,
            Ok(other) => panic!("{other:?}"),
            // Calls that arrive after the drain began are refused cleanly.
            Err(e) => assert!(
                matches!(e.api().map(|a| a.kind), Some(ErrorKind::ShuttingDown))
                    || matches!(
                        e,
                        lote::client::ClientError::Disconnected(_)
                            | lote::client::ClientError::Connect { .. }
                    ),
                "{e}"
            ),
        }
    }
    let (status, server) = status.await.unwrap();
    assert!(status.success(), "{status:?}");
    let again = ServerProcess::start_in(&server.data_dir, &[]).unwrap();
    let client = again.client(account_cred("acme"), &primary);
    let job = show_job(&client, "j").await;
    assert!(
        job.state.tasks_added >= acknowledged,
        "{} < {acknowledged}",
        job.state.tasks_added
    );
    assert_eq!(job.state.tasks_added % 100, 0, "batches are all or nothing");
}

#[test]
fn a_taken_port_and_a_locked_data_dir_get_clear_messages() {
    let server = ServerProcess::start(&[]);
    let other = open_tempdir();
    let out = std::process::Command::new(lote_bin())
        .args(["server", "--listen", &server.addr, "--data-dir"])
        .arg(other.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("port is taken"), "{stderr}");
    // A data directory the failed start created is not left behind; one
    // that was there is kept.
    let fresh = other.path().join("fresh");
    let out = std::process::Command::new(lote_bin())
        .args(["server", "--listen", &server.addr, "--data-dir"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!fresh.exists(), "{} was left behind", fresh.display());
    assert!(other.path().exists());

    let err = ServerProcess::start_in(&server.data_dir, &[])
        .err()
        .expect("second server refused");
    assert!(err.contains("another lote process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_tail_is_not_idle() {
    let server = ServerProcess::start(&["--idle-timeout-secs", "1"]);
    let (client, primary, _) = server.account("acme").await;
    let mut tail = client.tail(0).await.unwrap();
    // Quiet for longer than the idle timeout, but streaming: kept open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let writer = server.client(account_cred("acme"), &primary);
    create_pool(&writer, "late").await;
    let event = tokio::time::timeout(Duration::from_secs(10), tail.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.entity, "pool/acme/late");
    assert_eq!(event.event_type, "PoolCreated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_accounts_only_read_and_deleted_ones_cannot_sign() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let admin = server.admin();
    let acme = AccountName::new("acme").unwrap();
    // The admin key file and the server secret are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for file in ["admin.key", "server.secret"] {
        let mode = std::fs::metadata(server.data_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    admin
        .call(&Request::DisableAccount { name: acme.clone() })
        .await
        .unwrap();
    assert!(client.call(&Request::ListPools).await.is_ok());
    assert_eq!(
        rejection(
            client
                .call(&Request::CreatePool {
                    spec: pool_spec("p"),
                    request_id: None
                })
                .await
        ),
        Some(RejectionCode::AccountDisabled)
    );
    admin
        .call(&Request::EnableAccount { name: acme.clone() })
        .await
        .unwrap();
    create_pool(&client, "p").await;

    // An account that owns a pool is not deleted (its agents would run
    // on, out of anyone's reach); once the pool is gone, it is.
    let refused = admin
        .call(&Request::DeleteAccount { name: acme.clone() })
        .await;
    let message = refused
        .as_ref()
        .err()
        .and_then(|e| e.api())
        .map(|a| a.message.clone())
        .unwrap_or_default();
    assert_eq!(
        rejection(refused),
        Some(RejectionCode::AccountNotEmpty),
        "{message}"
    );
    assert!(message.contains("pools p "), "{message}");
    client
        .call(&Request::DeletePool {
            pool: PoolId::new("p").unwrap(),
            force: false,
        })
        .await
        .unwrap();
    admin
        .call(&Request::DeleteAccount { name: acme.clone() })
        .await
        .unwrap();
    assert_eq!(
        error_kind(client.call(&Request::ListPools).await),
        Some(ErrorKind::BadSignature)
    );
    assert_eq!(
        rejection(
            admin
                .call(&Request::ShowAccount { name: acme.clone() })
                .await
        ),
        Some(RejectionCode::AccountNotFound)
    );
    // Names are never reused.
    assert_eq!(
        rejection(
            admin
                .call(&Request::CreateAccount {
                    name: acme,
                    request_id: None
                })
                .await
        ),
        Some(RejectionCode::AccountExists)
    );
}

/// An oversized request is refused up front, naming the field and the
/// limit, and nothing is logged as a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_are_refused_by_name_before_anything_is_written() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    create_pool(&client, "p").await;
    create_job(&client, "j", "p").await;
    let mut big = task("big");
    big.env = vec![EnvVar {
        name: "HUGE".into(),
        value: "x".repeat(3 << 20),
    }];
    let err = client
        .call(&Request::AddTasks {
            job: JobId::new("j").unwrap(),
            tasks: vec![big],
            request_id: None,
        })
        .await
        .unwrap_err();
    let api = err.api().cloned().unwrap();
    assert_eq!(api.rejection, Some(RejectionCode::InvalidValue), "{api:?}");
    assert!(
        api.message.contains("HUGE") && api.message.contains("at most 32768"),
        "{}",
        api.message
    );
    // Many values each under the limit, too many bytes together.
    let mut wide = task("wide");
    wide.env = (0..20)
        .map(|i| EnvVar {
            name: format!("V{i}"),
            value: "x".repeat(30_000),
        })
        .collect();
    let err = client
        .call(&Request::AddTasks {
            job: JobId::new("j").unwrap(),
            tasks: vec![wide],
            request_id: None,
        })
        .await
        .unwrap_err();
    let message = err.api().map(|a| a.message.clone()).unwrap_or_default();
    assert!(message.contains("environment is"), "{message}");
    // Nothing was added.
    let Response::Job(job) = client
        .call(&Request::ShowJob {
            job: JobId::new("j").unwrap(),
        })
        .await
        .unwrap()
    else {
        panic!("a job")
    };
    assert_eq!(job.state.tasks_added, 0);

    // Every other request with a field that can be oversized: refused up
    // front, naming the field and its limit, never an internal error.
    let huge = "x".repeat(3 << 19);
    let command = |line: &str| lote::domain::spec::StartTask {
        command_line: CommandLine::Shell(line.to_string()),
        env: vec![],
        resource_files: vec![],
        wait_for_success: true,
        retry_count_max: 0,
    };
    let far_file = lote::domain::spec::ResourceFile {
        source: lote::domain::spec::ResourceSource::Url {
            url: format!("https://example.invalid/{huge}"),
        },
        path: "in.txt".into(),
        mode: None,
    };
    let deep_file = lote::domain::spec::ResourceFile {
        path: huge.clone(),
        ..far_file.clone()
    };
    let cases: Vec<(Request, &str)> = vec![
        (
            Request::TerminateJob {
                job: JobId::new("j").unwrap(),
                reason: huge.clone(),
            },
            "the reason is 1572864 bytes; at most 4096",
        ),
        (
            Request::TerminateTask {
                job: JobId::new("j").unwrap(),
                task: TaskId::new("t").unwrap(),
                reason: huge.clone(),
            },
            "the reason is 1572864 bytes; at most 4096",
        ),
        (
            Request::CreatePool {
                spec: PoolSpec {
                    display_name: huge.clone(),
                    ..pool_spec("named")
                },
                request_id: None,
            },
            "display name",
        ),
        (
            Request::CreatePool {
                spec: PoolSpec {
                    start_task: Some(command(&huge)),
                    ..pool_spec("started")
                },
                request_id: None,
            },
            "at most 32768",
        ),
        (
            Request::UpdatePool {
                pool: PoolId::new("p").unwrap(),
                start_task: Some(lote::domain::pool::StartTaskUpdate::Set(command(&huge))),
                application_packages: None,
            },
            "at most 32768",
        ),
        (
            Request::EnableAutoscale {
                pool: PoolId::new("p").unwrap(),
                formula: huge.clone(),
                evaluation_interval_secs: 300,
            },
            "at most 8192",
        ),
        (
            Request::CreateJob {
                spec: JobSpec {
                    common_resource_files: vec![far_file],
                    ..job_spec("far", "p")
                },
                request_id: None,
            },
            "resource URL is 1572888 bytes; at most 8192",
        ),
        (
            Request::CreateJob {
                spec: JobSpec {
                    common_resource_files: vec![deep_file],
                    ..job_spec("deep", "p")
                },
                request_id: None,
            },
            "resource file path is 1572864 bytes; at most 4096",
        ),
    ];
    for (request, words) in cases {
        let err = client.call(&request).await.unwrap_err();
        let api = err.api().cloned().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(
            api.rejection,
            Some(RejectionCode::InvalidValue),
            "{}: {}",
            request.name(),
            api.message
        );
        assert!(
            api.message.contains(words) && api.message.len() < 1024,
            "{}: {}",
            request.name(),
            api.message
        );
    }
}

/// A slow-loris flood (a thousand sockets that connect and send nothing,
/// half a prefix, or a hello and then a few bytes of a frame that claims
/// 4 MiB) neither swells the server's memory nor locks out a client that
/// signs its calls; connections that never authenticate are closed at
/// their deadline with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_flood_is_bounded_and_a_signing_client_gets_answers() {
    let server = ServerProcess::start(&["--auth-deadline-secs", "3"]);
    let (client, _, _) = server.account("acme").await;
    let before = server.rss_bytes();
    let mut flood = Vec::new();
    for i in 0..1000 {
        let mut raw = Raw::connect(&server.addr).await;
        match i % 3 {
            0 => {}
            1 => raw.send(&[0, 0]).await,
            _ => {
                raw.send(&lote::client::hello_frame("loris")).await;
                let mut claim = (4u32 << 20).to_be_bytes().to_vec();
                claim.extend_from_slice(&[7u8; 1024]);
                raw.send(&claim).await;
            }
        }
        flood.push(raw);
    }
    // A client that signs its calls is answered meanwhile.
    let fresh = lote::client::Client::new(client.config().clone());
    for _ in 0..20 {
        fresh.call(&Request::ListPools).await.unwrap();
    }
    let during = server.rss_bytes();
    assert!(
        during < 200 << 20,
        "the server holds {} MiB during the flood (it held {} MiB before)",
        during >> 20,
        before >> 20
    );
    // One that says hello and never signs a call: closed at its deadline.
    let mut silent = Raw::ready(&server.addr).await;
    match silent.frame().await {
        Some(ServerFrame::Goodbye { error }) => {
            assert_eq!(error.kind, ErrorKind::Timeout);
            assert!(
                error.message.contains("no signed call within 3s"),
                "{}",
                error.message
            );
        }
        other => panic!("expected a deadline goodbye, got {other:?}"),
    }
    // Every flood socket is closed by now (made room for, or timed out).
    for raw in &mut flood {
        assert!(raw.closed_within(Duration::from_secs(5)).await);
    }
    fresh.call(&Request::ListPools).await.unwrap();
}
