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
use tokio::io::AsyncReadExt;

use super::{hex, BlobMeta, BLOB_CHUNK_BYTES, BLOB_WINDOW_CHUNKS};
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

/// Reads up to a chunk, filling it unless the file ends.
async fn read_chunk(file: &mut tokio::fs::File, path: &Path) -> Result<Vec<u8>, TransferError> {
    let mut buf = vec![0u8; BLOB_CHUNK_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let n = file
            .read(&mut buf[filled..])
            .await
            .map_err(TransferError::file(path))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
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
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(TransferError::file(path))?;
    let total = file
        .metadata()
        .await
        .map_err(TransferError::file(path))?
        .len();
    let upload = match client.call(&begin).await? {
        Response::UploadStarted { upload } => upload,
        other => return Err(unexpected("BeginUpload", other)),
    };
    let result = send_chunks(client, upload, &mut file, path, total, &mut progress).await;
    if result.is_err() {
        // Best effort: the server also drops abandoned uploads itself.
        let _ = client.call(&Request::AbortUpload { upload }).await;
    }
    result
}

async fn send_chunks(
    client: &Client,
    upload: u64,
    file: &mut tokio::fs::File,
    path: &Path,
    total: u64,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<BlobMeta, TransferError> {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut done = 0u64;
    let mut eof = false;
    let mut inflight = FuturesOrdered::new();
    loop {
        while !eof && inflight.len() < BLOB_WINDOW_CHUNKS {
            let data = read_chunk(file, path).await?;
            if data.is_empty() {
                eof = true;
                break;
            }
            eof = data.len() < BLOB_CHUNK_BYTES;
            hasher.update(&data);
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
            break;
        };
        match answer? {
            Response::ChunkReceived => {}
            other => return Err(unexpected("UploadChunk", other)),
        }
        done += len;
        progress(done, total.max(done));
    }
    match client
        .call(&Request::FinishUpload {
            upload,
            size: offset,
            sha256: hex(&hasher.finalize()),
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
    let out = std::fs::File::create(part).map_err(TransferError::file(part))?;
    // Hashing and writing run on a thread of their own, beside the calls:
    // on this loop they would stall the window while a chunk is hashed.
    // Two chunks of slack: more would only hold memory.
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
    mut out: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<String> {
    use std::io::Write;
    let mut hasher = Sha256::new();
    while let Some(data) = rx.blocking_recv() {
        hasher.update(&data);
        out.write_all(&data)?;
    }
    out.flush()?;
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
