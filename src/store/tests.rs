use super::*;
use crate::clock::SystemClock;
use crate::types::{Principal, RequestId};

fn buffered_store(dir: &Path) -> EventStore {
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    EventStore::open(dir, options, Arc::new(SystemClock)).unwrap()
}

/// Appends `count` test events to `job/acme/NAME`.
fn append_events(store: &EventStore, name: &str, count: u64) -> StreamId {
    let stream = StreamId::parse(&format!("job/acme/{name}")).unwrap();
    let events = (0..count)
        .map(|n| NewEvent {
            event_type: "Test".into(),
            schema_version: 1,
            payload: n.to_le_bytes().to_vec(),
        })
        .collect();
    let append = StreamAppend {
        stream: stream.clone(),
        expected: ExpectedVersion::Any,
        events,
    };
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(7)),
        principal: Principal::Admin,
    };
    store.append_blocking(vec![append], causation).unwrap();
    stream
}

#[test]
fn a_gap_in_log_positions_falls_back_to_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    append_events(&store, "gap", 5);
    // What is read here must come from RocksDB, not the recent rounds.
    store.inner.recent.lock().unwrap().clear();
    let positions = |all: Vec<Envelope>| all.iter().map(|e| e.position).collect::<Vec<_>>();
    // Dense: read by position.
    assert!(store.log_keys_at(1, 5).is_some());
    assert_eq!(positions(store.read_all(2, 3).unwrap()), [2, 3, 4]);
    // A position gone from the log index (never the case in a log this
    // store wrote, but a reader must not stall on it): scanned instead.
    let db = &store.inner.db;
    db.delete_cf(cf(db, CF_LOG), 3u64.to_be_bytes()).unwrap();
    assert!(store.log_keys_at(1, 5).is_none());
    assert_eq!(positions(store.read_all(2, 3).unwrap()), [2, 4, 5]);
    assert_eq!(positions(store.read_all(1, 100).unwrap()), [1, 2, 4, 5]);
    assert!(store.read_all(6, 10).unwrap().is_empty());
}

#[test]
fn a_stream_read_by_key_then_by_iterator_is_whole_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    let append = |name: &str, count: u64| append_events(&store, name, count);
    // Neighbours on both sides of the stream's keys.
    append("s", 2);
    let stream = append("s1", 3 * STREAM_EVENTS_BY_KEY);
    append("s10", 2);
    append("s2", 2);
    let versions = |from: u64, limit: usize| -> Vec<u64> {
        let read = store.read_stream(&stream, from, limit).unwrap();
        assert!(read.iter().all(|e| e.stream == stream));
        read.iter().map(|e| e.stream_version).collect()
    };
    let all = 3 * STREAM_EVENTS_BY_KEY;
    assert_eq!(versions(1, 100), (1..=all).collect::<Vec<_>>());
    assert_eq!(versions(0, 100), (1..=all).collect::<Vec<_>>());
    assert_eq!(versions(2, 2), [2, 3]);
    assert_eq!(versions(3, 3), [3, 4, 5]);
    assert_eq!(
        versions(2, STREAM_EVENTS_BY_KEY as usize + 1),
        (2..=STREAM_EVENTS_BY_KEY + 2).collect::<Vec<_>>()
    );
    assert_eq!(versions(all - 1, 100), [all - 1, all]);
    assert!(versions(all + 1, 100).is_empty());
    assert!(versions(1, 0).is_empty());
}

#[test]
fn stream_starts_read_together_are_each_stream_whole_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    let append = |name: &str, count: u64| append_events(&store, name, count);
    // Keys of neighbouring streams sort between these ones'.
    let one = append("a", 1);
    append("a1", 3);
    let two = append("b", STREAM_STARTS_BY_KEY);
    let many = append("c", 3 * STREAM_STARTS_BY_KEY);
    let never = StreamId::parse("job/acme/none").unwrap();
    let read = store
        .read_stream_starts([&many, &one, &never, &two, &one])
        .unwrap();
    assert_eq!(read.len(), 5, "one answer per stream asked, in order");
    assert!(read[0].is_none() && read[3].is_none(), "longer: read alone");
    assert_eq!(
        read[2].as_deref(),
        Some(&[][..]),
        "no such stream: no events"
    );
    for whole in [&read[1], &read[4]] {
        assert_eq!(
            whole.as_deref(),
            Some(&store.read_stream(&one, 1, 100).unwrap()[..])
        );
    }
    let reads = store.stats().stream_reads;
    let nothing: [&StreamId; 0] = [];
    assert!(store.read_stream_starts(nothing).unwrap().is_empty());
    assert_eq!(store.stats().stream_reads, reads);
}

