//! Streaming uploads and downloads over the message API, for the CLI, the
//! agents and the demo.
//!
//! A transfer keeps [`BLOB_WINDOW_CHUNKS`] chunks of [`BLOB_CHUNK_BYTES`]
//! in flight on one connection, so a 1 GiB file costs a few MiB of memory
//! on either side, and hashes the bytes as they pass: the SHA-256 the
//! uploader computed is checked by the store before the blob becomes
//! visible, and the one the store recorded is checked by the downloader
//! before the file is renamed into place.

use std::path::Path;

use futures_util::stream::{FuturesOrdered, StreamExt};
use sha2::{Digest, Sha256};

use super::direct::DirectWriter;
use super::{hex, BlobMeta, BLOB_CHUNK_BYTES, BLOB_WINDOW_CHUNKS, HASH_PIECE_BYTES};
use crate::api::{Request, Response};
use crate::client::{Client, ClientError};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("checksum mismatch downloading {name}: the store has {expected}, {actual} arrived; the partial file was removed")]
    Checksum {
        name: String,
        expected: String,
        actual: String,
    },
}

impl TransferError {
    fn file(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
        move |source| TransferError::File {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether trying again later may work (a lost connection, a busy
    /// server, a blob replaced mid-read).
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Client(e) => e.is_transient() || e.api().is_some_and(|a| a.retryable()),
            TransferError::Checksum { .. } => true,
            _ => false,
        }
    }
}

fn unexpected(what: &str, r: Response) -> TransferError {
    TransferError::Protocol(format!("unexpected answer to {what}: {r:?}"))
}

/// Uploads `path` through an upload that `begin` starts (a
/// [`Request::BeginUpload`] or [`Request::BeginPackageUpload`]).
/// `progress(done, total)` is called as chunks are acknowledged.
pub async fn upload_file(
    client: &Client,
    begin: Request,
    path: &Path,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<BlobMeta, TransferError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(TransferError::file(path))?
        .into_std()
        .await;
    let total = file.metadata().map_err(TransferError::file(path))?.len();
    let upload = match client.call(&begin).await? {
        Response::UploadStarted { upload } => upload,
        other => return Err(unexpected("BeginUpload", other)),
    };
    // Reading and hashing run on a thread of their own, beside the calls:
    // on this loop the hashing would stall the window. Two chunks of
    // slack, as for downloads.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let reader = tokio::task::spawn_blocking(move || read_and_hash(file, tx));
    let result = send_chunks(client, upload, rx, total, &mut progress).await;
    let read = reader
        .await
        .map_err(|e| TransferError::Protocol(format!("the reader stopped: {e}")))
        .and_then(|r| r.map_err(TransferError::file(path)));
    let result = match (result, read) {
        // A read error explains more than the calls that lost their feed.
        (_, Err(e)) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), Ok((size, sha256))) => finish(client, upload, size, sha256).await,
    };
    if result.is_err() {
        // Best effort: the server also drops abandoned uploads itself.
        let _ = client.call(&Request::AbortUpload { upload }).await;
    }
    result
}

/// Reads `file` a chunk at a time into `tx`, hashing it; its size and
/// SHA-256 (hex). Stops early, without error, if the receiver is gone.
fn read_and_hash(
    mut file: std::fs::File,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        // Read a piece at a time and hashed while the piece is in the
        // cache; into spare capacity, not over zeros written first.
        let mut buf = Vec::with_capacity(BLOB_CHUNK_BYTES);
        while buf.len() < BLOB_CHUNK_BYTES {
            let start = buf.len();
            let want = HASH_PIECE_BYTES.min(BLOB_CHUNK_BYTES - start) as u64;
            if (&mut file).take(want).read_to_end(&mut buf)? == 0 {
                break;
            }
            hasher.update(&buf[start..]);
        }
        let filled = buf.len();
        if filled == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        size += filled as u64;
        let last = filled < BLOB_CHUNK_BYTES;
        if tx.blocking_send(buf).is_err() {
            return Ok((size, String::new()));
        }
        if last {
            return Ok((size, hex(&hasher.finalize())));
        }
    }
}

