//! The blob store and application packages behind the message API:
//! upload sessions, reads, lists, and package versions.
//!
//! Store calls block (disk), so each runs on tokio's blocking pool; the
//! server's one thread only routes. An upload session feeds its writer,
//! which runs on a thread of its own (see [`Feed`]); chunks that arrive
//! ahead of the next expected offset wait in the session (at most
//! [`PENDING_CHUNKS_MAX`]), so a client may keep a window of chunks in
//! flight without ordering them itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{ApiError, ErrorKind, Response};
use crate::blob::packages::{self, PACKAGES_CONTAINER};
use crate::blob::{BlobError, BlobMeta, BlobStore, BlobWriter, BLOB_CHUNK_BYTES, BLOB_LIST_MAX};
use crate::domain::spec::{validate_package_name, PackageRef};
use crate::domain::{Rejection, RejectionCode};
use crate::types::{AccountName, Timestamp};

/// Upload sessions open at once, over all accounts.
pub const UPLOADS_MAX: usize = 1024;
/// An upload with no chunk for this long is dropped (its bytes deleted).
pub const UPLOAD_IDLE_MAX: Duration = Duration::from_secs(600);
/// Chunks one session holds while it waits for an earlier one.
pub const PENDING_CHUNKS_MAX: usize = 2 * crate::blob::BLOB_WINDOW_CHUNKS;

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let code = match &e {
            BlobError::Invalid(_) => RejectionCode::InvalidValue,
            BlobError::NotFound { .. } => RejectionCode::BlobNotFound,
            BlobError::Changed => RejectionCode::BlobChanged,
            BlobError::Checksum { .. } => RejectionCode::ChecksumMismatch,
            BlobError::DiskFull(_) => RejectionCode::StorageFull,
            BlobError::Io(_) => return ApiError::new(ErrorKind::Internal, e.to_string()),
        };
        ApiError::rejected(code, e.to_string())
    }
}

struct Upload {
    /// Takes the bytes in order; gone once the upload finished or failed.
    writer: Option<Feed>,
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    touched: Instant,
    /// Set for a package version: the archive is checked before commit.
    package: Option<(String, String)>,
    /// Set for an app input: the name its content's SHA-256 must equal.
    content_name: Option<String>,
}

/// A blob writer on a thread of its own, fed the upload's bytes in order.
/// A chunk is acknowledged once queued there: the writer hashes and
/// writes while the next chunks arrive, instead of one blocking-pool hop
/// and one hashing pass per chunk on the chunk's own path (which left both
/// the writer and the connection idle half the time). A write that fails
/// is reported at the next chunk or at the finish, and ends the upload.
struct Feed {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    thread: std::thread::JoinHandle<WriterEnd>,
}

/// The writer back from its thread, and how its writes went.
type WriterEnd = (Box<dyn BlobWriter>, Result<(), BlobError>);

/// Chunks queued for an upload's writer: one being written, these waiting.
const FEED_CHUNKS: usize = 2;

impl Feed {
    fn start(mut writer: Box<dyn BlobWriter>) -> Result<Feed, ApiError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(FEED_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("blob-upload".into())
            .stack_size(256 << 10)
            .spawn(move || {
                while let Some(data) = rx.blocking_recv() {
                    if let Err(e) = writer.write(&data) {
                        return (writer, Err(e));
                    }
                }
                (writer, Ok(()))
            })
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Overloaded,
                    format!("no thread for the upload ({e}); try again shortly"),
                )
            })?;
        Ok(Feed { tx, thread })
    }

    /// Queues `data`; Err once the writer failed (its error).
    async fn send(&self, data: Vec<u8>) -> Result<(), ()> {
        self.tx.send(data).await.map_err(|_| ())
    }

    /// Waits for every queued write; the writer, or the first failure.
    async fn end(self) -> Result<Box<dyn BlobWriter>, ApiError> {
        let Feed { tx, thread } = self;
        drop(tx);
        let (writer, result) = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(|joined| joined.ok())
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, "the upload's writer failed"))?;
        result?;
        Ok(writer)
    }
}

