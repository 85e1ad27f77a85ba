//! Opening a log: RocksDB's options and column families, the format
//! header, failures that say what to do, and the check of the log's tail.

use super::*;

/// Turns RocksDB's open failures into errors that say what to do.
pub(super) fn open_error(path: &Path, e: rocksdb::Error) -> StoreError {
    let text = e.into_string();
    if text.contains("LOCK")
        || text.contains("lock")
        || text.contains("Resource temporarily unavailable")
    {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else if text.contains("Corruption") {
        StoreError::Corrupted {
            path: path.to_path_buf(),
            what: format!("{text} (the write-ahead log holds a damaged record; to keep only what precedes it, losing later appends, open with WAL recovery point-in-time)"),
        }
    } else if text.contains("Column families not opened")
        || text.contains("does not exist")
        || text.contains("Invalid argument")
    {
        StoreError::NotALog {
            path: path.to_path_buf(),
            why: text,
        }
    } else {
        StoreError::Storage(text)
    }
}

pub(super) fn check_or_write_header(
    db: &DB,
    path: &Path,
    now: Option<Timestamp>,
) -> Result<(), StoreError> {
    let meta = cf(db, CF_META);
    match db.get_cf(meta, META_FORMAT)? {
        Some(bytes) => {
            let header: FormatHeader = unseal(&bytes).map_err(|why| StoreError::NotALog {
                path: path.to_path_buf(),
                why: format!("unreadable format header: {why}"),
            })?;
            if header.magic != FORMAT_MAGIC {
                return Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: format!("format magic is {:?}", header.magic),
                });
            }
            if header.major > FORMAT_MAJOR {
                return Err(StoreError::NewerFormat {
                    path: path.to_path_buf(),
                    found_major: header.major,
                    found_minor: header.minor,
                });
            }
            Ok(())
        }
        None => {
            let has_events = db
                .iterator_cf(cf(db, CF_LOG), IteratorMode::Start)
                .next()
                .is_some();
            match now {
                Some(now) if !has_events => {
                    let header = FormatHeader {
                        magic: FORMAT_MAGIC.into(),
                        major: FORMAT_MAJOR,
                        minor: FORMAT_MINOR,
                        created_at: now,
                    };
                    let mut opts = rocksdb::WriteOptions::default();
                    opts.set_sync(true);
                    db.put_cf_opt(meta, META_FORMAT, seal(&header)?, &opts)?;
                    Ok(())
                }
                Some(_) => Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: "events without a format header".into(),
                }),
                None => Err(StoreError::NotALog {
                    path: path.to_path_buf(),
                    why: "no format header (empty or foreign database)".into(),
                }),
            }
        }
    }
}

/// Test hook: rewrites the header as if a newer lote had written the log.
#[doc(hidden)]
pub fn write_format_header_for_test(path: &Path, major: u32, minor: u32) -> Result<(), StoreError> {
    let db = DB::open_cf_descriptors(&db_options(WalRecovery::Strict), path, cf_descriptors())?;
    let header = FormatHeader {
        magic: FORMAT_MAGIC.into(),
        major,
        minor,
        created_at: Timestamp::EPOCH,
    };
    db.put_cf(cf(&db, CF_META), META_FORMAT, seal(&header)?)?;
    Ok(())
}

