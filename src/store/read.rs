//! Reading the log: one stream (an entity's history), the whole log by
//! position (from memory for the newest rounds), streams by prefix, and
//! live subscriptions.

use super::*;

impl EventStore {
    /// Events of one stream with version >= `from_version`, at most `limit`.
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let from = from_version.max(1);
        // Versions are dense (1, 2, 3... with no deletes), so the first
        // events are fetched by key: most reads are an actor activated on a
        // short stream or a catch-up of an event or two, and creating an
        // iterator cost more than the rest of such a read.
        let by_key = STREAM_EVENTS_BY_KEY.min(limit as u64);
        let mut out = self
            .read_by_key([(stream, from)], by_key)?
            .pop()
            .unwrap_or_default();
        // Fewer than asked: the stream ends there, or its next event is
        // not durable yet.
        if (out.len() as u64) < by_key || out.len() >= limit {
            return Ok(out);
        }
        // Rounds written but not yet fsynced are invisible until the head
        // moves past them (positions grow along a stream).
        let head = self.head();
        let db = &self.inner.db;
        let cf = cf(db, CF_EVENTS);
        let start = event_key(stream, from + by_key);
        let mut read = ReadOptions::default();
        // Keys of this stream are `stream \0 version`; `stream \1` is past
        // them all, so the iterator never wanders into the next stream.
        let mut upper = stream.as_str().as_bytes().to_vec();
        upper.push(1);
        read.set_iterate_upper_bound(upper);
        for item in db.iterator_cf_opt(cf, read, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if out.len() >= limit {
                break;
            }
            let envelope = self.decode_envelope(&key, &value)?;
            if envelope.position > head {
                break;
            }
            out.push(envelope);
        }
        Ok(out)
    }

    /// The whole of each of `streams` that has fewer than
    /// [`STREAM_STARTS_BY_KEY`] events, read in one batch (a placement
    /// round's tasks: one RocksDB MultiGet, which shares its index and
    /// block lookups among neighbouring keys, instead of one per task).
    /// `None` for a stream that may be longer: read it with
    /// [`EventStore::read_stream`].
    pub fn read_stream_starts<'s>(
        &self,
        streams: impl IntoIterator<Item = &'s StreamId>,
    ) -> Result<Vec<Option<Vec<Envelope>>>, StoreError> {
        let read = self.read_by_key(streams.into_iter().map(|s| (s, 1)), STREAM_STARTS_BY_KEY)?;
        Ok(read
            .into_iter()
            .map(|events| ((events.len() as u64) < STREAM_STARTS_BY_KEY).then_some(events))
            .collect())
    }

    /// Versions `from .. from + count` of each stream, fetched by key in
    /// one batch; each stream's list stops before the first version that
    /// is missing or not durable yet.
    fn read_by_key<'s>(
        &self,
        streams: impl IntoIterator<Item = (&'s StreamId, u64)>,
        count: u64,
    ) -> Result<Vec<Vec<Envelope>>, StoreError> {
        let db = &self.inner.db;
        let cf = cf(db, CF_EVENTS);
        // Rounds written but not yet fsynced are invisible until the head
        // moves past them (positions grow along a stream).
        let head = self.head();
        let mut buffer = Vec::new();
        let mut ends = Vec::new();
        for (stream, from) in streams {
            self.inner
                .stats
                .stream_reads
                .fetch_add(1, Ordering::Relaxed);
            for version in from..from + count {
                event_key_append(&mut buffer, stream, version);
                ends.push(buffer.len());
            }
        }
        let keys: Vec<&[u8]> = (0..ends.len())
            .map(|i| &buffer[if i == 0 { 0 } else { ends[i - 1] }..ends[i]])
            .collect();
        let values = db.batched_multi_get_cf(cf, keys.iter().copied(), false);
        let per_stream = count.max(1) as usize;
        let mut out = Vec::with_capacity(keys.len() / per_stream);
        for (keys, values) in keys.chunks(per_stream).zip(values.chunks(per_stream)) {
            let mut events = Vec::new();
            for (key, value) in keys.iter().zip(values) {
                let Some(value) = value.as_ref().map_err(|e| StoreError::from(e.clone()))? else {
                    break;
                };
                let envelope = self.decode_envelope(key, value)?;
                if envelope.position > head {
                    break;
                }
                events.push(envelope);
            }
            out.push(events);
        }
        Ok(out)
    }

    pub(super) fn decode_envelope(&self, key: &[u8], value: &[u8]) -> Result<Envelope, StoreError> {
        unseal::<Envelope>(value).map_err(|what| StoreError::Corrupted {
            path: self.inner.path.clone(),
            what: format!(
                "event record {}: {what}",
                String::from_utf8_lossy(key).replace('\0', "@")
            ),
        })
    }

    /// Events of the whole log from `from_position` on, at most `limit`.
    pub fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let db = &self.inner.db;
        let from = from_position.max(1);
        let head = self.head();
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        let to = head.min(from.saturating_add(limit as u64 - 1));
        if let Some(events) = self.read_recent(from, to)? {
            return Ok(events);
        }
        let keys = match self.log_keys_at(from, to) {
            Some(keys) => keys,
            None => self.log_keys_scanned(from, head, limit)?,
        };
        let events = cf(db, CF_EVENTS);
        let values = db.multi_get_cf(keys.iter().map(|k| (events, k.as_slice())));
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            let value = value?.ok_or_else(|| StoreError::Corrupted {
                path: self.inner.path.clone(),
                what: format!(
                    "log entry points at missing event {}",
                    String::from_utf8_lossy(key).replace('\0', "@")
                ),
            })?;
            out.push(self.decode_envelope(key, &value)?);
        }
        Ok(out)
    }

    /// Events `from..=to` from the rounds kept in memory (see `recent`), if
    /// `from` is among them; possibly fewer.
    pub(super) fn read_recent(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Option<Vec<Envelope>>, StoreError> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(records) = recent.read(from, to) else {
            return Ok(None);
        };
        records
            .into_iter()
            .map(|(position, record)| {
                unseal::<Envelope>(record).map_err(|what| StoreError::Corrupted {
                    path: self.inner.path.clone(),
                    what: format!("event at position {position}, as written: {what}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The event keys at log positions `from..=to`, fetched by position:
    /// positions are dense (every round takes the next ones, a failed round
    /// gives its positions back), so no iterator is needed, and creating
    /// one is most of the cost of a subscription's small, frequent reads.
    /// None if any is missing, for the caller to scan instead.
    pub(super) fn log_keys_at(&self, from: u64, to: u64) -> Option<Vec<Vec<u8>>> {
        let db = &self.inner.db;
        let log = cf(db, CF_LOG);
        let positions: Vec<[u8; 8]> = (from..=to).map(u64::to_be_bytes).collect();
        db.multi_get_cf(positions.iter().map(|p| (log, p.as_slice())))
            .into_iter()
            .map(|value| value.ok().flatten())
            .collect()
    }

    /// The event keys from log position `from` on, at most `limit`, up to
    /// `head`, by scanning the log.
    pub(super) fn log_keys_scanned(
        &self,
        from: u64,
        head: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let db = &self.inner.db;
        let start = from.to_be_bytes();
        let mut keys = Vec::new();
        for item in db.iterator_cf(
            cf(db, CF_LOG),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (position, value) = item?;
            if be_u64(&position).is_none_or(|p| p > head) {
                break;
            }
            keys.push(value.to_vec());
            if keys.len() >= limit {
                break;
            }
        }
        Ok(keys)
    }

    /// Visits every event grouped by stream (streams in key order, events in
    /// version order), optionally only streams starting with `prefix`. The
    /// sequential scan that replay and per-kind listings use.
    pub fn scan_streams(
        &self,
        prefix: Option<&str>,
        mut visit: impl FnMut(Envelope) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_streams_after(prefix.unwrap_or(""), None, |e| visit(e).map(|_| true))
    }

    /// Like [`scan_streams`](Self::scan_streams), starting at the first
    /// stream after `after` (a stream id under `prefix`), and stopping as
    /// soon as `visit` returns `false`: one page of a listing costs the page,
    /// not the whole prefix.
    pub fn scan_streams_after(
        &self,
        prefix: &str,
        after: Option<&StreamId>,
        mut visit: impl FnMut(Envelope) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let db = &self.inner.db;
        let prefix = prefix.as_bytes();
        // Stream keys are `stream \0 version`; `stream \x01` sorts after
        // every key of that stream.
        let start = match after {
            Some(stream) => {
                let mut key = stream.as_str().as_bytes().to_vec();
                key.push(1);
                key
            }
            None => prefix.to_vec(),
        };
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        for item in db.iterator_cf_opt(
            cf(db, CF_EVENTS),
            read,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(self.decode_envelope(&key, &value)?)? {
                break;
            }
        }
        Ok(())
    }

    /// Checks that the global log is whole: positions 1..=head each name an
    /// event record. Returns the number of log entries.
    pub fn verify_log_index(&self) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut expected = 1u64;
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        for item in db.iterator_cf_opt(cf(db, CF_LOG), read, IteratorMode::Start) {
            let (key, _) = item?;
            let position =
                be_u64(&key).ok_or_else(|| self.corrupted("log key of wrong length".into()))?;
            if position != expected {
                return Err(self.corrupted(format!(
                    "log position {expected} is missing (next is {position})"
                )));
            }
            expected += 1;
        }
        let count = expected - 1;
        if count != self.head() {
            return Err(self.corrupted(format!(
                "log holds {count} entries but its head says {}",
                self.head()
            )));
        }
        Ok(count)
    }

    pub(super) fn corrupted(&self, what: String) -> StoreError {
        StoreError::Corrupted {
            path: self.inner.path.clone(),
            what,
        }
    }

    /// Events from position `from` through `to` (a position the log has
    /// reached), at most `limit` and at least one: a log with no event
    /// where its head says there is one is damaged.
    pub fn read_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let mut batch = self.read_all(from, limit)?;
        batch.truncate(batch.partition_point(|e| e.position <= to));
        if batch.is_empty() {
            return Err(self.corrupted(format!(
                "position {from} is below the head but not readable"
            )));
        }
        Ok(batch)
    }

    /// A live tail of the log from `from_position` (inclusive): every event,
    /// in order, first the recorded ones, then new ones as they commit.
    pub fn subscribe(&self, from_position: u64) -> Subscription {
        Subscription {
            store: self.clone(),
            next: from_position.max(1),
            buffer: std::collections::VecDeque::new(),
            head: self.inner.head.clone(),
        }
    }
}

/// A live, ordered tail of the log. See [`EventStore::subscribe`].
pub struct Subscription {
    store: EventStore,
    next: u64,
    buffer: std::collections::VecDeque<Envelope>,
    head: watch::Receiver<u64>,
}

impl Subscription {
    /// The next event, waiting for one to be recorded if need be. Ends with
    /// [`StoreError::Closed`] when the store shuts down.
    pub async fn next(&mut self) -> Result<Envelope, StoreError> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.next = envelope.position + 1;
                return Ok(envelope);
            }
            let head = *self.head.borrow_and_update();
            if head >= self.next {
                let read = self
                    .store
                    .read_range(self.next, head, SUBSCRIPTION_READ_BATCH)?;
                self.buffer.extend(read);
                continue;
            }
            if self.head.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// The next events in order, at least one and at most `max`: what is
    /// already read, or one read of the log, waiting for a commit only
    /// when there is nothing. A reader that folds per batch (placement)
    /// pays its per-message costs once per batch, not per event.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Envelope>, StoreError> {
        let first = self.next().await?;
        let mut batch = Vec::with_capacity(self.buffer.len().min(max.max(1)) + 1);
        batch.push(first);
        while batch.len() < max {
            let Some(envelope) = self.buffer.pop_front() else {
                break;
            };
            self.next = envelope.position + 1;
            batch.push(envelope);
        }
        Ok(batch)
    }

    /// Position of the next event this subscription will deliver.
    pub fn next_position(&self) -> u64 {
        self.next
    }
}

impl EventStore {
    /// The log from `from` through `to`, in order, handed to `each` in
    /// batches of at most `batch` events until it returns false: the long
    /// sequential read a restart's catch-up makes. Two iterators walk it:
    /// one down the log's positions, one through the events, which mostly
    /// steps to the next record (a round's events of one stream sit side by
    /// side, as do streams made together) and seeks only when the log
    /// jumps. Fetching every event by key instead (`read_all`) spent four
    /// fifths of a million-event restart in RocksDB's multi-get.
    pub fn read_log_in_batches(
        &self,
        from: u64,
        to: u64,
        batch: usize,
        mut each: impl FnMut(Vec<Envelope>) -> bool,
    ) -> Result<(), StoreError> {
        let db = &self.inner.db;
        let mut log = db.raw_iterator_cf(cf(db, CF_LOG));
        log.seek(from.max(1).to_be_bytes());
        let mut options = ReadOptions::default();
        options.set_readahead_size(1 << 20);
        let mut events = db.raw_iterator_cf_opt(cf(db, CF_EVENTS), options);
        let mut out = Vec::with_capacity(batch.max(1));
        loop {
            let (Some(position), Some(key)) = (log.key(), log.value()) else {
                log.status()?;
                break;
            };
            let position = be_u64(position)
                .ok_or_else(|| self.corrupted("a log key is not a position".into()))?;
            if position > to {
                break;
            }
            if events.key() != Some(key) {
                events.seek(key);
            }
            let Some(value) = events.value().filter(|_| events.key() == Some(key)) else {
                events.status()?;
                return Err(self.corrupted(format!(
                    "log position {position} points at missing event {}",
                    String::from_utf8_lossy(key).replace('\0', "@")
                )));
            };
            out.push(self.decode_envelope(key, value)?);
            events.next();
            log.next();
            if out.len() >= batch.max(1) && !each(std::mem::take(&mut out)) {
                return Ok(());
            }
        }
        if !out.is_empty() {
            each(out);
        }
        Ok(())
    }
}