/// Sends what arrives on `rx` as the upload's chunks, a window at a time.
async fn send_chunks(
    client: &Client,
    upload: u64,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    total: u64,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(), TransferError> {
    let mut offset = 0u64;
    let mut done = 0u64;
    let mut eof = false;
    let mut inflight = FuturesOrdered::new();
    loop {
        while !eof && inflight.len() < BLOB_WINDOW_CHUNKS {
            // With a window in flight, wait for whichever comes first: the
            // next chunk read or an answer.
            let data = if inflight.is_empty() {
                rx.recv().await
            } else {
                tokio::select! {
                    biased;
                    data = rx.recv() => data,
                    Some((len, answer)) = inflight.next() => {
                        done += acknowledged(len, answer)?;
                        progress(done, total.max(done));
                        continue;
                    }
                }
            };
            let Some(data) = data else {
                eof = true;
                break;
            };
            let len = data.len() as u64;
            let request = Request::UploadChunk {
                upload,
                offset,
                data,
            };
            offset += len;
            inflight.push_back(async move { (len, client.call(&request).await) });
        }
        let Some((len, answer)) = inflight.next().await else {
            return Ok(());
        };
        done += acknowledged(len, answer)?;
        progress(done, total.max(done));
    }
}

fn acknowledged(len: u64, answer: Result<Response, ClientError>) -> Result<u64, TransferError> {
    match answer? {
        Response::ChunkReceived => Ok(len),
        other => Err(unexpected("UploadChunk", other)),
    }
}

async fn finish(
    client: &Client,
    upload: u64,
    size: u64,
    sha256: String,
) -> Result<BlobMeta, TransferError> {
    match client
        .call(&Request::FinishUpload {
            upload,
            size,
            sha256,
        })
        .await?
    {
        Response::Blob(meta) => Ok(meta),
        other => Err(unexpected("FinishUpload", other)),
    }
}

/// The blob's current metadata.
pub async fn stat(client: &Client, container: &str, name: &str) -> Result<BlobMeta, TransferError> {
    match client
        .call(&Request::ShowBlob {
            container: container.into(),
            name: name.into(),
        })
        .await?
    {
        Response::Blob(meta) => Ok(meta),
        other => Err(unexpected("ShowBlob", other)),
    }
}

/// Downloads the blob `meta` describes into `dest` (its directory must
/// exist): into a hidden file beside it, renamed into place once its
/// SHA-256 matches the store's.
pub async fn download_to(
    client: &Client,
    meta: &BlobMeta,
    dest: &Path,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(), TransferError> {
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let part = dest.with_file_name(format!(
        ".{file_name}.lote-part-{}",
        crate::clock::new_uuid().as_simple()
    ));
    let result = receive(client, meta, &part, &mut progress).await;
    match result {
        Ok(()) => tokio::fs::rename(&part, dest)
            .await
            .map_err(TransferError::file(dest)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

async fn receive(
    client: &Client,
    meta: &BlobMeta,
    part: &Path,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(), TransferError> {
    // The part file is written past the page cache where it can be (see
    // `direct`): the copy into fresh cache pages cost more than the
    // hashing, and a node staging a large input keeps its memory for the
    // tasks.
    let out = {
        let owned = part.to_path_buf();
        tokio::task::spawn_blocking(move || DirectWriter::create(&owned, false))
            .await
            .map_err(|e| TransferError::Protocol(format!("creating the file failed: {e}")))?
            .map_err(TransferError::file(part))?
    };
    // Hashing runs on a thread of its own, beside the calls (on this loop
    // it would stall the window while a chunk is hashed), and the writes
    // on the writer's own. Two chunks of slack: more would only hold
    // memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let writer = tokio::task::spawn_blocking(move || hash_and_write(out, rx));
    let sent = fetch_chunks(client, meta, &tx, &mut progress).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| TransferError::Protocol(format!("the writer stopped: {e}")))
        .and_then(|r| r.map_err(TransferError::file(part)));
    // A failed call explains more than the writer that lost its feed.
    sent?;
    let actual = written?;
    if actual != meta.sha256 {
        return Err(TransferError::Checksum {
            name: meta.name.clone(),
            expected: meta.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Writes what arrives on `rx` to `out`, hashing it; the SHA-256 (hex).
fn hash_and_write(
    mut out: DirectWriter,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    while let Some(data) = rx.blocking_recv() {
        // A piece at a time: the copy finds what the hash just read in the
        // cache.
        for piece in data.chunks(HASH_PIECE_BYTES) {
            hasher.update(piece);
            out.write(piece)?;
        }
    }
    out.finish()?;
    Ok(hex(&hasher.finalize()))
}

/// Asks for the blob a window of chunks at a time and hands them, in
/// order, to `tx`.
async fn fetch_chunks(
    client: &Client,
    meta: &BlobMeta,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    progress: &mut (impl FnMut(u64, u64) + Send),
) -> Result<(), TransferError> {
    let mut next = 0u64;
    let mut done = 0u64;
    let mut inflight = FuturesOrdered::new();
    loop {
        while next < meta.size && inflight.len() < BLOB_WINDOW_CHUNKS {
            let want = (meta.size - next).min(BLOB_CHUNK_BYTES as u64);
            let request = Request::ReadBlob {
                container: meta.container.clone(),
                name: meta.name.clone(),
                sha256: meta.sha256.clone(),
                offset: next,
                max_bytes: want as u32,
            };
            next += want;
            inflight.push_back(async move { (want, client.call(&request).await) });
        }
        let Some((want, answer)) = inflight.next().await else {
            return Ok(());
        };
        let data = match answer? {
            Response::BlobData { data } => data,
            other => return Err(unexpected("ReadBlob", other)),
        };
        if data.len() as u64 != want {
            return Err(TransferError::Protocol(format!(
                "the store sent {} bytes where {want} were asked for",
                data.len()
            )));
        }
        if tx.send(data).await.is_err() {
            // The writer failed; its error is the one to report.
            return Ok(());
        }
        done += want;
        progress(done, meta.size);
    }
}

/// Every blob of `container` whose name starts with `prefix`, all pages.
pub async fn list_all(
    client: &Client,
    container: &str,
    prefix: &str,
) -> Result<Vec<BlobMeta>, TransferError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        match client
            .call(&Request::ListBlobs {
                container: container.into(),
                prefix: prefix.into(),
                after: after.clone(),
                limit: super::BLOB_LIST_MAX,
            })
            .await?
        {
            Response::Blobs { blobs, next } => {
                out.extend(blobs);
                match next {
                    Some(n) => after = Some(n),
                    None => return Ok(out),
                }
            }
            other => return Err(unexpected("ListBlobs", other)),
        }
    }
}

/// Computes a file's SHA-256 off the async runtime.
pub async fn file_sha256(path: &Path) -> Result<(u64, String), TransferError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut f = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let n = std::io::copy(&mut f, &mut hasher)?;
        Ok((n, hex(&hasher.finalize())))
    })
    .await
    .map_err(|e| TransferError::Protocol(format!("hashing failed: {e}")))?
    .map_err(TransferError::file(path))
}
