//! Files through the console: blob, task-file and node-file downloads
//! streamed chunk by chunk, a task's output as text for live tailing, and
//! blob uploads streamed into the blob store. Each chunk is one request of
//! the message API through the same dispatcher, so what a session may read
//! or write is what its key may.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use sha2::{Digest, Sha256};

use super::api::param;
use super::http::{self, Reply};
use super::session::SignedIn;
use super::Console;
use crate::api::agent::{FileAnswer, OutputStream};
use crate::api::{ApiError, Request as ApiRequest, Response as ApiResponse};
use crate::blob::BLOB_CHUNK_BYTES;
use crate::server::service::{Caller, Service};
use crate::types::{JobId, NodeId, PoolId, TaskId};

/// Most bytes of output one tail request returns.
const TAIL_BYTES_MAX: u32 = 256 * 1024;

/// What a download reads.
enum Source {
    Blob {
        container: String,
        name: String,
        sha256: String,
    },
    Task {
        job: JobId,
        task: TaskId,
        attempt: u32,
        path: String,
    },
    Node {
        pool: PoolId,
        node: NodeId,
        path: String,
    },
}

/// The bytes at `offset`, the file's size, and whether they are the last.
async fn chunk(
    service: &Service,
    caller: &Caller,
    source: &Source,
    offset: u64,
) -> Result<(Vec<u8>, u64), ApiError> {
    let max_bytes = BLOB_CHUNK_BYTES as u32;
    let request = match source {
        Source::Blob {
            container,
            name,
            sha256,
        } => ApiRequest::ReadBlob {
            container: container.clone(),
            name: name.clone(),
            sha256: sha256.clone(),
            offset,
            max_bytes,
        },
        Source::Task {
            job,
            task,
            attempt,
            path,
        } => ApiRequest::ReadTaskFile {
            job: job.clone(),
            task: task.clone(),
            attempt: *attempt,
            path: path.clone(),
            offset,
            max_bytes,
        },
        Source::Node { pool, node, path } => ApiRequest::ReadNodeFile {
            pool: pool.clone(),
            node: node.clone(),
            path: path.clone(),
            offset,
            max_bytes,
        },
    };
    match service.console_call(caller.clone(), request).await? {
        ApiResponse::BlobData { data } => Ok((data, u64::MAX)),
        ApiResponse::Files {
            answer: FileAnswer::Chunk(c),
            ..
        } => Ok((c.data, c.size)),
        other => Err(crate::server::service::internal(format!(
            "unexpected reply to a read: {other:?}"
        ))),
    }
}

