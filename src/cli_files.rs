//! The CLI's file commands: the blob store (`lote blob`), application
//! packages (`lote app`), a task's and a node's files, and the short forms
//! of resource and output files on `task add`, `job create`, `pool create`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{json, Value};

use lote::api::{ApiError, FileAnswer, FileKind, Request, Response};
use lote::blob::transfer::{self, TransferError};
use lote::blob::BlobMeta;
use lote::client::{Client, ClientError};
use lote::domain::spec::{OutputFile, PackageRef, ResourceFile, ResourceSource, UploadCondition};
use lote::domain::RejectionCode;
use lote::types::{JobId, NodeId, PoolId, TaskId};

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
    Show {
        container: String,
        name: String,
    },
    /// Delete a blob, or with --prefix every blob whose name starts with it.
    Delete {
        container: String,
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        prefix: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Upload a zip as a version of an application package. The archive is
    /// checked first: entries that leave the package's directory, links,
    /// and archives that expand past 4 GiB are refused.
    ///
    /// Example:
    ///   lote app upload blender 4.2 ./blender-4.2.zip --default
    #[command(verbatim_doc_comment)]
    Upload {
        id: String,
        #[arg(value_name = "VERSION")]
        package_version: String,
        zip: PathBuf,
        /// Make it the version used by references that name none.
        #[arg(long)]
        default: bool,
    },
    /// Packages, their versions and defaults.
    List,
    SetDefault {
        id: String,
        #[arg(value_name = "VERSION")]
        package_version: String,
    },
    Delete {
        id: String,
        #[arg(value_name = "VERSION")]
        package_version: String,
    },
}

fn refused(message: impl Into<String>) -> ClientError {
    ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, message))
}

fn from_transfer(e: TransferError) -> ClientError {
    match e {
        TransferError::Client(c) => c,
        other => ClientError::Protocol(other.to_string()),
    }
}

/// A progress line on stderr for transfers worth watching.
struct Progress {
    label: String,
    shown: bool,
}

