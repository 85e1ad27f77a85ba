//! `lote blob`: the account's blob store: upload and download files and
//! folders with progress and end-to-end checksums.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{from_transfer, refused, table, Progress};
use lote::api::{Request, Response};
use lote::blob::transfer::{self};
use lote::blob::BlobMeta;
use lote::client::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum BlobCmd {
    /// Upload a file, or a directory with everything under it. Names are
    /// PREFIX + the path relative to the directory (or the file's name).
    ///
    /// Examples:
    ///   lote blob upload inputs ./frames --prefix scene-1/
    ///   lote blob upload programs ./render --name bin/render
    #[command(verbatim_doc_comment)]
    Upload {
        container: String,
        path: PathBuf,
        /// The blob's name, for a single file.
        #[arg(long, conflicts_with = "prefix")]
        name: Option<String>,
        /// Put before every name (e.g. `scene-1/`).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Download one blob to a file, or with --prefix every blob whose name
    /// starts with it into a directory (relative names kept).
    ///
    /// Examples:
    ///   lote blob download outputs frame-1.png --dest ./frame-1.png
    ///   lote blob download outputs --prefix scene-1/ --dest ./results
    #[command(verbatim_doc_comment)]
    Download {
        container: String,
        /// The blob (omit with --prefix).
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        prefix: Option<String>,
        /// File (one blob) or directory (--prefix); default: the current
        /// directory, the blob's own name.
        #[arg(long)]
        dest: Option<PathBuf>,
    },
    /// The account's containers, or the blobs of one (by prefix).
    List {
        container: Option<String>,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// One blob: size, SHA-256, upload time.
    Show { container: String, name: String },
    /// Delete a blob, or with --prefix every blob whose name starts with it.
    Delete {
        container: String,
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        prefix: Option<String>,
    },
}

fn files_under(root: &Path) -> Result<Vec<(String, PathBuf)>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| refused(format!("cannot read {}: {e}", dir.display())))?;
        for e in entries {
            let e = e.map_err(|e| refused(format!("cannot read {}: {e}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = e
                .file_type()
                .map_err(|e| refused(format!("cannot read {}: {e}", dir.display())))?;
            if kind.is_dir() {
                stack.push((e.path(), child_rel));
            } else if kind.is_file() {
                out.push((child_rel, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn upload_one(
    client: &Client,
    container: &str,
    name: &str,
    path: &Path,
) -> Result<BlobMeta, ClientError> {
    let mut bar = Progress::new(name);
    let meta = transfer::upload_file(
        client,
        Request::BeginUpload {
            container: container.into(),
            name: name.into(),
        },
        path,
        |d, t| bar.update(d, t),
    )
    .await
    .map_err(from_transfer);
    bar.finish();
    meta
}

pub(super) async fn download_one(
    client: &Client,
    meta: &BlobMeta,
    dest: &Path,
) -> Result<(), ClientError> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| refused(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut bar = Progress::new(&meta.name);
    let result = transfer::download_to(client, meta, dest, |d, t| bar.update(d, t))
        .await
        .map_err(from_transfer);
    bar.finish();
    result
}

fn blob_rows(blobs: &[BlobMeta]) -> String {
    let rows = blobs
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.size.to_string(),
                b.sha256[..16].to_string(),
                b.uploaded_at.to_string(),
            ]
        })
        .collect();
    table(&["name", "bytes", "sha256 (start)", "uploaded"], rows)
}

fn transferred(what: &str, blobs: &[BlobMeta], extra: Value) -> (Value, String) {
    let bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let mut text = format!("{what} {} blob(s), {bytes} bytes\n", blobs.len());
    text.push_str(&blob_rows(blobs));
    let mut value = json!({ "blobs": blobs, "bytes": bytes });
    if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
        map.extend(more);
    }
    (value, text)
}

pub async fn blob(client: &Client, cmd: BlobCmd) -> Result<(Value, String), ClientError> {
    match cmd {
        BlobCmd::Upload {
            container,
            path,
            name,
            prefix,
        } => {
            let meta = std::fs::metadata(&path)
                .map_err(|e| refused(format!("cannot read {}: {e}", path.display())))?;
            let items = if meta.is_dir() {
                files_under(&path)?
                    .into_iter()
                    .map(|(rel, p)| (format!("{prefix}{rel}"), p))
                    .collect()
            } else {
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                vec![(name.unwrap_or(format!("{prefix}{file_name}")), path.clone())]
            };
            let mut done = Vec::new();
            for (name, p) in items {
                done.push(upload_one(client, &container, &name, &p).await?);
            }
            Ok(transferred("uploaded", &done, json!({})))
        }
        BlobCmd::Download {
            container,
            name,
            prefix,
            dest,
        } => {
            let mut done = Vec::new();
            match (name, prefix) {
                (Some(name), None) => {
                    let meta = transfer::stat(client, &container, &name)
                        .await
                        .map_err(from_transfer)?;
                    let dest = dest
                        .unwrap_or_else(|| PathBuf::from(name.rsplit('/').next().unwrap_or(&name)));
                    download_one(client, &meta, &dest).await?;
                    done.push(meta);
                }
                (None, Some(prefix)) => {
                    let dir = dest.unwrap_or_else(|| PathBuf::from("."));
                    for meta in transfer::list_all(client, &container, &prefix)
                        .await
                        .map_err(from_transfer)?
                    {
                        let rel = meta.name[prefix.len()..].trim_start_matches('/');
                        let rel = if rel.is_empty() {
                            meta.name.as_str()
                        } else {
                            rel
                        };
                        download_one(client, &meta, &dir.join(rel)).await?;
                        done.push(meta);
                    }
                }
                _ => return Err(refused("name a blob, or give --prefix")),
            }
            Ok(transferred("downloaded", &done, json!({})))
        }
        BlobCmd::List { container, prefix } => match container {
            None => {
                let Response::Containers(names) = client.call(&Request::ListContainers).await?
                else {
                    return Err(ClientError::Protocol("expected containers".into()));
                };
                let text = names.iter().map(|n| format!("{n}\n")).collect::<String>();
                Ok((json!({ "containers": names }), text))
            }
            Some(container) => {
                let blobs = transfer::list_all(client, &container, &prefix)
                    .await
                    .map_err(from_transfer)?;
                Ok((json!({ "blobs": blobs }), blob_rows(&blobs)))
            }
        },
        BlobCmd::Show { container, name } => {
            let meta = transfer::stat(client, &container, &name)
                .await
                .map_err(from_transfer)?;
            let text = format!(
                "blob {}/{}\n  bytes: {}\n  sha256: {}\n  uploaded: {}\n",
                meta.container, meta.name, meta.size, meta.sha256, meta.uploaded_at
            );
            Ok((serde_json::to_value(&meta).unwrap_or(Value::Null), text))
        }
        BlobCmd::Delete {
            container,
            name,
            prefix,
        } => {
            let names = match (name, prefix) {
                (Some(n), None) => vec![n],
                (None, Some(p)) => transfer::list_all(client, &container, &p)
                    .await
                    .map_err(from_transfer)?
                    .into_iter()
                    .map(|b| b.name)
                    .collect(),
                _ => return Err(refused("name a blob, or give --prefix")),
            };
            let mut deleted = Vec::new();
            for name in names {
                let Response::BlobDeleted { existed } = client
                    .call(&Request::DeleteBlob {
                        container: container.clone(),
                        name: name.clone(),
                    })
                    .await?
                else {
                    return Err(ClientError::Protocol("expected a deletion".into()));
                };
                if existed {
                    deleted.push(name);
                }
            }
            let text = format!("deleted {} blob(s)\n", deleted.len());
            Ok((json!({ "deleted": deleted }), text))
        }
    }
}
