//! The default blob backend: files in the server's data directory.
//!
//! ```text
//! DATA_DIR/blobs/
//!   tmp/                         uploads in progress (emptied at start)
//!   index/                       RocksDB: (account, container, name) → meta,
//!                                (account, sha256) → how many names use it
//!   ACCOUNT/objects/ab/abcd…     content, named by its SHA-256
//! ```
//!
//! Content-addressed: a name points at an object; identical uploads share
//! one object, and a download by checksum never mixes two versions of a
//! name. The index is its own RocksDB (not the event log): it is the
//! store's table of contents, not a history of facts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{IteratorMode, Options, WriteBatch, DB};
use sha2::{Digest, Sha256};

use super::direct::{self, DirectWriter};
use super::{hex, is_sha256_hex, BlobError, BlobMeta, BlobStore, BlobWriter};
use crate::store::Durability;
use crate::types::{AccountName, Timestamp};

/// Blobs under a data directory.
pub struct LocalBlobStore {
    root: PathBuf,
    index: DB,
    /// Serialises index read-modify-writes (reference counts).
    lock: Mutex<()>,
    /// The server's `--durability`: with `Sync` an upload is on disk
    /// (content, name, index) before it is acknowledged; with `Buffered` it
    /// is acknowledged once the OS has it, like the log's appends, and a
    /// machine crash can take back the latest uploads (a damaged object
    /// then fails the SHA-256 every reader checks, never passes as data).
    durability: Durability,
}

const SEP: u8 = 0;

fn meta_key(account: &AccountName, container: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + account.as_str().len() + container.len() + name.len() + 2);
    k.push(b'm');
    k.extend_from_slice(account.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(container.as_bytes());
    k.push(SEP);
    k.extend_from_slice(name.as_bytes());
    k
}

fn ref_key(account: &AccountName, sha256: &str) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(account.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(sha256.as_bytes());
    k
}

fn rocks(e: rocksdb::Error) -> BlobError {
    BlobError::Io(format!("blob index: {e}"))
}

fn codec(e: crate::codec::CodecError) -> BlobError {
    BlobError::Io(format!("blob index record: {e}"))
}

impl LocalBlobStore {
    /// Opens (or creates) the store under `data_dir/blobs`, dropping any
    /// upload a crash interrupted.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Arc<Self>, BlobError> {
        let root = data_dir.join("blobs");
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| BlobError::io("clearing uploads", e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| BlobError::io("creating the blob store", e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let index = DB::open(&opts, root.join("index")).map_err(rocks)?;
        Ok(Arc::new(LocalBlobStore {
            root,
            index,
            lock: Mutex::new(()),
            durability,
        }))
    }

    fn object_path(&self, account: &AccountName, sha256: &str) -> PathBuf {
        self.root
            .join(account.as_str())
            .join("objects")
            .join(&sha256[..2])
            .join(sha256)
    }

    fn refs(&self, account: &AccountName, sha256: &str) -> Result<u64, BlobError> {
        Ok(
            match self.index.get(ref_key(account, sha256)).map_err(rocks)? {
                Some(v) => crate::codec::decode(&v).map_err(codec)?,
                None => 0,
            },
        )
    }

    /// Whether uploads are fsynced before they are acknowledged.
    fn syncs(&self) -> bool {
        self.durability == Durability::Sync
    }

    fn sync_write(&self, batch: WriteBatch) -> Result<(), BlobError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(self.syncs());
        self.index.write_opt(batch, &opts).map_err(rocks)
    }

