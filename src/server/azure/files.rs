//! A task's or a node's files over Azure's REST API: listings as
//! `BatchNodeFile`s, downloads whole or by `ocp-range`, and their
//! properties on HEAD, read through the node's agent as `lote task
//! files` reads them.

use hyper::header::HeaderName;
use hyper::Method;
use serde_json::json;

use super::common::{call, encode, http_date, id, page, unexpected};
use super::{AzError, Call, Reply};
use crate::api::agent::{FileAnswer, FileKind};
use crate::api::{Request, Response};
use crate::server::Service;
use crate::types::{JobId, NodeId, PoolId, TaskId};

/// Whose files: a task's (its latest attempt) or a node's.
pub enum Owner {
    Task { job: JobId, task: TaskId },
    Node { pool: PoolId, node: NodeId },
}

impl Owner {
    pub fn task(j: &str, t: &str) -> Result<Owner, AzError> {
        Ok(Owner::Task {
            job: id(j, "job", JobId::new)?,
            task: id(t, "task", TaskId::new)?,
        })
    }

    pub fn node(p: &str, n: &str) -> Result<Owner, AzError> {
        Ok(Owner::Node {
            pool: id(p, "pool", PoolId::new)?,
            node: id(n, "node", NodeId::new)?,
        })
    }

    fn path(&self) -> String {
        match self {
            Owner::Task { job, task } => format!("/jobs/{job}/tasks/{task}/files"),
            Owner::Node { pool, node } => format!("/pools/{pool}/nodes/{node}/files"),
        }
    }

    fn listing(&self, recursive: bool) -> Request {
        match self {
            Owner::Task { job, task } => Request::ListTaskFiles {
                job: job.clone(),
                task: task.clone(),
                attempt: 0,
                path: String::new(),
                recursive,
            },
            Owner::Node { pool, node } => Request::ListNodeFiles {
                pool: pool.clone(),
                node: node.clone(),
                path: String::new(),
                recursive,
            },
        }
    }

    fn read(&self, path: &str, offset: u64, max_bytes: u32) -> Request {
        match self {
            Owner::Task { job, task } => Request::ReadTaskFile {
                job: job.clone(),
                task: task.clone(),
                attempt: 0,
                path: path.to_string(),
                offset,
                max_bytes,
            },
            Owner::Node { pool, node } => Request::ReadNodeFile {
                pool: pool.clone(),
                node: node.clone(),
                path: path.to_string(),
                offset,
                max_bytes,
            },
        }
    }
}

pub async fn list(s: &Service, c: &Call, owner: &Owner) -> Result<Reply, AzError> {
    let recursive = c.query.get("recursive").is_some_and(|r| r == "true");
    let Response::Files {
        answer: FileAnswer::Listing(entries),
        ..
    } = call(s, c, owner.listing(recursive)).await?
    else {
        return Err(unexpected("a file listing"));
    };
    let base = owner.path();
    let items = entries
        .iter()
        .map(|e| {
            json!({
                "name": e.path,
                "url": format!("{}{base}/{}", c.base, encode(&e.path)),
                "isDirectory": e.kind == FileKind::Directory,
                "properties": {
                    "lastModified": e.modified.to_string(),
                    "creationTime": e.modified.to_string(),
                    "contentLength": e.size,
                    "contentType": "application/octet-stream",
                },
            })
        })
        .collect();
    page(c, &base, items)
}

/// Most bytes one download answers with; a larger file is read by range.
const DOWNLOAD_BYTES_MAX: usize = 256 << 20;

/// A file, whole or `ocp-range: bytes=a-b`; HEAD: its properties only.
pub async fn read(s: &Service, c: &Call, owner: &Owner, path: &str) -> Result<Reply, AzError> {
    let range = c
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'));
    let (mut from, last) = match range {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse::<u64>().ok()),
        None => (0u64, None),
    };
    let mut data = vec![];
    let mut size;
    loop {
        let want = last.map_or(u64::MAX, |l| l + 1 - from.min(l + 1));
        let read = owner.read(path, from, want.min(u32::MAX as u64) as u32);
        let Response::Files {
            answer: FileAnswer::Chunk(chunk),
            ..
        } = call(s, c, read).await?
        else {
            return Err(unexpected("a file read"));
        };
        size = chunk.size;
        if c.method == Method::HEAD || chunk.data.is_empty() {
            break;
        }
        from += chunk.data.len() as u64;
        data.extend_from_slice(&chunk.data);
        if last.is_some_and(|l| from > l) || from >= size {
            break;
        }
        if data.len() > DOWNLOAD_BYTES_MAX {
            return Err(AzError::new(
                413,
                "RequestBodyTooLarge",
                format!(
                    "the file is over {DOWNLOAD_BYTES_MAX} bytes; read it in ranges (ocp-range)"
                ),
            ));
        }
    }
    let length = if c.method == Method::HEAD {
        size
    } else {
        data.len() as u64
    };
    let now = http_date(s);
    let reply = Reply::bytes(200, "application/octet-stream", data)
        .header(
            HeaderName::from_static("ocp-batch-file-isdirectory"),
            "false",
        )
        .header(
            HeaderName::from_static("ocp-batch-file-url"),
            format!("{}{}/{}", c.base, owner.path(), encode(path)),
        )
        .header(HeaderName::from_static("ocp-creation-time"), now.clone())
        .header(hyper::header::LAST_MODIFIED, now);
    Ok(if c.method == Method::HEAD {
        reply.header(hyper::header::CONTENT_LENGTH, length.to_string())
    } else {
        reply
    })
}