/// The blob side of the service.
pub struct Blobs {
    store: Arc<dyn BlobStore>,
    /// Upload id → its owner and session (the owner outside the lock, so
    /// it is checked even while a chunk is being written).
    uploads: RefCell<HashMap<u64, OpenUpload>>,
}

/// An upload session and the account that opened it.
type OpenUpload = (AccountName, Rc<tokio::sync::Mutex<Upload>>);

/// Runs a blocking store call off the server's thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("blob store task failed: {e}")))?
        .map_err(ApiError::from)
}

fn reserved(container: &str) -> Result<(), ApiError> {
    if crate::blob::names::reserved_for_lote(container) {
        return Err(Rejection::invalid(format!(
            "container {container:?} is reserved for lote (application packages: lote package upload)"
        ))
        .into());
    }
    Ok(())
}

fn no_upload(upload: u64) -> ApiError {
    ApiError::rejected(
        RejectionCode::UploadNotFound,
        format!("no upload {upload} in progress: it finished, was idle over {}s, or the server restarted; upload again", UPLOAD_IDLE_MAX.as_secs()),
    )
}

impl Blobs {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Blobs {
            store,
            uploads: RefCell::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    pub async fn containers(&self, account: &AccountName) -> Result<Response, ApiError> {
        let (store, account) = (self.store.clone(), account.clone());
        let names = blocking(move || store.containers(&account)).await?;
        Ok(Response::Containers(names))
    }

