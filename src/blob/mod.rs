//! The blob store: containers of named blobs per account, where inputs,
//! programs, application packages and outputs live.
//!
//! Callers see the [`BlobStore`] trait only; [`local::LocalBlobStore`]
//! keeps blobs in the server's data directory. A backend for an
//! S3-compatible or Azure Blob store implements the same trait (see
//! ARCHITECTURE.md, "Files").
//!
//! Writes are sessions: [`BlobStore::begin`] returns a [`BlobWriter`] that
//! takes the bytes in order and hashes them as they pass; nothing is
//! visible under the blob's name until [`BlobWriter::commit`] checked the
//! SHA-256 the uploader computed. A dropped writer leaves nothing behind.

pub mod app_files;
pub mod direct;
pub mod local;
pub mod names;
pub mod packages;
pub mod transfer;

pub use crate::api::blobs::BlobMeta;
use crate::types::{AccountName, Timestamp};

pub use names::{validate_blob_name, validate_container, validate_prefix};

/// Bytes of one upload or download chunk on the wire: well under the
/// frame limit, large enough that a round trip per chunk costs little.
pub const BLOB_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(BLOB_CHUNK_BYTES + 64 * 1024 <= crate::api::FRAME_BYTES_MAX);

/// Bytes hashed before the same bytes are copied on: small enough that
/// the second pass finds them in the CPU's cache.
pub const HASH_PIECE_BYTES: usize = 64 * 1024;

/// Chunks an uploader or downloader keeps in flight on one connection.
pub const BLOB_WINDOW_CHUNKS: usize = 8;

/// Most blobs in one list reply.
pub const BLOB_LIST_MAX: u32 = 1000;

/// Why a blob operation failed. Each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("{0}")]
    Invalid(String),
    #[error("no blob {name:?} in container {container:?}")]
    NotFound { container: String, name: String },
    #[error("the blob changed while it was read (it was replaced or deleted); read it again")]
    Changed,
    #[error("checksum mismatch: the uploader computed {expected}, the store received {actual}; nothing was stored")]
    Checksum { expected: String, actual: String },
    #[error("the blob store's disk is full: {0}")]
    DiskFull(String),
    #[error("blob store: {0}")]
    Io(String),
}

impl BlobError {
    pub fn io(what: &str, e: std::io::Error) -> Self {
        // ENOSPC and EDQUOT say the same thing to the user: free space.
        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            BlobError::DiskFull(format!("{what}: {e}"))
        } else {
            BlobError::Io(format!("{what}: {e}"))
        }
    }
}

/// One blob being written. Bytes go in order; `commit` makes it visible.
pub trait BlobWriter: Send {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// The local file the bytes are spooled to before commit, for checks
    /// that need the whole content (application packages). A remote
    /// backend spools to a local file too, or returns None and packages
    /// are then checked only on the nodes. Every byte written so far is in
    /// the file when it returns; nothing may be written after.
    fn spool_file(&mut self) -> Result<Option<&std::path::Path>, BlobError>;
    /// Checks size and SHA-256 against what the uploader computed, then
    /// makes the blob visible under its name, replacing any earlier one.
    fn commit(self: Box<Self>, size: u64, sha256: &str) -> Result<BlobMeta, BlobError>;
}

/// A blob backend. Calls block (file or network I/O): the server runs them
/// off its event loop.
pub trait BlobStore: Send + Sync {
    fn begin(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
        at: Timestamp,
    ) -> Result<Box<dyn BlobWriter>, BlobError>;
    fn stat(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
    ) -> Result<Option<BlobMeta>, BlobError>;
    /// Up to `max_bytes` from `offset` of the blob's content with checksum
    /// `sha256` (from an earlier `stat`), so a download never mixes two
    /// versions of one name.
    fn read(
        &self,
        account: &AccountName,
        container: &str,
        name: &str,
        sha256: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, BlobError>;
    /// Blobs whose names start with `prefix` and sort after `after`, in name
    /// order, at most `limit`.
    fn list(
        &self,
        account: &AccountName,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>, BlobError>;
    /// The account's containers that hold at least one blob.
    fn containers(&self, account: &AccountName) -> Result<Vec<String>, BlobError>;
    /// Whether there was such a blob.
    fn delete(&self, account: &AccountName, container: &str, name: &str)
        -> Result<bool, BlobError>;
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` is a SHA-256 in lower-case hex (it names files on disk).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
