//! The wire format on its own: round trips, and hostile bytes into the
//! decoder (every input yields a message or a typed error, never a panic).

use lote::api::auth::{sign, Signed};
use lote::api::{
    ApiError, Call, ClientFrame, Completion, Credential, ErrorKind, Hello, Request, Response,
    ServerFrame, MAGIC, PROTOCOL_VERSION,
};
use lote::client::call_frame;
use lote::codec::{decode_message, encode_message};
use lote::domain::account::KeyKind;
use lote::domain::spec::CommandLine;
use lote::domain::task::{FailureCategory, TaskResult, TaskSpec};
use lote::domain::RejectionCode;
use lote::types::{AccountName, JobId, PoolId, TaskId, Timestamp};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,20}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::ListPools),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 1..300)
        )
            .prop_map(|(upload, offset, data)| Request::UploadChunk {
                upload,
                offset,
                data
            }),
        (id(), any::<Option<u128>>()).prop_map(|(n, r)| Request::CreateAccount {
            name: AccountName::new(n).unwrap(),
            request_id: r.map(uuid::Uuid::from_u128),
        }),
        (id(), prop::bool::ANY).prop_map(|(n, p)| Request::RegenerateKey {
            name: AccountName::new(n).unwrap(),
            key: if p {
                KeyKind::Primary
            } else {
                KeyKind::Secondary
            },
        }),
        (id(), any::<u32>()).prop_map(|(p, n)| Request::ResizePool {
            pool: PoolId::new(p).unwrap(),
            target_nodes: n,
            deallocation: Default::default(),
        }),
        (id(), prop::collection::vec((id(), ".{0,40}"), 0..5)).prop_map(|(j, tasks)| {
            Request::AddTasks {
                job: JobId::new(j).unwrap(),
                tasks: tasks
                    .into_iter()
                    .map(|(t, c)| TaskSpec::simple(TaskId::new(t).unwrap(), CommandLine::Shell(c)))
                    .collect(),
                request_id: None,
            }
        }),
        any::<u64>().prop_map(|from| Request::TailEvents { from }),
        prop::collection::vec(
            (id(), id(), any::<u32>(), any::<Option<i32>>(), any::<u64>()),
            1..5
        )
        .prop_map(|completions| Request::AgentCompleted {
            completions: completions
                .into_iter()
                .map(|(j, t, attempt, exit_code, duration_ms)| Completion {
                    job: JobId::new(j).unwrap(),
                    task: TaskId::new(t).unwrap(),
                    attempt,
                    result: TaskResult {
                        exit_code,
                        signal: None,
                        duration_ms,
                        failure: (exit_code != Some(0))
                            .then(|| (FailureCategory::NonZeroExit, "exit".to_string())),
                    },
                    outputs: vec![],
                })
                .collect(),
        }),
    ]
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        Just(Credential::Admin),
        id().prop_map(|a| Credential::Account {
            account: AccountName::new(a).unwrap()
        }),
        (id(), id()).prop_map(|(a, p)| Credential::Join {
            account: AccountName::new(a).unwrap(),
            pool: PoolId::new(p).unwrap(),
        }),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        ".{0,30}".prop_map(|c| ClientFrame::Hello(Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: c
        })),
        any::<u64>().prop_map(|id| ClientFrame::Cancel { id }),
        (
            any::<u64>(),
            credential(),
            any::<i64>(),
            any::<[u8; 16]>(),
            request()
        )
            .prop_map(|(id, cred, ts, nonce, req)| {
                let body = encode_message(&req).unwrap();
                let bulk = req.bulk().to_vec();
                let signed = Signed {
                    body: &body,
                    bulk_len: bulk.len() as u64,
                };
                let auth = sign("key", &[5; 16], id, cred, ts, nonce, signed);
                ClientFrame::Call(Call {
                    id,
                    auth,
                    body,
                    bulk,
                })
            }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (any::<u64>(), any::<i64>()).prop_map(|(id, t)| ServerFrame::Reply {
            id,
            result: Ok(Response::Pong {
                server_time: Timestamp::from_micros(t)
            })
        }),
        (any::<u64>(), ".{0,50}").prop_map(|(id, m)| ServerFrame::Reply {
            id,
            result: Err(ApiError::rejected(RejectionCode::PoolNotFound, m)),
        }),
        ".{0,50}".prop_map(|m| ServerFrame::Goodbye {
            error: ApiError::new(ErrorKind::Timeout, m)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let bytes = encode_message(&frame).unwrap();
        prop_assert_eq!(decode_message::<ClientFrame>(&bytes).unwrap(), frame.clone());
        if let ClientFrame::Call(call) = frame {
            // The body holds the request without its bulk bytes; they
            // travel beside it and are put back as the server does.
            let mut request = decode_message::<Request>(&call.body).unwrap();
            prop_assert!(request.bulk().is_empty());
            request.attach_bulk(call.bulk.clone()).unwrap();
            prop_assert_eq!(request.bulk(), &call.bulk[..]);
            // What the client library sends is this very frame.
            let sent = call_frame(call.id, &call.auth.credential, "key", call.auth.timestamp, &[5; 16], &request).unwrap();
            let sent = decode_message::<ClientFrame>(&sent[4..]).unwrap();
            let ClientFrame::Call(sent) = sent else { panic!("a call") };
            prop_assert_eq!((&sent.body, &sent.bulk), (&call.body, &call.bulk));
        }
    }

    #[test]
    fn bulk_bytes_only_come_with_a_chunk(req in request(), bulk in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut req = req;
        let chunk = matches!(req, Request::UploadChunk { .. });
        let attached = req.attach_bulk(bulk.clone());
        // A chunk takes bytes (never none); anything else takes none.
        prop_assert_eq!(attached.is_ok(), chunk != bulk.is_empty());
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let bytes = encode_message(&frame).unwrap();
        prop_assert_eq!(decode_message::<ServerFrame>(&bytes).unwrap(), frame);
    }

    #[test]
    fn random_bytes_decode_to_a_message_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message::<ClientFrame>(&bytes);
        let _ = decode_message::<Request>(&bytes);
        let _ = decode_message::<ServerFrame>(&bytes);
    }

    #[test]
    fn mutated_frames_decode_to_a_message_or_an_error(
        frame in client_frame(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = encode_message(&frame).unwrap();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if let Ok(ClientFrame::Call(call)) = decode_message::<ClientFrame>(&bytes) {
            let _ = decode_message::<Request>(&call.body);
        }
    }
}

#[test]
fn a_huge_claimed_length_inside_a_message_is_refused_without_allocating_it() {
    // A Call whose body claims 2^62 bytes: bincode must refuse on the
    // claim, not try to allocate.
    let mut bytes = vec![1u8]; // variant: Call
    bytes.push(0); // id 0
    bytes.push(0); // credential: Admin
    bytes.extend_from_slice(&[0; 1 + 16 + 32]); // timestamp, nonce, signature
    bytes.push(0xfd); // u64 length follows
    bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode_message::<ClientFrame>(&bytes).is_err());
}

#[test]
fn ids_from_the_wire_are_validated() {
    // An account name with a '/' would name another stream.
    let forged = encode_message(&Request::ShowAccount {
        name: AccountName::new("ok").unwrap(),
    })
    .unwrap();
    let mut bytes = forged.clone();
    let at = bytes.iter().position(|b| *b == b'o').unwrap();
    bytes[at] = b'/';
    assert!(decode_message::<Request>(&bytes).is_err());
}
