//! Files named on the command line (resource and output files, package
//! references), and the files API of tasks and nodes.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::output::refused;
use lote::api::{FileAnswer, Request, Response};
use lote::client::{Client, ClientError};
use lote::domain::spec::{OutputFile, PackageRef, ResourceFile, ResourceSource, UploadCondition};
use lote::types::{JobId, NodeId, PoolId, TaskId};

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

/// Checks a file argument's syntax when the command line is read, so that
/// a mistake is a usage error (exit 2) before anything is sent. `{i}`
/// stands for a number there (it is replaced per task of a range).
fn syntax_of(text: &str, parse: impl Fn(&str) -> Result<(), String>) -> Result<String, String> {
    parse(&text.replace("{i}", "0")).map(|()| text.to_string())
}

/// `--input`'s syntax (see [`parse_input`]).
pub fn input_arg(text: &str) -> Result<String, String> {
    syntax_of(text, |t| parse_input(t).map(drop))
}

/// `--input-prefix`'s syntax.
pub fn input_prefix_arg(text: &str) -> Result<String, String> {
    syntax_of(text, |t| parse_input_prefix(t).map(drop))
}

/// `--input-url`'s syntax.
pub fn input_url_arg(text: &str) -> Result<String, String> {
    syntax_of(text, |t| parse_input_url(t).map(drop))
}

/// `--upload`'s syntax.
pub fn output_arg(text: &str) -> Result<String, String> {
    syntax_of(text, |t| {
        parse_output(t, UploadCondition::Success).map(drop)
    })
}

/// `--app`'s syntax.
pub fn app_arg(text: &str) -> Result<String, String> {
    syntax_of(text, |t| parse_app(t).map(drop))
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