    /// Points `meta.name` at its object, replacing what it pointed at.
    fn link(&self, account: &AccountName, meta: &BlobMeta) -> Result<(), BlobError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = meta_key(account, &meta.container, &meta.name);
        let old = self.get_meta(&key)?;
        let mut batch = WriteBatch::default();
        batch.put(&key, crate::codec::encode(meta).map_err(codec)?);
        let mut unused = None;
        match &old {
            Some(old) if old.sha256 == meta.sha256 => {}
            _ => {
                let n = self.refs(account, &meta.sha256)? + 1;
                batch.put(
                    ref_key(account, &meta.sha256),
                    crate::codec::encode(&n).map_err(codec)?,
                );
                if let Some(old) = &old {
                    unused = self.unref(&mut batch, account, &old.sha256)?;
                }
            }
        }
        self.sync_write(batch)?;
        if let Some(sha) = unused {
            let _ = std::fs::remove_file(self.object_path(account, &sha));
        }
        Ok(())
    }

    /// Drops one reference; the object's checksum if none is left.
    fn unref(
        &self,
        batch: &mut WriteBatch,
        account: &AccountName,
        sha256: &str,
    ) -> Result<Option<String>, BlobError> {
        let n = self.refs(account, sha256)?.saturating_sub(1);
        if n == 0 {
            batch.delete(ref_key(account, sha256));
            Ok(Some(sha256.to_string()))
        } else {
            batch.put(
                ref_key(account, sha256),
                crate::codec::encode(&n).map_err(codec)?,
            );
            Ok(None)
        }
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<BlobMeta>, BlobError> {
        match self.index.get(key).map_err(rocks)? {
            Some(v) => Ok(Some(crate::codec::decode(&v).map_err(codec)?)),
            None => Ok(None),
        }
    }
}

struct LocalWriter {
    store: Arc<LocalBlobStore>,
    account: AccountName,
    container: String,
    name: String,
    at: Timestamp,
    tmp: PathBuf,
    /// None once committed.
    spool: Option<Spool>,
    hasher: Sha256,
    written: u64,
}

/// The upload's file: still taking bytes, or complete on disk.
enum Spool {
    Writing(DirectWriter),
    Written(File),
}