#[test]
fn the_log_read_from_memory_is_the_log_read_from_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    for (n, name) in ["a", "b", "a", "c"].into_iter().enumerate() {
        append_events(&store, name, n as u64 + 1);
    }
    let recent = |from: u64, to: u64| store.read_recent(from, to).unwrap();
    let from_memory = recent(1, 10).expect("every round is kept");
    assert_eq!(from_memory.len(), 10);
    assert_eq!(recent(4, 6).unwrap().len(), 3, "a read may start mid-round");
    assert_eq!(store.read_all(4, 3).unwrap(), from_memory[3..6]);
    assert_eq!(store.read_all(9, 100).unwrap(), from_memory[8..]);
    store.inner.recent.lock().unwrap().clear();
    assert!(recent(1, 10).is_none());
    assert_eq!(store.read_all(1, 100).unwrap(), from_memory);
    // Kept again from the next round on; earlier reads go to RocksDB.
    append_events(&store, "d", 2);
    assert!(recent(10, 12).is_none());
    assert_eq!(recent(11, 12).unwrap().len(), 2);
    assert_eq!(store.read_all(1, 100).unwrap().len(), 12);
    // An import's round is not kept, nor what came before it.
    let imported = Envelope {
        position: 13,
        stream_version: 1,
        ..store.read_all(12, 1).unwrap().remove(0)
    };
    let imported = Envelope {
        stream: StreamId::parse("job/acme/imported").unwrap(),
        ..imported
    };
    store.import_blocking(vec![imported.clone()]).unwrap();
    assert!(recent(11, 13).is_none());
    assert_eq!(store.read_all(13, 1).unwrap(), [imported]);
}

/// More streams than the writer's version cache holds: its generations
/// rotate, and every expected version is still checked right, for streams
/// in the newer generation, in the older one, and dropped from both.
#[test]
fn expected_versions_stay_right_as_the_version_cache_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(8)),
        principal: Principal::Admin,
    };
    let event = || NewEvent {
        event_type: "Test".into(),
        schema_version: 1,
        payload: Vec::new(),
    };
    let stream = |i: usize| StreamId::parse(&format!("job/acme/s{i}")).unwrap();
    let create = |i: usize| StreamAppend {
        stream: stream(i),
        expected: ExpectedVersion::NoStream,
        events: vec![event()],
    };
    // Enough new streams for two rotations, in rounds of 8,192.
    let total = super::writer::VERSION_CACHE_MAX + 20_000;
    for first in (0..total).step_by(8192) {
        let batch = (first..(first + 8192).min(total)).map(create).collect();
        store.append_blocking(batch, causation.clone()).unwrap();
    }
    // The first (dropped from both generations), one from the middle (the
    // older generation) and the last (the newer one): each at version 1.
    for i in [0, total / 2, total - 1] {
        let again = store.append_blocking(vec![create(i)], causation.clone());
        assert!(
            matches!(again, Err(StoreError::Conflict { actual: 1, .. })),
            "stream {i} created twice: {again:?}"
        );
        let next = StreamAppend {
            stream: stream(i),
            expected: ExpectedVersion::Exact(1),
            events: vec![event()],
        };
        store
            .append_blocking(vec![next], causation.clone())
            .unwrap();
        let stale = StreamAppend {
            stream: stream(i),
            expected: ExpectedVersion::Exact(1),
            events: vec![event()],
        };
        let refused = store.append_blocking(vec![stale], causation.clone());
        assert!(
            matches!(refused, Err(StoreError::Conflict { actual: 2, .. })),
            "stream {i}: {refused:?}"
        );
    }
}

