//! The files API on a node: list and read a task attempt's files or the
//! node's own, confined to their directory.
//!
//! A path is refused when it is absolute, has a `..` part or a NUL, or
//! resolves (through symlinks a task may plant) outside its root. The
//! check is made on the opened file itself (`/proc/self/fd`), so a link
//! swapped in between the check and the open does not escape either.
//! Listings never follow symlinks; they show them as links.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::api::{
    AttemptRef, FileAnswer, FileChunk, FileEntry, FileKind, FileOp, FileRead, FileRoot,
    FILE_LIST_MAX, OUTPUT_CHUNK_MAX,
};
use crate::types::Timestamp;

/// What of a node's directory the files API shows: not its credential
/// (`node.toml`) nor its download cache.
pub const NODE_VISIBLE: &[&str] = &["shared", "starttask", "tasks", "apps"];

/// An attempt's directory on its node.
pub fn attempt_dir(node_root: &Path, a: &AttemptRef) -> PathBuf {
    node_root
        .join("tasks")
        .join(a.job.as_str())
        .join(a.task.as_str())
        .join(a.attempt.to_string())
}

/// Carries out a file operation the server handed over.
pub fn answer(node_root: &Path, read: &FileRead) -> Result<FileAnswer, String> {
    let (root, node) = match &read.root {
        FileRoot::Attempt(a) => {
            let dir = attempt_dir(node_root, a);
            if !dir.exists() {
                return Err(format!(
                    "attempt {} of task {} left no files on this node: they were deleted after the task's retention time, or it never started",
                    a.attempt, a.task
                ));
            }
            (dir, false)
        }
        FileRoot::Node => (node_root.to_path_buf(), true),
    };
    let parts = relative_parts(&read.path)?;
    if node {
        match parts.first() {
            None => {}
            Some(first) if NODE_VISIBLE.contains(&first.as_str()) => {}
            Some(first) => {
                return Err(format!(
                    "{first:?} is not among a node's files; they are {}",
                    NODE_VISIBLE.join(", ")
                ))
            }
        }
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("cannot open the directory: {e}"))?;
    let path = parts.iter().fold(root.clone(), |p, part| p.join(part));
    match read.op {
        FileOp::Read { offset, max_bytes } => {
            read_confined(&real_root, &path, &read.path, offset, max_bytes).map(FileAnswer::Chunk)
        }
        FileOp::List { recursive } => {
            let real = confined(&real_root, &path, &read.path)?;
            let base_rel = parts.join("/");
            let mut out = Vec::new();
            if parts.is_empty() && node {
                for name in NODE_VISIBLE {
                    let p = root.join(name);
                    if p.exists() {
                        out.push(entry(&p, name.to_string())?);
                        if recursive {
                            list_into(&p, name, true, &mut out)?;
                        }
                    }
                }
            } else {
                list_into(&real, &base_rel, recursive, &mut out)?;
            }
            if out.len() > FILE_LIST_MAX {
                out.truncate(FILE_LIST_MAX);
            }
            Ok(FileAnswer::Listing(out))
        }
    }
}

/// The path's parts, refusing anything that could leave the root.
pub fn relative_parts(path: &str) -> Result<Vec<String>, String> {
    if path.contains('\0') {
        return Err("a path may not contain NUL".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; paths are relative to the task's or node's directory (e.g. wd/out.txt)"
        ));
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                "{path:?} climbs out with '..'; paths stay inside the task's or node's directory"
            ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path:?} is absolute"))
            }
        }
    }
    Ok(parts)
}

fn outside(shown: &str) -> String {
    format!(
        "{shown:?} leads outside the task's or node's directory (through a symbolic link); refused"
    )
}

/// The real path of `path`, if it exists and lies inside `real_root`.
fn confined(real_root: &Path, path: &Path, shown: &str) -> Result<PathBuf, String> {
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no file or directory {shown:?}"),
        _ => format!("cannot open {shown:?}: {e}"),
    })?;
    if !real.starts_with(real_root) {
        return Err(outside(shown));
    }
    Ok(real)
}

fn read_confined(
    real_root: &Path,
    path: &Path,
    shown: &str,
    offset: u64,
    max_bytes: u32,
) -> Result<FileChunk, String> {
    let real = confined(real_root, path, shown)?;
    let mut file = std::fs::File::open(&real).map_err(|e| format!("cannot open {shown:?}: {e}"))?;
    // What was opened, whatever was swapped in since the check.
    {
        use std::os::fd::AsRawFd;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| format!("cannot check {shown:?}: {e}"))?;
        if !opened.starts_with(real_root) {
            return Err(outside(shown));
        }
    }
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown:?}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{shown:?} is a directory; list it instead"));
    }
    let size = meta.len();
    let offset = offset.min(size);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek in {shown:?}: {e}"))?;
    let want = (size - offset).min(u64::from(max_bytes.min(OUTPUT_CHUNK_MAX)));
    let mut data = Vec::with_capacity(want as usize);
    file.take(want)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {shown:?}: {e}"))?;
    Ok(FileChunk { offset, data, size })
}

fn entry(path: &Path, rel: String) -> Result<FileEntry, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read {rel:?}: {e}"))?;
    let kind = if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else if meta.is_dir() {
        FileKind::Directory
    } else {
        FileKind::File
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Timestamp::from_micros(d.as_micros() as i64))
        .unwrap_or(Timestamp::EPOCH);
    Ok(FileEntry {
        path: rel,
        kind,
        size: if kind == FileKind::File {
            meta.len()
        } else {
            0
        },
        modified,
    })
}

/// Lists `dir` (shown as `rel`) into `out`, depth first, names sorted.
fn list_into(
    dir: &Path,
    rel: &str,
    recursive: bool,
    out: &mut Vec<FileEntry>,
) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot read {rel:?}: {e}"))?;
    if !meta.is_dir() {
        out.push(entry(dir, rel.to_string())?);
        return Ok(());
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {rel:?}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        if out.len() > FILE_LIST_MAX {
            return Ok(());
        }
        let name = name.to_string_lossy().into_owned();
        // Work in progress of the agent itself is not the task's.
        if name.contains(".lote-part-") {
            continue;
        }
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let child = dir.join(&name);
        let e = entry(&child, child_rel.clone())?;
        let descend = recursive && e.kind == FileKind::Directory;
        out.push(e);
        if descend {
            list_into(&child, &child_rel, true, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_refuse_what_leaves_the_root() {
        assert_eq!(relative_parts("wd/./a.txt").unwrap(), ["wd", "a.txt"]);
        assert_eq!(relative_parts("").unwrap(), Vec::<String>::new());
        for bad in ["/etc/passwd", "../x", "wd/../../x", "a\0b", "wd/.."] {
            assert!(relative_parts(bad).is_err(), "{bad:?}");
        }
    }
}