/// Finds the head and checks the newest records: the head record must be
/// the log's last entry, and the last [`TAIL_VERIFY_RECORDS`] entries must
/// be contiguous, point at events that exist, carry their own position and
/// pass their checksums. Anything else means the directory was damaged
/// outside RocksDB's atomic batches, and starting would mean wrong state.
pub(super) fn verify_tail(db: &DB, path: &Path) -> Result<u64, StoreError> {
    let corrupted = |what: String| StoreError::Corrupted {
        path: path.to_path_buf(),
        what,
    };
    let meta_head = match db.get_cf(cf(db, CF_META), META_HEAD)? {
        Some(bytes) => {
            be_u64(&bytes).ok_or_else(|| corrupted("head record of wrong length".into()))?
        }
        None => 0,
    };
    let mut iter = db.iterator_cf(cf(db, CF_LOG), IteratorMode::End);
    let last = match iter.next() {
        Some(item) => {
            let (key, _) = item?;
            be_u64(&key).ok_or_else(|| corrupted("log key of wrong length".into()))?
        }
        None => 0,
    };
    if last != meta_head {
        return Err(corrupted(format!(
            "the head record says {meta_head} but the log ends at {last}"
        )));
    }
    let from = meta_head.saturating_sub(TAIL_VERIFY_RECORDS) + 1;
    let mut expected = from;
    let events = cf(db, CF_EVENTS);
    for item in db.iterator_cf(
        cf(db, CF_LOG),
        IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
    ) {
        let (key, event_key) = item?;
        let position = be_u64(&key).ok_or_else(|| corrupted("log key of wrong length".into()))?;
        if position != expected {
            return Err(corrupted(format!("log position {expected} is missing")));
        }
        let bytes = db.get_cf(events, &event_key)?.ok_or_else(|| {
            corrupted(format!("log position {position} points at a missing event"))
        })?;
        let envelope: Envelope = unseal(&bytes)
            .map_err(|why| corrupted(format!("event at position {position}: {why}")))?;
        if envelope.position != position {
            return Err(corrupted(format!(
                "event at log position {position} says it is at {}",
                envelope.position
            )));
        }
        expected += 1;
    }
    if meta_head > 0 && expected != meta_head + 1 {
        return Err(corrupted(format!(
            "log ends at {} but the head is {meta_head}",
            expected - 1
        )));
    }
    Ok(meta_head)
}

/// Most write-ahead log kept before old memtables are flushed.
const WAL_REPLAY_MAX_BYTES: u64 = 64 << 20;

pub(super) fn db_options(recovery: WalRecovery) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Strict: a torn tail (a crash mid-write) is cut back to the last whole
    // write batch, which is the last durable append since batches are
    // atomic; a checksum failure anywhere else refuses to open.
    opts.set_wal_recovery_mode(match recovery {
        WalRecovery::Strict => rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords,
        WalRecovery::PointInTime => rocksdb::DBRecoveryMode::PointInTime,
    });
    opts.set_paranoid_checks(true);
    opts.set_max_background_jobs(2);
    opts.set_write_buffer_size(64 * 1024 * 1024);
    opts.set_max_write_buffer_number(4);
    // The write-ahead log a crash leaves to replay is bounded: past this
    // much, RocksDB flushes the families whose memtables keep old log files
    // alive (the log and meta families fill their memtables slowly, so
    // without a bound every log file since their last flush was kept and
    // replayed: most of a million-event restart after a crash).
    opts.set_max_total_wal_size(WAL_REPLAY_MAX_BYTES);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_keep_log_file_num(4);
    opts
}

pub(super) fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    [CF_EVENTS, CF_LOG, CF_SNAPSHOTS, CF_META]
        .into_iter()
        .map(|name| {
            let mut options = db_options(WalRecovery::Strict);
            if name == CF_EVENTS {
                // Whole-key bloom filters: whether a new stream exists is a
                // point read of its first event's key, and a miss is the
                // common answer (every task added); the filter answers it
                // without reading a table. Tables written before had none
                // and are read as before.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                options.set_block_based_table_factory(&table);
                // The same for the memtables, where the newest keys are: a
                // task's stream is read by key (its first versions at once,
                // see `EventStore::read_stream`), and each version it does
                // not have yet searched a 64 MiB skip list in vain. On the
                // dispatch benchmark the memtable lookups went from 7% of the
                // control plane's thread to 4%. About 1.3 MiB of bits a
                // memtable.
                options.set_memtable_prefix_bloom_ratio(0.02);
                options.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(name, options)
        })
        .collect()
}
