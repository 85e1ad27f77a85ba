//! The event store on a real RocksDB directory.

mod common;

use std::sync::Arc;

use common::*;
use lote::store::{
    Durability, EventStore, ExpectedVersion, NewEvent, StoreError, StoreOptions, StreamAppend,
    StreamId, EVENT_PAYLOAD_BYTES_MAX,
};
use lote::types::{Causation, Principal, RequestId};

fn causation() -> Causation {
    Causation {
        request_id: RequestId(uuid::Uuid::from_u128(42)),
        principal: Principal::Admin,
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_type: "Test".into(),
        schema_version: 1,
        payload: n.to_le_bytes().to_vec(),
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(&format!("job/acme/{name}")).unwrap()
}

fn append(
    store: &EventStore,
    s: &StreamId,
    expected: ExpectedVersion,
    n: u64,
) -> Result<lote::store::AppendResult, StoreError> {
    store.append_blocking(
        vec![StreamAppend {
            stream: s.clone(),
            expected,
            events: vec![event(n)],
        }],
        causation(),
    )
}

#[test]
fn appends_read_back_by_stream_and_by_position() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let (a, b) = (stream("a"), stream("b"));
    append(&store, &a, ExpectedVersion::NoStream, 1).unwrap();
    append(&store, &b, ExpectedVersion::NoStream, 2).unwrap();
    let r = append(&store, &a, ExpectedVersion::Exact(1), 3).unwrap();
    assert_eq!(r.stream_versions, vec![2]);
    assert_eq!(r.last_position, 3);
    assert_eq!(store.head(), 3);

    let events = store.read_stream(&a, 1, 100).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.stream_version))
            .collect::<Vec<_>>(),
        vec![(1, 1), (3, 2)]
    );
    assert_eq!(events[0].causation, causation());
    assert_eq!(events[1].payload, 3u64.to_le_bytes());
    assert_eq!(store.read_stream(&a, 2, 100).unwrap().len(), 1);
    assert_eq!(store.read_stream(&stream("none"), 1, 100).unwrap().len(), 0);
    // A stream whose name extends another's is not mixed in.
    append(&store, &stream("a-2"), ExpectedVersion::Any, 4).unwrap();
    assert_eq!(store.read_stream(&a, 1, 100).unwrap().len(), 2);

    let all = store.read_all(1, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(all[1].stream, b);
    assert_eq!(store.read_all(3, 1).unwrap()[0].position, 3);
    assert!(all.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
    assert_eq!(store.stream_version(&a).unwrap(), 2);
    assert_eq!(store.verify_log_index().unwrap(), 4);
}

#[test]
fn conflicting_appends_are_refused_whole() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let (a, b) = (stream("a"), stream("b"));
    append(&store, &a, ExpectedVersion::NoStream, 1).unwrap();
    let err = append(&store, &a, ExpectedVersion::NoStream, 2).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        append(&store, &a, ExpectedVersion::Exact(5), 2),
        Err(StoreError::Conflict { .. })
    ));

    // One stream conflicts: nothing of the atomic batch is written.
    let err = store
        .append_blocking(
            vec![
                StreamAppend {
                    stream: b.clone(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![event(1), event(2)],
                },
                StreamAppend {
                    stream: a.clone(),
                    expected: ExpectedVersion::Exact(0),
                    events: vec![event(3)],
                },
            ],
            causation(),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref stream, .. } if *stream == a),
        "{err}"
    );
    assert_eq!(store.stream_version(&b).unwrap(), 0);
    assert_eq!(store.head(), 1);

    // Both fit: both are written, with contiguous positions.
    let r = store
        .append_blocking(
            vec![
                StreamAppend {
                    stream: b.clone(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![event(1), event(2)],
                },
                StreamAppend {
                    stream: a.clone(),
                    expected: ExpectedVersion::Exact(1),
                    events: vec![event(3)],
                },
            ],
            causation(),
        )
        .unwrap();
    assert_eq!(r.stream_versions, vec![2, 2]);
    assert_eq!(store.head(), 4);
    assert_eq!(store.stats().conflicts, 3);
}

