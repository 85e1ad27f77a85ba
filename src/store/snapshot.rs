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