/// The file name a browser saves a download under.
fn file_name(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("download");
    last.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Console {
    fn source(
        &self,
        q: &std::collections::HashMap<String, String>,
    ) -> Result<(Source, String), Reply> {
        let text = |name: &str| {
            q.get(name)
                .cloned()
                .ok_or_else(|| Reply::error(400, &format!("missing ?{name}=")))
        };
        match q.get("kind").map(String::as_str) {
            Some("blob") => {
                let name = text("name")?;
                Ok((
                    Source::Blob {
                        container: text("container")?,
                        sha256: String::new(),
                        name: name.clone(),
                    },
                    name,
                ))
            }
            Some("task") => {
                let path = text("path")?;
                Ok((
                    Source::Task {
                        job: param(q, "job", JobId::new)?,
                        task: param(q, "task", TaskId::new)?,
                        attempt: q.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0),
                        path: path.clone(),
                    },
                    path,
                ))
            }
            Some("node") => {
                let path = text("path")?;
                Ok((
                    Source::Node {
                        pool: param(q, "pool", PoolId::new)?,
                        node: param(q, "node", NodeId::new)?,
                        path: path.clone(),
                    },
                    path,
                ))
            }
            _ => Err(Reply::error(400, "?kind= is blob, task or node")),
        }
    }

    /// `GET /api/download?kind=…`: the file, streamed as it is read.
    pub(super) async fn download(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let (mut source, path) = match self.source(&q) {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        let mut size = None;
        if let Source::Blob {
            container,
            name,
            sha256,
        } = &mut source
        {
            let show = ApiRequest::ShowBlob {
                container: container.clone(),
                name: name.clone(),
            };
            match self.service.console_call(who.caller.clone(), show).await {
                Ok(ApiResponse::Blob(meta)) => {
                    *sha256 = meta.sha256;
                    size = Some(meta.size);
                }
                Ok(_) => return Reply::error(500, "unexpected reply to ShowBlob"),
                Err(e) => return Reply::api_error(&e),
            }
        }
        // The first chunk before the answer, so a missing file is a 404,
        // not a download that breaks off.
        let first = match chunk(&self.service, &who.caller, &source, 0).await {
            Ok(c) => c,
            Err(e) => return Reply::api_error(&e),
        };
        let total = size.unwrap_or(first.1);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (service, caller) = (Rc::clone(&self.service), who.caller.clone());
        tokio::task::spawn_local(async move {
            let mut offset = first.0.len() as u64;
            let mut next = Some(first.0);
            while let Some(data) = next.take() {
                let empty = data.is_empty();
                if !empty && tx.send(Ok(Bytes::from(data))).await.is_err() {
                    return;
                }
                if empty || offset >= total {
                    return;
                }
                match chunk(&service, &caller, &source, offset).await {
                    Ok((data, _)) => {
                        offset += data.len() as u64;
                        next = Some(data);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                        return;
                    }
                }
            }
        });
        Reply::stream("application/octet-stream", rx).header(
            hyper::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", file_name(&path)),
        )
    }

    /// `GET /api/output?job=&task=&stream=stdout|stderr&offset=`: a piece
    /// of a task's output as text, for a page that tails it.
    pub(super) async fn output(&self, req: &Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(req);
        let (job, task) = match (param(&q, "job", JobId::new), param(&q, "task", TaskId::new)) {
            (Ok(j), Ok(t)) => (j, t),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let stream = match q.get("stream").map(String::as_str) {
            Some("stderr") => OutputStream::Stderr,
            _ => OutputStream::Stdout,
        };
        let request = ApiRequest::ReadTaskOutput {
            job,
            task,
            attempt: q.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0),
            stream,
            offset: q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
            max_bytes: TAIL_BYTES_MAX,
        };
        match self.service.console_call(who.caller.clone(), request).await {
            Ok(ApiResponse::TaskOutput {
                node,
                attempt,
                chunk,
                completed,
            }) => Reply::json(
                200,
                &serde_json::json!({
                    "node": node,
                    "attempt": attempt,
                    "offset": chunk.offset,
                    "next": chunk.offset + chunk.data.len() as u64,
                    "size": chunk.size,
                    "text": String::from_utf8_lossy(&chunk.data),
                    "completed": completed,
                }),
            ),
            Ok(_) => Reply::error(500, "unexpected reply to ReadTaskOutput"),
            Err(e) => Reply::api_error(&e),
        }
    }

    /// `PUT /api/upload?container=&name=`: the body becomes the blob,
    /// streamed in chunks with its SHA-256 checked by the store.
    pub(super) async fn upload(&self, req: Request<Incoming>, who: &SignedIn) -> Reply {
        let q = http::query(&req);
        let (Some(container), Some(name)) = (q.get("container"), q.get("name")) else {
            return Reply::error(400, "missing ?container= or ?name=");
        };
        let begin = ApiRequest::BeginUpload {
            container: container.clone(),
            name: name.clone(),
        };
        let upload = match self.service.console_call(who.caller.clone(), begin).await {
            Ok(ApiResponse::UploadStarted { upload }) => upload,
            Ok(_) => return Reply::error(500, "unexpected reply to BeginUpload"),
            Err(e) => return Reply::api_error(&e),
        };
        match self.stream_upload(req.into_body(), who, upload).await {
            Ok((size, sha256)) => {
                let finish = ApiRequest::FinishUpload {
                    upload,
                    size,
                    sha256,
                };
                match self.service.console_call(who.caller.clone(), finish).await {
                    Ok(r) => Reply::json(200, &r),
                    Err(e) => Reply::api_error(&e),
                }
            }
            Err(reply) => {
                let abort = ApiRequest::AbortUpload { upload };
                let _ = self.service.console_call(who.caller.clone(), abort).await;
                reply
            }
        }
    }

    async fn stream_upload(
        &self,
        mut body: Incoming,
        who: &SignedIn,
        upload: u64,
    ) -> Result<(u64, String), Reply> {
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        let mut pending = BytesMut::new();
        let mut ended = false;
        while !ended {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        pending.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(Reply::error(400, &format!("the upload broke off: {e}")))
                }
                None => ended = true,
            }
            while pending.len() >= BLOB_CHUNK_BYTES || (ended && !pending.is_empty()) {
                let take = pending.len().min(BLOB_CHUNK_BYTES);
                let data = pending.split_to(take).to_vec();
                hash.update(&data);
                let len = data.len() as u64;
                let request = ApiRequest::UploadChunk {
                    upload,
                    offset,
                    data,
                };
                if let Err(e) = self.service.console_call(who.caller.clone(), request).await {
                    return Err(Reply::api_error(&e));
                }
                offset += len;
            }
        }
        Ok((offset, crate::blob::hex(&hash.finalize())))
    }
}