impl Progress {
    fn new(label: impl Into<String>) -> Self {
        Progress {
            label: label.into(),
            shown: false,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        const WORTH_SHOWING: u64 = 8 << 20;
        if total < WORTH_SHOWING || !std::io::stderr().is_terminal() {
            return;
        }
        let width = 30u64;
        let filled = (done * width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        eprint!(
            "\r{} [{}{}] {:.0}/{:.0} MiB",
            self.label,
            "#".repeat(filled as usize),
            " ".repeat((width - filled) as usize),
            done as f64 / 1048576.0,
            total as f64 / 1048576.0
        );
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
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

async fn download_one(client: &Client, meta: &BlobMeta, dest: &Path) -> Result<(), ClientError> {
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
    crate::cli::table(&["name", "bytes", "sha256 (start)", "uploaded"], rows)
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

pub async fn app(client: &Client, cmd: AppCmd) -> Result<Response, ClientError> {
    match cmd {
        AppCmd::Upload {
            id,
            package_version: version,
            zip,
            default,
        } => {
            let mut bar = Progress::new(format!("{id} {version}"));
            transfer::upload_file(
                client,
                Request::BeginPackageUpload {
                    id: id.clone(),
                    version: version.clone(),
                },
                &zip,
                |d, t| bar.update(d, t),
            )
            .await
            .map_err(from_transfer)?;
            bar.finish();
            if default {
                client
                    .call(&Request::SetDefaultPackageVersion { id, version })
                    .await
            } else {
                client.call(&Request::ListPackages).await
            }
        }
        AppCmd::List => client.call(&Request::ListPackages).await,
        AppCmd::SetDefault {
            id,
            package_version: version,
        } => {
            client
                .call(&Request::SetDefaultPackageVersion { id, version })
                .await
        }
        AppCmd::Delete {
            id,
            package_version: version,
        } => {
            client
                .call(&Request::DeletePackageVersion { id, version })
                .await
        }
    }
}

/// Renders the file-related answers.
pub fn render(response: &Response) -> Option<(Value, String)> {
    Some(match response {
        Response::Packages(list) => {
            let mut rows = Vec::new();
            for p in list {
                for v in &p.versions {
                    let default = p.default_version.as_deref() == Some(v.version.as_str());
                    rows.push(vec![
                        p.id.clone(),
                        v.version.clone(),
                        if default { "yes".into() } else { String::new() },
                        v.size.to_string(),
                        v.uploaded_at.to_string(),
                    ]);
                }
            }
            (
                json!({ "packages": list }),
                crate::cli::table(&["id", "version", "default", "bytes", "uploaded"], rows),
            )
        }
        Response::Files {
            node,
            answer: FileAnswer::Listing(entries),
            ..
        } => {
            let rows = entries
                .iter()
                .map(|e| {
                    let kind = match e.kind {
                        FileKind::File => "file",
                        FileKind::Directory => "dir",
                        FileKind::Symlink => "link",
                    };
                    vec![
                        e.path.clone(),
                        kind.to_string(),
                        e.size.to_string(),
                        e.modified.to_string(),
                    ]
                })
                .collect();
            let value = json!({ "node": node, "files": entries.iter().map(|e| json!({
                "path": e.path, "kind": e.kind, "size": e.size, "modified": e.modified,
            })).collect::<Vec<_>>() });
            (
                value,
                crate::cli::table(&["path", "kind", "bytes", "modified"], rows),
            )
        }
        _ => return None,
    })
}

/// Where a file command reads: a task's attempt or a node.
pub enum FileTarget {
    Task {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    Node {
        pool: PoolId,
        node: NodeId,
    },
}

impl FileTarget {
    fn list(&self, path: String, recursive: bool) -> Request {
        match self {
            FileTarget::Task { job, task, attempt } => Request::ListTaskFiles {
                job: job.clone(),
                task: task.clone(),
                attempt: *attempt,
                path,
                recursive,
            },
            FileTarget::Node { pool, node } => Request::ListNodeFiles {
                pool: pool.clone(),
                node: node.clone(),
                path,
                recursive,
            },
        }
    }

    fn read(&self, path: String, offset: u64) -> Request {
        let max_bytes = lote::api::OUTPUT_CHUNK_MAX;
        match self {
            FileTarget::Task { job, task, attempt } => Request::ReadTaskFile {
                job: job.clone(),
                task: task.clone(),
                attempt: *attempt,
                path,
                offset,
                max_bytes,
            },
            FileTarget::Node { pool, node } => Request::ReadNodeFile {
                pool: pool.clone(),
                node: node.clone(),
                path,
                offset,
                max_bytes,
            },
        }
    }
}

pub async fn list_files(
    client: &Client,
    target: FileTarget,
    path: String,
    recursive: bool,
) -> Result<Response, ClientError> {
    client.call(&target.list(path, recursive)).await
}

/// Prints (or saves to `dest`) a file, from `offset`; with `follow`, keeps
/// reading what is appended until the task's attempt ends.
pub async fn read_file(
    client: &Client,
    target: FileTarget,
    path: String,
    dest: Option<PathBuf>,
    follow: bool,
) -> Result<(Value, String), ClientError> {
    use std::io::Write;
    let mut offset = 0u64;
    let mut out: Box<dyn Write> = match &dest {
        Some(d) => Box::new(
            std::fs::File::create(d)
                .map_err(|e| refused(format!("cannot create {}: {e}", d.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    loop {
        let Response::Files {
            answer: FileAnswer::Chunk(chunk),
            completed,
            ..
        } = client.call(&target.read(path.clone(), offset)).await?
        else {
            return Err(ClientError::Protocol("expected part of a file".into()));
        };
        out.write_all(&chunk.data)
            .and_then(|_| out.flush())
            .map_err(|e| ClientError::Protocol(format!("cannot write: {e}")))?;
        offset = chunk.offset + chunk.data.len() as u64;
        let at_end = offset >= chunk.size;
        let still_written = follow && !completed && matches!(target, FileTarget::Task { .. });
        if at_end && !still_written {
            break;
        }
        if at_end {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    let text = match &dest {
        Some(d) => format!("saved {offset} bytes to {}\n", d.display()),
        None => String::new(),
    };
    Ok((json!({ "path": path, "bytes": offset, "dest": dest }), text))
}

/// A trailing `@MODE` (octal, e.g. `@755` for a program).
fn split_mode(text: &str) -> Result<(&str, Option<u32>), String> {
    match text.rsplit_once('@') {
        Some((rest, mode)) if !mode.is_empty() && mode.bytes().all(|b| b.is_ascii_digit()) => {
            let mode = u32::from_str_radix(mode, 8)
                .map_err(|_| format!("{mode:?} in {text:?} is not an octal file mode"))?;
            Ok((rest, Some(mode)))
        }
        _ => Ok((text, None)),
    }
}

/// `CONTAINER/NAME[=PATH][@MODE]`: one blob, at PATH (default: its name)
/// in the working directory.
pub fn parse_input(text: &str) -> Result<ResourceFile, String> {
    let (text, mode) = split_mode(text)?;
    let (source, path) = match text.split_once('=') {
        Some((s, p)) => (s, Some(p)),
        None => (text, None),
    };
    let (container, name) = source
        .split_once('/')
        .ok_or_else(|| format!("input {text:?} must be CONTAINER/NAME[=PATH]"))?;
    Ok(ResourceFile {
        source: ResourceSource::Blob {
            container: container.into(),
            name: name.into(),
        },
        path: path.unwrap_or(name).to_string(),
        mode,
    })
}

/// `CONTAINER/PREFIX=DIR`: every blob under PREFIX, into DIR.
pub fn parse_input_prefix(text: &str) -> Result<ResourceFile, String> {
    let (source, path) = text
        .split_once('=')
        .ok_or_else(|| format!("input prefix {text:?} must be CONTAINER/PREFIX=DIR"))?;
    let (container, prefix) = source.split_once('/').unwrap_or((source, ""));
    Ok(ResourceFile {
        source: ResourceSource::BlobPrefix {
            container: container.into(),
            prefix: prefix.into(),
        },
        path: path.to_string(),
        mode: None,
    })
}

/// `PATH=URL`: an http(s) download, at PATH.
pub fn parse_input_url(text: &str) -> Result<ResourceFile, String> {
    let (path, url) = text
        .split_once('=')
        .ok_or_else(|| format!("input URL {text:?} must be PATH=URL"))?;
    Ok(ResourceFile {
        source: ResourceSource::Url { url: url.into() },
        path: path.into(),
        mode: None,
    })
}

/// `PATTERN=CONTAINER[/PREFIX]`.
pub fn parse_output(text: &str, when: UploadCondition) -> Result<OutputFile, String> {
    let (pattern, dest) = text
        .split_once('=')
        .ok_or_else(|| format!("output {text:?} must be PATTERN=CONTAINER[/PREFIX]"))?;
    let (container, prefix) = dest.split_once('/').unwrap_or((dest, ""));
    Ok(OutputFile {
        pattern: pattern.into(),
        container: container.into(),
        path_prefix: prefix.into(),
        upload_condition: when,
    })
}

/// `ID[:VERSION]`.
pub fn parse_app(text: &str) -> Result<PackageRef, String> {
    let (id, version) = match text.split_once(':') {
        Some((i, v)) => (i, Some(v.to_string())),
        None => (text, None),
    };
    Ok(PackageRef {
        id: id.into(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        let r = parse_input("inputs/img/1.png").unwrap();
        assert_eq!(r.path, "img/1.png");
        let r = parse_input("inputs/img/1.png=in.png").unwrap();
        assert_eq!((r.path.as_str(), r.mode), ("in.png", None));
        let r = parse_input("programs/bin/render=render@755").unwrap();
        assert_eq!((r.path.as_str(), r.mode), ("render", Some(0o755)));
        assert!(parse_input("programs/bin/render@789").is_err());
        assert!(parse_input("nocontainer").is_err());
        let r = parse_input_url("prog=https://example.org/a?b=c").unwrap();
        assert_eq!(
            r.source,
            ResourceSource::Url {
                url: "https://example.org/a?b=c".into()
            }
        );
        let o = parse_output("out/*.png=results/run-1/", UploadCondition::Completion).unwrap();
        assert_eq!(
            (o.container.as_str(), o.path_prefix.as_str()),
            ("results", "run-1/")
        );
        assert_eq!(
            parse_app("blender:4.2").unwrap().version.as_deref(),
            Some("4.2")
        );
        assert_eq!(parse_app("blender").unwrap().version, None);
    }
}
