//! Snapshots: an entity's folded state at a stream version, an
//! optimisation only (deleting them all loses nothing).

use super::*;

impl EventStore {
    /// Saves a snapshot of a stream's state. Written outside the log's write
    /// batches: losing one costs only rebuild time.
    pub fn save_snapshot(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        db.put_cf(
            cf(db, CF_SNAPSHOTS),
            stream.as_str().as_bytes(),
            seal(snapshot)?,
        )?;
        Ok(())
    }

    /// The stream's snapshot, if any. A damaged snapshot is reported as
    /// absent (and logged): it is only an optimisation.
    pub fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let db = &self.inner.db;
        match db.get_cf(cf(db, CF_SNAPSHOTS), stream.as_str().as_bytes())? {
            None => Ok(None),
            Some(bytes) => match unseal::<Snapshot>(&bytes) {
                Ok(s) => Ok(Some(s)),
                Err(why) => {
                    tracing::warn!(%stream, %why, "ignoring a damaged snapshot");
                    Ok(None)
                }
            },
        }
    }

    /// Removes every snapshot (state must not change: they are a cache).
    pub fn delete_all_snapshots(&self) -> Result<u64, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        let cf = cf(db, CF_SNAPSHOTS);
        let mut count = 0;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item?;
            db.delete_cf(cf, key)?;
            count += 1;
        }
        Ok(count)
    }

    /// Number of snapshots stored.
    pub fn snapshot_count(&self) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut count = 0;
        for item in db.iterator_cf(cf(db, CF_SNAPSHOTS), IteratorMode::Start) {
            item?;
            count += 1;
        }
        Ok(count)
    }
}

/// Where records beside the log are kept: the meta family, under a prefix
/// no key of the store's own (`format`, `head`) starts with.
const SIDE_PREFIX: &[u8] = b"side/";

/// A side record: its key within its kind, and its value.
pub type SideRecord = (Vec<u8>, Vec<u8>);

/// Side records: small facts a component keeps beside the log that are no
/// part of any entity's history (the Azure gateway's answers to changing
/// requests, kept for as long as their signatures can be replayed). Not
/// events: replay and audit never see them, and losing one loses no state.
impl EventStore {
    fn side_key(kind: &str, key: &[u8]) -> Vec<u8> {
        let mut k = SIDE_PREFIX.to_vec();
        k.extend_from_slice(kind.as_bytes());
        k.push(b'/');
        k.extend_from_slice(key);
        k
    }

    /// Keeps `value` under `kind`/`key`, through the write-ahead log (so a
    /// killed process keeps it) but without waiting for a sync.
    pub fn put_side(&self, kind: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        db.put_cf(cf(db, CF_META), Self::side_key(kind, key), value)?;
        Ok(())
    }

    pub fn delete_side(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly);
        }
        let db = &self.inner.db;
        db.delete_cf(cf(db, CF_META), Self::side_key(kind, key))?;
        Ok(())
    }

    /// Every record of `kind`, as (key, value).
    pub fn side_records(&self, kind: &str) -> Result<Vec<SideRecord>, StoreError> {
        let db = &self.inner.db;
        let prefix = Self::side_key(kind, b"");
        let mut out = Vec::new();
        let from = IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        for item in db.iterator_cf(cf(db, CF_META), from) {
            let (key, value) = item?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((rest.to_vec(), value.to_vec()));
        }
        Ok(out)
    }
}