#[test]
fn side_records_are_kept_by_kind_beside_the_log_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = buffered_store(dir.path());
        append_events(&store, "p", 3);
        store.put_side("answer", b"k1", b"one").unwrap();
        store.put_side("answer", b"k2", b"two").unwrap();
        store.put_side("answers", b"k1", b"other kind").unwrap();
        store.delete_side("answer", b"k2").unwrap();
        store.flush_blocking().unwrap();
    }
    let store = buffered_store(dir.path());
    assert_eq!(
        store.side_records("answer").unwrap(),
        vec![(b"k1".to_vec(), b"one".to_vec())]
    );
    assert_eq!(store.side_records("answers").unwrap().len(), 1);
    assert!(store.side_records("none").unwrap().is_empty());
    assert_eq!(store.head(), 3, "side records are not events");
}

#[test]
fn the_log_read_in_batches_is_the_log_read_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = buffered_store(dir.path());
    // Streams interleaved across appends, so the events' walk both steps
    // and seeks.
    for round in 0..20 {
        append_events(&store, &format!("s{}", round % 3), 1 + round % 4);
        append_events(&store, "z", 2);
    }
    let head = store.head();
    let whole = store.read_all(1, head as usize).unwrap();
    let read = |from, to, batch| {
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        store
            .read_log_in_batches(from, to, batch, |b| {
                sizes.push(b.len());
                got.extend(b);
                true
            })
            .unwrap();
        (got, sizes)
    };
    let (got, sizes) = read(1, head, 7);
    assert_eq!(got, whole);
    assert!(sizes.iter().all(|n| *n <= 7) && sizes.len() as u64 == head.div_ceil(7));
    let (got, _) = read(5, 9, 100);
    assert_eq!(got, whole[4..9].to_vec());
    // Stopping early stops.
    let mut batches = 0;
    store
        .read_log_in_batches(1, head, 3, |_| {
            batches += 1;
            batches < 2
        })
        .unwrap();
    assert_eq!(batches, 2);
    // An event the log points at that is gone is damage, said as such.
    let db = &store.inner.db;
    let key = db
        .get_cf(cf(db, CF_LOG), 4u64.to_be_bytes())
        .unwrap()
        .unwrap();
    db.delete_cf(cf(db, CF_EVENTS), &key).unwrap();
    let err = store
        .read_log_in_batches(1, head, 10, |_| true)
        .unwrap_err();
    assert!(err.to_string().contains("position 4"), "{err}");
}

#[test]
fn a_stream_expected_new_is_found_on_disk_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = buffered_store(dir.path());
        append_events(&store, "old", 3);
        store.flush_memtables_blocking().unwrap();
    }
    // A fresh store: no version is cached, so the check reads the disk.
    let store = buffered_store(dir.path());
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(8)),
        principal: Principal::Admin,
    };
    let new = |name: &str| StreamAppend {
        stream: StreamId::parse(&format!("job/acme/{name}")).unwrap(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_type: "Test".into(),
            schema_version: 1,
            payload: vec![],
        }],
    };
    match store.append_blocking(vec![new("old")], causation.clone()) {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 3),
        other => panic!("an existing stream taken as new: {other:?}"),
    }
    store
        .append_blocking(vec![new("fresh")], causation)
        .unwrap();
    assert_eq!(store.head(), 4);
}

#[test]
fn a_stream_expected_at_a_version_is_checked_on_disk_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = buffered_store(dir.path());
        for name in ["behind", "right", "ahead"] {
            append_events(&store, name, 3);
        }
        store.flush_memtables_blocking().unwrap();
    }
    // A fresh store: no version is cached, so each check reads the disk
    // (each stream once: an answer may be cached after).
    let store = buffered_store(dir.path());
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(9)),
        principal: Principal::Admin,
    };
    let at = |name: &str, version: u64| StreamAppend {
        stream: StreamId::parse(&format!("job/acme/{name}")).unwrap(),
        expected: ExpectedVersion::Exact(version),
        events: vec![NewEvent {
            event_type: "Test".into(),
            schema_version: 1,
            payload: vec![],
        }],
    };
    for (name, version) in [("behind", 2), ("ahead", 4)] {
        match store.append_blocking(vec![at(name, version)], causation.clone()) {
            Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 3, "{name}"),
            other => panic!("{name}: version 3 taken for {version}: {other:?}"),
        }
    }
    store
        .append_blocking(vec![at("right", 3)], causation)
        .unwrap();
    assert_eq!(
        store
            .stream_version(&StreamId::parse("job/acme/right").unwrap())
            .unwrap(),
        4
    );
}