#[test]
fn bad_appends_get_clear_errors() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let a = stream("a");
    let empty = store.append_blocking(
        vec![StreamAppend {
            stream: a.clone(),
            expected: ExpectedVersion::Any,
            events: vec![],
        }],
        causation(),
    );
    assert!(matches!(empty, Err(StoreError::TooLarge(_))));
    let huge = NewEvent {
        event_type: "Huge".into(),
        schema_version: 1,
        payload: vec![0; EVENT_PAYLOAD_BYTES_MAX + 1],
    };
    let err = store
        .append_blocking(
            vec![StreamAppend {
                stream: a.clone(),
                expected: ExpectedVersion::Any,
                events: vec![huge],
            }],
            causation(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    let twice = vec![
        StreamAppend {
            stream: a.clone(),
            expected: ExpectedVersion::Any,
            events: vec![event(1)],
        },
        StreamAppend {
            stream: a.clone(),
            expected: ExpectedVersion::Any,
            events: vec![event(2)],
        },
    ];
    assert!(store.append_blocking(twice, causation()).is_err());
    assert_eq!(store.head(), 0, "nothing was written");
}

#[actix::test]
async fn concurrent_appends_share_write_batches() {
    let (_dir, store) = temp_store(StoreOptions {
        durability: Durability::Sync,
        ..StoreOptions::default()
    });
    let mut handles = Vec::new();
    for i in 0..256 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let s = stream(&format!("s{i}"));
            for n in 0..4 {
                let expected = if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(n)
                };
                store
                    .append(
                        vec![StreamAppend {
                            stream: s.clone(),
                            expected,
                            events: vec![event(n)],
                        }],
                        causation(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.events_appended, 1024);
    assert_eq!(store.head(), 1024);
    assert!(
        stats.write_batches < 1024,
        "group commit gathered nothing: {stats:?}"
    );
    assert_eq!(store.verify_log_index().unwrap(), 1024);
}

#[actix::test]
async fn subscription_delivers_past_and_live_events_in_order() {
    let (_dir, store) = temp_store(StoreOptions::default());
    for n in 0..10 {
        store
            .append(
                vec![StreamAppend {
                    stream: stream("a"),
                    expected: ExpectedVersion::Any,
                    events: vec![event(n)],
                }],
                causation(),
            )
            .await
            .unwrap();
    }
    let mut sub = store.subscribe(4);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 10..600 {
                let s = stream(if n % 2 == 0 { "a" } else { "b" });
                store
                    .append(
                        vec![StreamAppend {
                            stream: s,
                            expected: ExpectedVersion::Any,
                            events: vec![event(n)],
                        }],
                        causation(),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    for expected in 4..=600u64 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.position, expected);
        assert_eq!(e.payload, (expected - 1).to_le_bytes());
    }
    writer.await.unwrap();
    assert_eq!(sub.next_position(), 601);
}

#[test]
fn reopening_the_directory_gives_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store =
            EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
        for n in 0..50 {
            append(
                &store,
                &stream(&format!("s{}", n % 7)),
                ExpectedVersion::Any,
                n,
            )
            .unwrap();
        }
        store.read_all(1, 1000).unwrap()
    };
    let store = EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
    assert_eq!(store.head(), 50);
    assert_eq!(store.read_all(1, 1000).unwrap(), before);
    // Versions continue where they were.
    let r = append(&store, &stream("s0"), ExpectedVersion::Exact(8), 99).unwrap();
    assert_eq!(r.last_position, 51);
    drop(store);
    let ro = EventStore::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.head(), 51);
    assert!(matches!(
        append(&ro, &stream("s0"), ExpectedVersion::Any, 1),
        Err(StoreError::ReadOnly)
    ));
}

#[test]
fn a_second_writer_is_refused_with_a_clear_error() {
    let (dir, _store) = temp_store(StoreOptions::default());
    let err = EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another lote process"));
    // Readers (replay, audit) still work beside a running writer.
    assert!(EventStore::open_read_only(dir.path()).is_ok());
}

#[test]
fn a_log_from_a_newer_major_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap());
    lote::store::write_format_header_for_test(dir.path(), lote::store::FORMAT_MAJOR + 1, 3)
        .unwrap();
    let err = EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerFormat { found_minor: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Upgrade lote"), "{err}");
    assert!(matches!(
        EventStore::open_read_only(dir.path()),
        Err(StoreError::NewerFormat { .. })
    ));
    // A newer minor of the same major opens.
    lote::store::write_format_header_for_test(dir.path(), lote::store::FORMAT_MAJOR, 9).unwrap();
    assert!(EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).is_ok());
}

#[test]
fn a_directory_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        EventStore::open_read_only(dir.path()),
        Err(StoreError::NotALog { .. })
    ));
}

#[test]
fn snapshots_are_a_cache() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let s = stream("a");
    let snap = lote::store::Snapshot {
        stream_version: 3,
        state_schema: 1,
        state: vec![1, 2, 3],
    };
    store.save_snapshot(&s, &snap).unwrap();
    assert_eq!(store.load_snapshot(&s).unwrap(), Some(snap));
    assert_eq!(store.snapshot_count().unwrap(), 1);
    assert_eq!(store.delete_all_snapshots().unwrap(), 1);
    assert_eq!(store.load_snapshot(&s).unwrap(), None);
}