impl LocalWriter {
    /// The complete file: every staged write done.
    fn written_file(&mut self) -> Result<&File, BlobError> {
        if matches!(self.spool, Some(Spool::Writing(_))) {
            if let Some(Spool::Writing(w)) = self.spool.take() {
                let file = w
                    .finish()
                    .map_err(|e| BlobError::io("writing the upload", e))?;
                self.spool = Some(Spool::Written(file));
            }
        }
        match &self.spool {
            Some(Spool::Written(f)) => Ok(f),
            _ => Err(BlobError::Io("upload already finished".into())),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not committed (or committed: then the file was renamed away).
        // The writer's thread is stopped first, so no write lands after.
        drop(self.spool.take());
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl BlobWriter for LocalWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let Some(Spool::Writing(file)) = self.spool.as_mut() else {
            return Err(BlobError::Io("upload already finished".into()));
        };
        // Hashed here while the writer's thread has the disk take the
        // block before; a piece at a time, so the copy into the block
        // reads what the hash just brought into the cache.
        for piece in data.chunks(super::HASH_PIECE_BYTES) {
            self.hasher.update(piece);
            file.write(piece)
                .map_err(|e| BlobError::io("writing the upload", e))?;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn spool_file(&mut self) -> Result<Option<&Path>, BlobError> {
        self.written_file()?;
        Ok(Some(&self.tmp))
    }

    fn commit(mut self: Box<Self>, size: u64, sha256: &str) -> Result<BlobMeta, BlobError> {
        let actual = hex(&std::mem::take(&mut self.hasher).finalize());
        if size != self.written {
            return Err(BlobError::Invalid(format!(
                "the upload announced {size} bytes but {} arrived; nothing was stored",
                self.written
            )));
        }
        if actual != sha256 {
            return Err(BlobError::Checksum {
                expected: sha256.to_string(),
                actual,
            });
        }
        let sync = self.store.syncs();
        let file = self.written_file()?;
        if sync {
            // Direct writes are on the device but perhaps in its cache,
            // and the file's size and blocks are metadata: both need this.
            file.sync_all()
                .map_err(|e| BlobError::io("flushing the upload", e))?;
        }
        self.spool = None;
        let object = self.store.object_path(&self.account, &actual);
        if !object.exists() {
            let dir = object.parent().expect("object paths have a parent");
            std::fs::create_dir_all(dir).map_err(|e| BlobError::io("creating objects", e))?;
            std::fs::rename(&self.tmp, &object)
                .map_err(|e| BlobError::io("storing the upload", e))?;
            if sync {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| BlobError::io("flushing objects", e))?;
            }
        }
        let meta = BlobMeta {
            container: self.container.clone(),
            name: self.name.clone(),
            size,
            sha256: actual,
            uploaded_at: self.at,
        };
        self.store.link(&self.account, &meta)?;
        Ok(meta)
    }
}

/// The store as the trait, for a caller that holds the `Arc`.
pub struct Shared(pub Arc<LocalBlobStore>);

impl BlobStore for Shared {
    fn begin(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
        at: Timestamp,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        super::validate_container(container)?;
        super::validate_blob_name(name)?;
        let tmp = self
            .0
            .root
            .join("tmp")
            .join(crate::clock::new_uuid().to_string());
        let file = DirectWriter::create(&tmp, self.0.syncs())
            .map_err(|e| BlobError::io("starting the upload", e))?;
        Ok(Box::new(LocalWriter {
            store: self.0.clone(),
            account: account.clone(),
            container: container.to_string(),
            name: name.to_string(),
            at,
            tmp,
            spool: Some(Spool::Writing(file)),
            hasher: Sha256::new(),
            written: 0,
        }))
    }

    fn stat(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
    ) -> Result<Option<BlobMeta>, BlobError> {
        self.0.get_meta(&meta_key(account, container, name))
    }

    fn read(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
        sha256: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, BlobError> {
        if !is_sha256_hex(sha256) {
            return Err(BlobError::Invalid(format!(
                "{sha256:?} is not a SHA-256 in lower-case hex"
            )));
        }
        // One open and one stat per read: the size bounds the read, and a
        // missing object says the name moved on (or never was).
        let file = match File::open(self.0.object_path(account, sha256)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(match self.stat(account, container, name)? {
                    None => BlobError::NotFound {
                        container: container.into(),
                        name: name.into(),
                    },
                    Some(_) => BlobError::Changed,
                })
            }
            Err(e) => return Err(BlobError::io("opening the blob", e)),
        };
        let size = file
            .metadata()
            .map_err(|e| BlobError::io("reading the blob", e))?
            .len();
        let offset = offset.min(size);
        let want = (size - offset).min(max_bytes as u64) as usize;
        let data = direct::read_at(&file, size, offset, want)
            .map_err(|e| BlobError::io("reading the blob", e))?;
        if data.len() != want {
            // Objects are never rewritten in place; a short read means the
            // file is not what its size said a moment ago.
            return Err(BlobError::Changed);
        }
        Ok(data)
    }

    fn list(
        &self,
        account: &AccountName,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, BlobError> {
        let start = match after {
            Some(after) if after >= prefix => {
                let mut k = meta_key(account, container, after);
                k.push(0);
                k
            }
            _ => meta_key(account, container, prefix),
        };
        let bound = meta_key(account, container, prefix);
        let mut out = Vec::new();
        for item in self
            .0
            .index
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(rocks)?;
            if !k.starts_with(&bound) || out.len() >= limit {
                break;
            }
            out.push(crate::codec::decode(&v).map_err(codec)?);
        }
        Ok(out)
    }

    fn containers(&self, account: &AccountName) -> Result<Vec<String>, BlobError> {
        let mut prefix = vec![b'm'];
        prefix.extend_from_slice(account.as_str().as_bytes());
        prefix.push(SEP);
        let mut out: Vec<String> = Vec::new();
        let mut from = prefix.clone();
        // One seek per container: jump past each container's names.
        loop {
            let mut it = self
                .0
                .index
                .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
            let Some(item) = it.next() else { break };
            let (k, _) = item.map_err(rocks)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let end = rest.iter().position(|b| *b == SEP).unwrap_or(rest.len());
            let name = String::from_utf8_lossy(&rest[..end]).into_owned();
            from = prefix.clone();
            from.extend_from_slice(name.as_bytes());
            from.push(SEP + 1);
            out.push(name);
        }
        Ok(out)
    }

    fn delete(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
    ) -> Result<bool, BlobError> {
        let store = &self.0;
        let _guard = store.lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = meta_key(account, container, name);
        let Some(old) = store.get_meta(&key)? else {
            return Ok(false);
        };
        let mut batch = WriteBatch::default();
        batch.delete(&key);
        let unused = store.unref(&mut batch, account, &old.sha256)?;
        store.sync_write(batch)?;
        if let Some(sha) = unused {
            let _ = std::fs::remove_file(store.object_path(account, &sha));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Shared, account: &AccountName, c: &str, n: &str, data: &[u8]) -> BlobMeta {
        let mut w = store.begin(account, c, n, Timestamp::EPOCH).unwrap();
        w.write(data).unwrap();
        let sha = hex(&Sha256::digest(data));
        w.commit(data.len() as u64, &sha).unwrap()
    }

    /// Both durabilities keep the same rules; only the fsyncs differ.
    const DURABILITIES: [Durability; 2] = [Durability::Sync, Durability::Buffered];

    #[test]
    fn upload_list_read_replace_delete() {
        for durability in DURABILITIES {
            upload_list_read_replace_delete_with(durability);
        }
    }

    fn upload_list_read_replace_delete_with(durability: Durability) {
        let dir = tempfile::tempdir().unwrap();
        let store = Shared(LocalBlobStore::open(dir.path(), durability).unwrap());
        let acme = AccountName::new("acme").unwrap();
        let other = AccountName::new("other").unwrap();
        let a = put(&store, &acme, "inputs", "img/1.png", b"one");
        put(&store, &acme, "inputs", "img/2.png", b"two");
        put(&store, &acme, "inputs", "readme", b"one");
        put(&store, &acme, "outputs", "x", b"x");
        let names = |p: &str, after: Option<&str>| {
            store
                .list(&acme, "inputs", p, after, 10)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("", None), ["img/1.png", "img/2.png", "readme"]);
        assert_eq!(names("img/", None), ["img/1.png", "img/2.png"]);
        assert_eq!(names("", Some("img/1.png")), ["img/2.png", "readme"]);
        assert_eq!(store.containers(&acme).unwrap(), ["inputs", "outputs"]);
        assert!(store.containers(&other).unwrap().is_empty());
        assert!(store.stat(&other, "inputs", "readme").unwrap().is_none());
        assert_eq!(
            store
                .read(&acme, "inputs", "img/1.png", &a.sha256, 1, 10)
                .unwrap(),
            b"ne"
        );
        // Two names share one object; dropping one keeps it for the other.
        assert!(store.delete(&acme, "inputs", "img/1.png").unwrap());
        assert!(!store.delete(&acme, "inputs", "img/1.png").unwrap());
        assert_eq!(
            store
                .read(&acme, "inputs", "readme", &a.sha256, 0, 10)
                .unwrap(),
            b"one"
        );
        // Replacing the last name of an object removes the object.
        put(&store, &acme, "inputs", "readme", b"new");
        assert_eq!(
            store.read(&acme, "inputs", "readme", &a.sha256, 0, 10),
            Err(BlobError::Changed)
        );
    }

    #[test]
    fn a_bad_checksum_or_size_stores_nothing_and_leaves_no_file() {
        for durability in DURABILITIES {
            a_bad_upload_stores_nothing_with(durability);
        }
    }

    fn a_bad_upload_stores_nothing_with(durability: Durability) {
        let dir = tempfile::tempdir().unwrap();
        let store = Shared(LocalBlobStore::open(dir.path(), durability).unwrap());
        let acme = AccountName::new("acme").unwrap();
        let mut w = store.begin(&acme, "inputs", "a", Timestamp::EPOCH).unwrap();
        w.write(b"abc").unwrap();
        let err = w.commit(3, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, BlobError::Checksum { .. }), "{err}");
        let mut w = store.begin(&acme, "inputs", "a", Timestamp::EPOCH).unwrap();
        w.write(b"abc").unwrap();
        assert!(w.commit(4, &hex(&Sha256::digest(b"abc"))).is_err());
        // An upload dropped half-way (a lost connection).
        let mut w = store.begin(&acme, "inputs", "a", Timestamp::EPOCH).unwrap();
        w.write(b"half").unwrap();
        drop(w);
        assert!(store.stat(&acme, "inputs", "a").unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(store
            .read(&acme, "inputs", "a", "../../../etc/passwd", 0, 10)
            .is_err());
    }
}
