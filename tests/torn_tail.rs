//! A damaged log is recovered to its last durable record or refused with a
//! clear error; it never opens with silently wrong state.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lote::store::{
    Envelope, EventStore, ExpectedVersion, NewEvent, StoreError, StoreOptions, StreamAppend,
    StreamId, WalRecovery,
};
use lote::types::{Causation, Principal, RequestId};

const EVENTS: u64 = 200;

/// Writes EVENTS events, one fsynced append each, and returns them.
fn write_log(dir: &Path) -> Vec<Envelope> {
    let store = EventStore::open(dir, StoreOptions::default(), Arc::new(clock())).unwrap();
    let causation = Causation {
        request_id: RequestId(uuid::Uuid::from_u128(1)),
        principal: Principal::Admin,
    };
    for n in 0..EVENTS {
        let stream = StreamId::parse(&format!("task/acme/job/t{}", n % 13)).unwrap();
        let event = NewEvent {
            event_type: "Test".into(),
            schema_version: 1,
            payload: vec![n as u8; 64],
        };
        store
            .append_blocking(
                vec![StreamAppend {
                    stream,
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                }],
                causation.clone(),
            )
            .unwrap();
    }
    store.read_all(1, 10_000).unwrap()
}

/// The newest write-ahead log file, where the last appends are.
fn newest_wal(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "log") && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    logs.sort();
    logs.pop().expect("a non-empty WAL file")
}

/// Opens the damaged directory and checks the outcome is acceptable:
/// either a clear refusal, or a log that is exactly a prefix of what was
/// written (whole events, contiguous positions, matching payloads).
fn reopen_and_check(dir: &Path, original: &[Envelope]) -> Result<u64, StoreError> {
    match EventStore::open(dir, StoreOptions::default(), Arc::new(clock())) {
        Err(e) => {
            let text = e.to_string();
            assert!(
                matches!(e, StoreError::Corrupted { .. } | StoreError::Storage(_)),
                "unexpected kind of refusal: {text}"
            );
            assert!(text.len() > 20, "refusal must explain itself: {text}");
            Err(e)
        }
        Ok(store) => {
            let recovered = store.read_all(1, 10_000).unwrap();
            assert_eq!(store.head(), recovered.len() as u64);
            assert_eq!(
                recovered[..],
                original[..recovered.len()],
                "recovered log is not a prefix of the written one"
            );
            assert_eq!(store.verify_log_index().unwrap(), recovered.len() as u64);
            // Appending continues right after the recovered head.
            let causation = Causation {
                request_id: RequestId(uuid::Uuid::from_u128(2)),
                principal: Principal::Admin,
            };
            let stream = StreamId::parse("task/acme/job/after").unwrap();
            let event = NewEvent {
                event_type: "Test".into(),
                schema_version: 1,
                payload: vec![],
            };
            let r = store
                .append_blocking(
                    vec![StreamAppend {
                        stream,
                        expected: ExpectedVersion::Any,
                        events: vec![event],
                    }],
                    causation,
                )
                .unwrap();
            assert_eq!(r.last_position, recovered.len() as u64 + 1);
            Ok(recovered.len() as u64)
        }
    }
}

#[test]
fn a_torn_tail_recovers_to_the_last_whole_append() {
    for cut in [1u64, 7, 33, 150] {
        let dir = tempfile::tempdir().unwrap();
        let original = write_log(dir.path());
        let wal = newest_wal(dir.path());
        let len = std::fs::metadata(&wal).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        let recovered = reopen_and_check(dir.path(), &original)
            .unwrap_or_else(|e| panic!("cut {cut}: a torn tail must recover, got {e}"));
        assert!(
            recovered < EVENTS,
            "cut {cut}: the torn append must be gone"
        );
        assert!(
            recovered >= EVENTS - 3,
            "cut {cut}: only the torn append may be lost, {recovered} left"
        );
    }
}

/// Flips bytes in the WAL at `fraction` of its length.
fn damage(dir: &Path, fraction: f64) {
    let wal = newest_wal(dir);
    let len = std::fs::metadata(&wal).unwrap().len();
    let offset = ((len as f64) * fraction) as u64;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&wal)
        .unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[0xA5, 0x5A, 0xFF]).unwrap();
}

#[test]
fn flipped_bytes_refuse_to_open_with_a_clear_error() {
    // Near the end (inside the last records) and in the middle of the WAL:
    // acknowledged appends follow the damage, so dropping them silently
    // would be wrong state. lote refuses and says how to salvage.
    for fraction in [0.995f64, 0.5] {
        let dir = tempfile::tempdir().unwrap();
        let original = write_log(dir.path());
        damage(dir.path(), fraction);
        let err = reopen_and_check(dir.path(), &original).expect_err("damage must be refused");
        assert!(matches!(err, StoreError::Corrupted { .. }), "{err}");
        assert!(
            err.to_string().contains("point-in-time"),
            "the error must say how to salvage: {err}"
        );
        assert!(matches!(
            EventStore::open_read_only(dir.path()),
            Err(StoreError::Corrupted { .. })
        ));
    }
}

#[test]
fn an_operator_can_salvage_the_prefix_before_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_log(dir.path());
    damage(dir.path(), 0.5);
    let options = StoreOptions {
        wal_recovery: WalRecovery::PointInTime,
        ..StoreOptions::default()
    };
    let store = EventStore::open(dir.path(), options, Arc::new(clock())).unwrap();
    let recovered = store.read_all(1, 10_000).unwrap();
    assert!(
        !recovered.is_empty() && recovered.len() < original.len(),
        "{} of {}",
        recovered.len(),
        original.len()
    );
    assert_eq!(recovered[..], original[..recovered.len()]);
    assert_eq!(store.verify_log_index().unwrap(), recovered.len() as u64);
}