    pub async fn list(
        &self,
        account: &AccountName,
        container: String,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Response, ApiError> {
        crate::blob::validate_container(&container)?;
        crate::blob::validate_prefix(&prefix)?;
        let limit = limit.clamp(1, BLOB_LIST_MAX) as usize;
        let (store, account) = (self.store.clone(), account.clone());
        let mut blobs = blocking(move || {
            store.list(&account, &container, &prefix, after.as_deref(), limit + 1)
        })
        .await?;
        let next = if blobs.len() > limit {
            blobs.truncate(limit);
            blobs.last().map(|b| b.name.clone())
        } else {
            None
        };
        Ok(Response::Blobs { blobs, next })
    }

    pub async fn stat(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
    ) -> Result<BlobMeta, ApiError> {
        crate::blob::validate_container(container)?;
        crate::blob::validate_blob_name(name)?;
        let (store, account) = (self.store.clone(), account.clone());
        let (c, n) = (container.to_string(), name.to_string());
        blocking(move || {
            store.stat(&account, &c, &n)?.ok_or(BlobError::NotFound {
                container: c.clone(),
                name: n.clone(),
            })
        })
        .await
    }

    pub async fn delete(
        &self,
        account: &AccountName,
        container: String,
        name: String,
    ) -> Result<Response, ApiError> {
        crate::blob::validate_container(&container)?;
        reserved(&container)?;
        crate::blob::validate_blob_name(&name)?;
        let (store, account) = (self.store.clone(), account.clone());
        let existed = blocking(move || store.delete(&account, &container, &name)).await?;
        Ok(Response::BlobDeleted { existed })
    }

    pub async fn read(
        &self,
        account: &AccountName,
        container: String,
        name: String,
        sha256: String,
        offset: u64,
        max_bytes: u32,
    ) -> Result<Response, ApiError> {
        crate::blob::validate_container(&container)?;
        crate::blob::validate_blob_name(&name)?;
        let max = (max_bytes as usize).clamp(1, BLOB_CHUNK_BYTES);
        let (store, account) = (self.store.clone(), account.clone());
        let data =
            blocking(move || store.read(&account, &container, &name, &sha256, offset, max)).await?;
        Ok(Response::BlobData { data })
    }

    fn sweep(&self) {
        self.uploads
            .borrow_mut()
            .retain(|_, (_, u)| match u.try_lock() {
                Ok(u) => u.touched.elapsed() < UPLOAD_IDLE_MAX,
                // Busy: in use right now.
                Err(_) => true,
            });
    }

    /// Starts an upload of a user blob.
    pub async fn begin(
        &self,
        account: &AccountName,
        container: String,
        name: String,
        at: Timestamp,
    ) -> Result<Response, ApiError> {
        reserved(&container)?;
        self.open(account, container, name, None, at).await
    }

    /// Starts an upload of a package version.
    pub async fn begin_package(
        &self,
        account: &AccountName,
        id: String,
        version: String,
        at: Timestamp,
    ) -> Result<Response, ApiError> {
        validate_package_name("application package id", &id, false)?;
        validate_package_name("application package version", &version, true)?;
        let name = packages::version_blob(&id, &version);
        self.open(
            account,
            PACKAGES_CONTAINER.to_string(),
            name,
            Some((id, version)),
            at,
        )
        .await
    }

    async fn open(
        &self,
        account: &AccountName,
        container: String,
        name: String,
        package: Option<(String, String)>,
        at: Timestamp,
    ) -> Result<Response, ApiError> {
        self.sweep();
        if self.uploads.borrow().len() >= UPLOADS_MAX {
            return Err(ApiError::new(
                ErrorKind::Overloaded,
                format!("{UPLOADS_MAX} uploads are in progress; try again shortly"),
            ));
        }
        let content_name =
            (container == crate::blob::names::APP_INPUTS_CONTAINER).then(|| name.clone());
        let (store, acc) = (self.store.clone(), account.clone());
        let writer = blocking(move || store.begin(&acc, &container, &name, at)).await?;
        let id = loop {
            // Random, so one caller cannot guess another's upload.
            let id = crate::clock::new_uuid().as_u64_pair().0;
            if id != 0 && !self.uploads.borrow().contains_key(&id) {
                break id;
            }
        };
        self.uploads.borrow_mut().insert(
            id,
            (
                account.clone(),
                Rc::new(tokio::sync::Mutex::new(Upload {
                    writer: Some(Feed::start(writer)?),
                    next: 0,
                    pending: BTreeMap::new(),
                    touched: Instant::now(),
                    package,
                    content_name,
                })),
            ),
        );
        Ok(Response::UploadStarted { upload: id })
    }

    fn session(
        &self,
        account: &AccountName,
        upload: u64,
    ) -> Result<Rc<tokio::sync::Mutex<Upload>>, ApiError> {
        match self.uploads.borrow().get(&upload) {
            Some((owner, s)) if owner == account => Ok(s.clone()),
            // Another account's upload looks like none at all.
            _ => Err(no_upload(upload)),
        }
    }

    pub async fn chunk(
        &self,
        account: &AccountName,
        upload: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Response, ApiError> {
        if data.len() > BLOB_CHUNK_BYTES {
            return Err(Rejection::invalid(format!(
                "a chunk carries at most {BLOB_CHUNK_BYTES} bytes; this one {}",
                data.len()
            ))
            .into());
        }
        let session = self.session(account, upload)?;
        let mut u = session.lock().await;
        u.touched = Instant::now();
        if offset < u.next || u.pending.contains_key(&offset) {
            return Err(Rejection::invalid(format!(
                "upload {upload} already has bytes at offset {offset}"
            ))
            .into());
        }
        if offset > u.next {
            if u.pending.len() >= PENDING_CHUNKS_MAX {
                return Err(Rejection::invalid(format!(
                    "upload {upload} is waiting for offset {}; chunk at {offset} is too far ahead (keep at most {} chunks in flight)",
                    u.next,
                    crate::blob::BLOB_WINDOW_CHUNKS
                ))
                .into());
            }
            u.pending.insert(offset, data);
            return Ok(Response::ChunkReceived);
        }
        // This chunk and every waiting one that now follows on.
        let mut run = vec![data];
        let mut end = u.next + run[0].len() as u64;
        while let Some(next) = u.pending.remove(&end) {
            end += next.len() as u64;
            run.push(next);
        }
        let Some(feed) = u.writer.as_ref() else {
            return Err(no_upload(upload));
        };
        for data in run {
            if feed.send(data).await.is_err() {
                // The writer stopped on a failure (disk full): the upload
                // ends, its bytes go, and the failure is the answer.
                let feed = u.writer.take().expect("checked above");
                drop(u);
                self.uploads.borrow_mut().remove(&upload);
                return Err(match feed.end().await {
                    Err(e) => e,
                    Ok(_) => ApiError::new(ErrorKind::Internal, "the upload's writer stopped"),
                });
            }
        }
        u.next = end;
        Ok(Response::ChunkReceived)
    }

    pub async fn finish(
        &self,
        account: &AccountName,
        upload: u64,
        size: u64,
        sha256: String,
    ) -> Result<Response, ApiError> {
        let session = self.session(account, upload)?;
        let mut u = session.lock().await;
        if !u.pending.is_empty() {
            return Err(Rejection::invalid(format!(
                "upload {upload} is missing bytes at offset {}",
                u.next
            ))
            .into());
        }
        if let Some(name) = u.content_name.as_ref().filter(|n| **n != sha256) {
            return Err(Rejection::invalid(format!(
                "{} holds each file under its SHA-256; {sha256} was uploaded as {name}",
                crate::blob::names::APP_INPUTS_CONTAINER
            ))
            .into());
        }
        let feed = u.writer.take().ok_or_else(|| no_upload(upload))?;
        let package = u.package.clone();
        drop(u);
        self.uploads.borrow_mut().remove(&upload);
        let writer = feed.end().await?;
        let meta = blocking(move || {
            let mut writer = writer;
            if package.is_some() {
                if let Some(path) = writer.spool_file()? {
                    let file = std::fs::File::open(path)
                        .map_err(|e| BlobError::io("reading the package", e))?;
                    packages::check_archive(std::io::BufReader::new(file)).map_err(|why| {
                        BlobError::Invalid(format!("the package was refused: {why}"))
                    })?;
                }
            }
            writer.commit(size, &sha256)
        })
        .await?;
        Ok(Response::Blob(meta))
    }

    pub fn abort(&self, account: &AccountName, upload: u64) -> Result<Response, ApiError> {
        self.session(account, upload)?;
        self.uploads.borrow_mut().remove(&upload);
        Ok(Response::ChunkReceived)
    }

    /// Every package of the account with its versions and default.
    pub async fn packages(&self, account: &AccountName) -> Result<Response, ApiError> {
        let (store, account) = (self.store.clone(), account.clone());
        let views = blocking(move || {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list(
                    &account,
                    PACKAGES_CONTAINER,
                    "",
                    after.as_deref(),
                    BLOB_LIST_MAX as usize,
                )?;
                let done = page.len() < BLOB_LIST_MAX as usize;
                after = page.last().map(|b| b.name.clone());
                all.extend(page);
                if done {
                    break;
                }
            }
            let mut defaults = Vec::new();
            for b in all.iter().filter(|b| b.name.ends_with("/default")) {
                let data = store.read(&account, PACKAGES_CONTAINER, &b.name, &b.sha256, 0, 256)?;
                let id = b.name.trim_end_matches("/default").to_string();
                defaults.push((id, String::from_utf8_lossy(&data).into_owned()));
            }
            Ok(packages::views(&all, &defaults))
        })
        .await?;
        Ok(Response::Packages(views))
    }

    /// Which version and blob a reference means now.
    pub async fn resolve(
        &self,
        account: &AccountName,
        id: String,
        version: Option<String>,
    ) -> Result<(String, BlobMeta), ApiError> {
        validate_package_name("application package id", &id, false)?;
        if let Some(v) = &version {
            validate_package_name("application package version", v, true)?;
        }
        let (store, account) = (self.store.clone(), account.clone());
        // Outer error: the store failed; inner: no such package or version.
        let found = blocking(move || -> Result<Result<(String, BlobMeta), String>, BlobError> {
            let version = match version {
                Some(v) => v,
                None => {
                    let Some(marker) =
                        store.stat(&account, PACKAGES_CONTAINER, &packages::default_blob(&id))?
                    else {
                        return Ok(Err(format!(
                            "application package {id} has no default version; name one ({id}:VERSION) or set one with lote package set-default"
                        )));
                    };
                    let data = store.read(
                        &account,
                        PACKAGES_CONTAINER,
                        &marker.name,
                        &marker.sha256,
                        0,
                        256,
                    )?;
                    String::from_utf8_lossy(&data).into_owned()
                }
            };
            let meta =
                store.stat(&account, PACKAGES_CONTAINER, &packages::version_blob(&id, &version))?;
            Ok(meta.map(|m| (version.clone(), m)).ok_or_else(|| {
                format!("application package {id} has no version {version} (lote package list)")
            }))
        })
        .await?;
        found.map_err(|why| ApiError::rejected(RejectionCode::ApplicationNotFound, why))
    }

    /// Refuses references to packages or versions that do not exist.
    pub async fn check_refs(
        &self,
        account: &AccountName,
        refs: &[PackageRef],
    ) -> Result<(), ApiError> {
        for r in refs {
            self.resolve(account, r.id.clone(), r.version.clone())
                .await?;
        }
        Ok(())
    }

    pub async fn set_default(
        &self,
        account: &AccountName,
        id: String,
        version: String,
        at: Timestamp,
    ) -> Result<Response, ApiError> {
        self.resolve(account, id.clone(), Some(version.clone()))
            .await?;
        let (store, acc) = (self.store.clone(), account.clone());
        blocking(move || {
            let mut w = store.begin(&acc, PACKAGES_CONTAINER, &packages::default_blob(&id), at)?;
            w.write(version.as_bytes())?;
            let sha = crate::blob::hex(&<sha2::Sha256 as sha2::Digest>::digest(version.as_bytes()));
            w.commit(version.len() as u64, &sha)
        })
        .await?;
        self.packages(account).await
    }

    pub async fn delete_version(
        &self,
        account: &AccountName,
        id: String,
        version: String,
    ) -> Result<Response, ApiError> {
        let (current, _) = self
            .resolve(account, id.clone(), Some(version.clone()))
            .await?;
        let default = self.resolve(account, id.clone(), None).await.ok();
        let (store, acc) = (self.store.clone(), account.clone());
        blocking(move || {
            store.delete(
                &acc,
                PACKAGES_CONTAINER,
                &packages::version_blob(&id, &current),
            )?;
            // A default that names the deleted version would resolve to
            // nothing: it goes too.
            if default.is_some_and(|(v, _)| v == current) {
                store.delete(&acc, PACKAGES_CONTAINER, &packages::default_blob(&id))?;
            }
            Ok(())
        })
        .await?;
        self.packages(account).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::local::{LocalBlobStore, Shared};
    use crate::store::Durability;
    use sha2::{Digest, Sha256};

    /// The real store, but its writers fail with a full disk once they
    /// hold `room` bytes.
    struct FullAfter(Shared, u64);

    struct FullWriter(Box<dyn BlobWriter>, u64);

    impl BlobWriter for FullWriter {
        fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
            if self.0.written() + data.len() as u64 > self.1 {
                return Err(BlobError::DiskFull("no space left on device".into()));
            }
            self.0.write(data)
        }
        fn written(&self) -> u64 {
            self.0.written()
        }
        fn spool_file(&mut self) -> Result<Option<&std::path::Path>, BlobError> {
            self.0.spool_file()
        }
        fn commit(self: Box<Self>, size: u64, sha256: &str) -> Result<BlobMeta, BlobError> {
            self.0.commit(size, sha256)
        }
    }

    impl BlobStore for FullAfter {
        fn begin(
            &self,
            a: &AccountName,
            c: &str,
            n: &str,
            at: Timestamp,
        ) -> Result<Box<dyn BlobWriter>, BlobError> {
            Ok(Box::new(FullWriter(self.0.begin(a, c, n, at)?, self.1)))
        }
        fn stat(&self, a: &AccountName, c: &str, n: &str) -> Result<Option<BlobMeta>, BlobError> {
            self.0.stat(a, c, n)
        }
        fn read(
            &self,
            a: &AccountName,
            c: &str,
            n: &str,
            sha: &str,
            offset: u64,
            max: usize,
        ) -> Result<Vec<u8>, BlobError> {
            self.0.read(a, c, n, sha, offset, max)
        }
        fn list(
            &self,
            a: &AccountName,
            c: &str,
            p: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<BlobMeta>, BlobError> {
            self.0.list(a, c, p, after, limit)
        }
        fn containers(&self, a: &AccountName) -> Result<Vec<String>, BlobError> {
            self.0.containers(a)
        }
        fn delete(&self, a: &AccountName, c: &str, n: &str) -> Result<bool, BlobError> {
            self.0.delete(a, c, n)
        }
    }

    fn chunks(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| vec![i as u8 + 1; BLOB_CHUNK_BYTES])
            .collect()
    }

    async fn begin(blobs: &Blobs, account: &AccountName) -> u64 {
        match blobs
            .begin(account, "inputs".into(), "b".into(), Timestamp::EPOCH)
            .await
            .unwrap()
        {
            Response::UploadStarted { upload } => upload,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn chunks_out_of_order_are_written_in_order_and_checked_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Shared(LocalBlobStore::open(dir.path(), Durability::Sync).unwrap());
        let blobs = Blobs::new(Arc::new(store));
        let acme = AccountName::new("acme").unwrap();
        let upload = begin(&blobs, &acme).await;
        let parts = chunks(4);
        let whole: Vec<u8> = parts.concat();
        let at = |i: usize| (i * BLOB_CHUNK_BYTES) as u64;
        for i in [1, 3, 0, 2] {
            blobs
                .chunk(&acme, upload, at(i), parts[i].clone())
                .await
                .unwrap();
        }
        // A byte sent twice is refused, and changes nothing.
        let again = blobs.chunk(&acme, upload, 0, vec![9]).await.unwrap_err();
        assert_eq!(
            again.rejection,
            Some(RejectionCode::InvalidValue),
            "{again}"
        );
        let sha = crate::blob::hex(&Sha256::digest(&whole));
        let meta = match blobs
            .finish(&acme, upload, whole.len() as u64, sha.clone())
            .await
            .unwrap()
        {
            Response::Blob(meta) => meta,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (meta.size, meta.sha256.as_str()),
            (whole.len() as u64, sha.as_str())
        );
        let mut back = Vec::new();
        while back.len() < whole.len() {
            match blobs
                .read(
                    &acme,
                    "inputs".into(),
                    "b".into(),
                    sha.clone(),
                    back.len() as u64,
                    u32::MAX,
                )
                .await
                .unwrap()
            {
                Response::BlobData { data } => back.extend(data),
                other => panic!("{other:?}"),
            }
        }
        assert!(back == whole, "the blob reads back as uploaded");
    }

    #[tokio::test]
    async fn a_write_that_fails_ends_the_upload_with_its_error_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Shared(LocalBlobStore::open(dir.path(), Durability::Sync).unwrap());
        let blobs = Blobs::new(Arc::new(FullAfter(store, 2 * BLOB_CHUNK_BYTES as u64)));
        let acme = AccountName::new("acme").unwrap();
        let upload = begin(&blobs, &acme).await;
        // Chunks are acknowledged once queued, so the failure comes back
        // on a later chunk or, at the latest, at the finish.
        let mut failure = None;
        for (i, data) in chunks(8).into_iter().enumerate() {
            if let Err(e) = blobs
                .chunk(&acme, upload, (i * BLOB_CHUNK_BYTES) as u64, data)
                .await
            {
                failure = Some(e);
                break;
            }
        }
        let failure = match failure {
            Some(e) => e,
            None => blobs
                .finish(&acme, upload, 8 * BLOB_CHUNK_BYTES as u64, "0".repeat(64))
                .await
                .unwrap_err(),
        };
        assert_eq!(
            failure.rejection,
            Some(RejectionCode::StorageFull),
            "{failure}"
        );
        // The upload is gone: a further chunk or a finish names it unknown.
        let gone = blobs
            .finish(&acme, upload, 0, "0".repeat(64))
            .await
            .unwrap_err();
        assert_eq!(
            gone.rejection,
            Some(RejectionCode::UploadNotFound),
            "{gone}"
        );
        assert!(blobs.stat(&acme, "inputs", "b").await.is_err());
        // Its bytes are deleted once the writer's thread let go of them.
        let tmp = dir.path().join("blobs/tmp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&tmp).unwrap().count() > 0 {
            assert!(Instant::now() < deadline, "the upload's file stayed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
