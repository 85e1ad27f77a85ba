//! TLS on the message API, end to end: a pinned fingerprint reaches the
//! server and a wrong one is refused; a server that takes no plaintext
//! refuses it with what to do; keys and secrets on the wire are not
//! readable through TLS (and are in plaintext, which shows the check can
//! fail); an agent joins a TLS-only server with the join token alone, and
//! local agents work there too; a given certificate is used.

mod compute_support;
mod server_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use compute_support::*;
use lote::api::tls::{parse_fingerprint, Trust};
use lote::api::{Credential, ErrorKind, Request, Response};
use lote::client::{Client, ClientConfig, ClientError};
use lote::domain::pool::SchedulingPolicy;
use lote::types::{AccountName, PoolId};
use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pinned(server: &ServerProcess, fingerprint: &str) -> Client {
    Client::new(
        ClientConfig::new(
            server.addr.clone(),
            Credential::Admin,
            server.admin_key.clone(),
        )
        .with_trust(Some(Trust::Fingerprint(
            parse_fingerprint(fingerprint).unwrap(),
        ))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_fingerprint_reaches_the_server_and_a_wrong_one_is_refused() {
    let server = ServerProcess::start(&["--plaintext", "never"]);
    let fingerprint = server.tls_fingerprint();
    assert!(matches!(
        pinned(&server, &fingerprint)
            .call(&Request::Whoami)
            .await
            .unwrap(),
        Response::Whoami { .. }
    ));

    let wrong = format!("sha256:{}", "00".repeat(32));
    let err = pinned(&server, &wrong)
        .call(&Request::Ping)
        .await
        .unwrap_err();
    let ClientError::Connect { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("not the pinned"), "{reason}");
    assert!(reason.contains(&fingerprint), "{reason}");

    // Plaintext to a server that takes none: refused, saying what to do.
    let plain = Client::new(ClientConfig::new(
        server.addr.clone(),
        Credential::Admin,
        server.admin_key.clone(),
    ));
    let err = plain.call(&Request::Ping).await.unwrap_err();
    let refusal = err.api().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(refusal.kind, ErrorKind::PermissionDenied);
    assert!(
        refusal.message.contains("--tls-fingerprint"),
        "{}",
        refusal.message
    );
    assert!(
        refusal.message.contains(&fingerprint),
        "{}",
        refusal.message
    );
}

/// A relay between a client and the server that keeps every byte the
/// server sent.
async fn relay(server: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (server, kept) = (server.to_string(), seen.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(&server).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
            });
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            kept.lock().unwrap().extend_from_slice(&buf[..n]);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The keys of a new account as they cross the wire: through TLS they
/// cannot be read; in plaintext they can (so the search finds what it
/// looks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_the_wire_are_unreadable_through_tls() {
    let server = ServerProcess::start(&[]);
    let fingerprint = parse_fingerprint(&server.tls_fingerprint()).unwrap();
    for (name, trust) in [
        ("overtls", Some(Trust::Fingerprint(fingerprint))),
        ("inclear", None),
    ] {
        let (addr, seen) = relay(&server.addr).await;
        let admin = Client::new(
            ClientConfig::new(addr, Credential::Admin, server.admin_key.clone())
                .with_trust(trust.clone()),
        );
        admin
            .call(&Request::CreateAccount {
                name: AccountName::new(name).unwrap(),
                request_id: None,
            })
            .await
            .unwrap();
        let Response::Keys { primary, .. } = admin
            .call(&Request::ShowKeys {
                name: AccountName::new(name).unwrap(),
            })
            .await
            .unwrap()
        else {
            panic!("keys expected")
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bytes = seen.lock().unwrap().clone();
        assert!(!bytes.is_empty());
        let found = bytes
            .windows(primary.len())
            .any(|w| w == primary.as_bytes());
        match trust {
            Some(_) => assert!(!found, "the key crossed the wire readable through TLS"),
            None => assert!(found, "the plaintext relay should see the key"),
        }
    }
}

/// A server that takes no plaintext: a remote agent joins with the join
/// token alone (it carries the fingerprint) and runs a task; a local
/// pool's agents, given the fingerprint by the server, do too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_work_with_a_tls_only_server() {
    let mut server = ServerProcess::start(&["--plaintext", "never"]);
    server.pin_tls();
    let (client, _, _) = server.account("acme").await;
    let token = remote_pool(&client, "far", 1, SchedulingPolicy::Pack).await;
    assert!(token.contains(&server.tls_fingerprint()), "{token}");
    let nodes = open_tempdir();
    let root = nodes.path().join("n0");
    let _agents = start_agents(&server, "far", &token, &[&root], 1);
    nodes_ready(&client, &PoolId::new("far").unwrap(), 1).await;
    let node_toml = std::fs::read_to_string(root.join("node.toml")).unwrap();
    assert!(node_toml.contains(&server.tls_fingerprint()), "{node_toml}");
    create_job(&client, "j", "far").await;
    add(&client, "j", vec![shell("t", "echo over tls")]).await;
    wait_job(&client, "j", Duration::from_secs(30)).await;
    assert!(task(&client, "j", "t")
        .await
        .state
        .last_result
        .unwrap()
        .succeeded());

    Env::new(&client).pool("near").nodes(1).slots(1).await;
    create_job(&client, "k", "near").await;
    add(&client, "k", vec![shell("t", "true")]).await;
    wait_job(&client, "k", Duration::from_secs(30)).await;
    assert!(task(&client, "k", "t")
        .await
        .state
        .last_result
        .unwrap()
        .succeeded());
}

/// A certificate and key given with --tls-cert / --tls-key are the ones
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_certificate_is_served() {
    let files = open_tempdir();
    let made = rcgen::generate_simple_self_signed(vec!["lote.example".to_string()]).unwrap();
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let server = ServerProcess::start(&[
        "--plaintext",
        "never",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let fingerprint = lote::api::tls::fingerprint(made.cert.der());
    assert!(matches!(
        pinned(&server, &fingerprint)
            .call(&Request::Ping)
            .await
            .unwrap(),
        Response::Pong { .. }
    ));
    assert!(!server.data_dir.join("tls/cert.pem").exists());
}
