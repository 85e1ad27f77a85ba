//! Moving a task's files on its node: resource files in before the
//! process starts, output files out after it ends, application packages
//! unpacked once per node.
//!
//! Blobs are cached per node by checksum under `ROOT/cache/blobs`, so a
//! thousand tasks that share one input fetch it once; each task gets its
//! own copy in its working directory (a task may change its inputs without
//! touching its neighbours'). Concurrent fetches of one blob wait for the
//! first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::blobs::BlobMeta;
use crate::api::{Request, Response};
use crate::blob::packages;
use crate::blob::transfer::{self, TransferError};
use crate::client::Client;
use crate::domain::spec::{OutputFile, PackageRef, ResourceFile, ResourceSource, UploadCondition};
use crate::domain::task::OutputManifestEntry;

/// Tries of one transfer before the attempt fails.
pub const TRANSFER_TRIES_MAX: u32 = 4;
/// Longest one URL download may take.
pub const URL_FETCH_SECS_MAX: u64 = 3600;

/// A node's file mover.
pub struct Stager {
    client: Arc<Client>,
    root: PathBuf,
    /// One lock per blob checksum or package version being fetched.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An unpacked package: the variables that point at it.
pub type PackageEnv = Vec<(String, String)>;

fn lock_for(
    locks: &Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: &str,
) -> Arc<tokio::sync::Mutex<()>> {
    locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.to_string())
        .or_default()
        .clone()
}

/// Retries a transfer on failures that may pass.
async fn with_retries<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransferError>>,
{
    let mut pause = Duration::from_millis(250);
    for tried in 1..=TRANSFER_TRIES_MAX {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tried < TRANSFER_TRIES_MAX => {
                tracing::info!(what, error = %e, tried, "transfer failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => return Err(format!("{what}: {e} (after {tried} tries)")),
        }
    }
    Err(format!("{what}: no tries left"))
}

fn join_name(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else if prefix.ends_with('/') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}/{rel}")
    }
}

fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The directories a pattern names before its first wildcard: `out/` of
/// `out/*.png`, nothing of `**/*.png`. Uploaded names drop it, so
/// `out/*.png` with prefix `run-1/` gives `run-1/frame.png`.
fn literal_base(pattern: &str) -> &str {
    let first_glob = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    match pattern[..first_glob].rfind('/') {
        Some(slash) => &pattern[..=slash],
        None => "",
    }
}

impl Stager {
    pub fn new(client: Arc<Client>, root: PathBuf) -> Self {
        Stager {
            client,
            root,
            locks: Mutex::default(),
        }
    }

    /// The node's copy of a blob, fetched if it is not cached yet.
    async fn cached(&self, meta: &BlobMeta) -> Result<PathBuf, String> {
        let dir = self.root.join("cache").join("blobs");
        let path = dir.join(&meta.sha256);
        let lock = lock_for(&self.locks, &meta.sha256);
        let _held = lock.lock().await;
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.len() == meta.size)
        {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create the node's cache: {e}"))?;
        let what = format!("fetching blob {}/{}", meta.container, meta.name);
        with_retries(&what, || {
            transfer::download_to(&self.client, meta, &path, |_, _| {})
        })
        .await?;
        Ok(path)
    }

    async fn stat(&self, container: &str, name: &str) -> Result<BlobMeta, String> {
        let what = format!("resource file {container}/{name}");
        with_retries(&what, || transfer::stat(&self.client, container, name)).await
    }

    /// Fetches `files` into `wd`, in order (a later file may replace an
    /// earlier one at the same path).
    pub async fn fetch_resources(&self, files: &[ResourceFile], wd: &Path) -> Result<(), String> {
        for file in files {
            let dest = wd.join(&file.path);
            match &file.source {
                ResourceSource::Blob { container, name } => {
                    let meta = self.stat(container, name).await?;
                    self.place(&meta, &dest).await?;
                }
                ResourceSource::BlobPrefix { container, prefix } => {
                    let what = format!("resource files {container}/{prefix}*");
                    let blobs = with_retries(&what, || {
                        transfer::list_all(&self.client, container, prefix)
                    })
                    .await?;
                    if blobs.is_empty() {
                        return Err(format!(
                            "resource files: no blob of container {container} starts with {prefix:?}"
                        ));
                    }
                    for meta in blobs {
                        let rel = meta.name[prefix.len()..].trim_start_matches('/');
                        let rel = if rel.is_empty() {
                            meta.name.rsplit('/').next().unwrap_or(&meta.name)
                        } else {
                            rel
                        };
                        self.place(&meta, &dest.join(rel)).await?;
                    }
                }
                ResourceSource::Url { url } => fetch_url(url, &dest).await?,
            }
            if let Some(mode) = file.mode {
                use std::os::unix::fs::PermissionsExt;
                let apply =
                    |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
                apply(&dest).map_err(|e| {
                    format!("resource file {}: cannot set mode {mode:o}: {e}", file.path)
                })?;
            }
        }
        Ok(())
    }

    /// Copies a cached blob to `dest`.
    async fn place(&self, meta: &BlobMeta, dest: &Path) -> Result<(), String> {
        let cached = self.cached(meta).await?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                format!(
                    "resource file {}: cannot create {}: {e}",
                    meta.name,
                    dir.display()
                )
            })?;
        }
        tokio::fs::copy(&cached, dest)
            .await
            .map_err(|e| format!("resource file {}: cannot copy into place: {e}", meta.name))?;
        Ok(())
    }

    /// Uploads the outputs whose condition the attempt met, returning the
    /// manifest. `attempt_dir` holds `wd/`, `stdout.txt` and `stderr.txt`.
    pub async fn upload_outputs(
        &self,
        outputs: &[OutputFile],
        attempt_dir: &Path,
        succeeded: bool,
    ) -> Result<Vec<OutputManifestEntry>, String> {
        let mut manifest = Vec::new();
        for output in outputs {
            let wanted = match output.upload_condition {
                UploadCondition::Success => succeeded,
                UploadCondition::Failure => !succeeded,
                UploadCondition::Completion => true,
            };
            if !wanted {
                continue;
            }
            let matched = {
                let dir = attempt_dir.to_path_buf();
                let pattern = output.pattern.clone();
                tokio::task::spawn_blocking(move || matches(&dir, &pattern))
                    .await
                    .map_err(|e| format!("output files: {e}"))??
            };
            let literal = !has_glob(&output.pattern);
            let base = literal_base(&output.pattern);
            for (rel, path) in matched {
                let shown = rel.strip_prefix(base).unwrap_or(&rel);
                // A single named file with a prefix that is not a directory
                // is uploaded under exactly that name.
                let name = if literal
                    && !output.path_prefix.is_empty()
                    && !output.path_prefix.ends_with('/')
                {
                    output.path_prefix.clone()
                } else {
                    join_name(&output.path_prefix, shown)
                };
                let what = format!("output file {rel} to {}/{name}", output.container);
                let meta = with_retries(&what, || {
                    transfer::upload_file(
                        &self.client,
                        Request::BeginUpload {
                            container: output.container.clone(),
                            name: name.clone(),
                        },
                        &path,
                        |_, _| {},
                    )
                })
                .await?;
                manifest.push(OutputManifestEntry {
                    path: rel,
                    container: meta.container,
                    name: meta.name,
                    size: meta.size,
                    sha256: meta.sha256,
                });
            }
        }
        Ok(manifest)
    }

    /// Makes sure a package version is unpacked on this node; the
    /// variables that name its directory.
    pub async fn package(&self, r: &PackageRef) -> Result<PackageEnv, String> {
        let what = format!("application package {}", r.id);
        let (version, blob) = match self
            .client
            .call(&Request::ResolvePackage {
                id: r.id.clone(),
                version: r.version.clone(),
            })
            .await
        {
            Ok(Response::PackageResolved { version, blob, .. }) => (version, blob),
            Ok(other) => return Err(format!("{what}: unexpected answer {other:?}")),
            Err(e) => return Err(format!("{what}: {e}")),
        };
        let base = self.root.join("apps").join(&r.id);
        let dir = base.join(&version);
        let marker = base.join(format!(".{version}.sha256"));
        let lock = lock_for(&self.locks, &format!("app:{}:{version}", r.id));
        let _held = lock.lock().await;
        let current = tokio::fs::read_to_string(&marker).await.unwrap_or_default();
        if current.trim() != blob.sha256 || !dir.is_dir() {
            let zip = self
                .cached(&blob)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            let (d, m, sha) = (dir.clone(), marker.clone(), blob.sha256.clone());
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                // A version uploaded again with new content replaces the
                // old unpacked copy.
                if d.exists() {
                    std::fs::remove_dir_all(&d)
                        .map_err(|e| format!("cannot replace {}: {e}", d.display()))?;
                }
                packages::unpack(&zip, &d, packages::PACKAGE_EXPANDED_BYTES_MAX)?;
                std::fs::write(&m, sha)
                    .map_err(|e| format!("cannot record the unpacked version: {e}"))
            })
            .await
            .map_err(|e| format!("{what}: {e}"))?
            .map_err(|e| format!("{what} {version}: {e}"))?;
        }
        let (plain, versioned) = packages::env_names(&r.id, &version);
        let value = dir.display().to_string();
        Ok(vec![(plain, value.clone()), (versioned, value)])
    }

    /// Every package's variables, in order (a task's own after its pool's).
    pub async fn packages(&self, refs: &[PackageRef]) -> Result<PackageEnv, String> {
        let mut env = Vec::new();
        for r in refs {
            env.extend(self.package(r).await?);
        }
        Ok(env)
    }
}

/// Files of an attempt matching an output pattern: `(shown path, path)`.
/// Patterns are relative to `wd`; `../NAME` patterns match the files
/// beside it (stdout.txt, stderr.txt). Symbolic links are never uploaded
/// (they could point anywhere on the node).
fn matches(attempt_dir: &Path, pattern: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut out = Vec::new();
    if let Some(beside) = pattern.strip_prefix("../") {
        let glob =
            glob::Pattern::new(beside).map_err(|e| format!("output pattern {pattern:?}: {e}"))?;
        for name in ["stdout.txt", "stderr.txt"] {
            let path = attempt_dir.join(name);
            if glob.matches_with(name, options) && path.is_file() {
                out.push((format!("../{name}"), path));
            }
        }
        return Ok(out);
    }
    let glob =
        glob::Pattern::new(pattern).map_err(|e| format!("output pattern {pattern:?}: {e}"))?;
    let wd = attempt_dir.join("wd");
    let mut stack = vec![(wd.clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push((e.path(), child_rel));
            } else if kind.is_file() && glob.matches_with(&child_rel, options) {
                out.push((child_rel, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Downloads a URL with the node's `curl` (TLS, proxies and redirects as
/// the machine is set up for them).
async fn fetch_url(url: &str, dest: &Path) -> Result<(), String> {
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("resource file {url}: cannot create {}: {e}", dir.display()))?;
    }
    let mut curl = tokio::process::Command::new("curl");
    curl.args([
        "--fail",
        "--silent",
        "--show-error",
        "--location",
        "--retry",
        "3",
    ])
    .arg("--max-time")
    .arg(URL_FETCH_SECS_MAX.to_string())
    .arg("--output")
    .arg(dest)
    .arg("--")
    .arg(url)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let out = match super::proc_tree::spawn_owned(&mut curl) {
        Ok((child, _owned)) => child.wait_with_output().await,
        Err(e) => Err(e),
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!(
                "resource file {url}: curl is not installed on this node (apt-get install curl)"
            )
        }
        _ => format!("resource file {url}: cannot run curl: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        let _ = tokio::fs::remove_file(dest).await;
        Err(format!(
            "resource file {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_patterns_match_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path();
        std::fs::create_dir_all(a.join("wd/out/deep")).unwrap();
        for f in [
            "wd/out/a.png",
            "wd/out/b.txt",
            "wd/out/deep/c.png",
            "wd/top.png",
            "stdout.txt",
            "stderr.txt",
        ] {
            std::fs::write(a.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", a.join("wd/out/link.png")).unwrap();
        let names = |p: &str| {
            matches(a, p)
                .unwrap()
                .into_iter()
                .map(|(r, _)| r)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("out/*.png"), ["out/a.png"]);
        assert_eq!(names("out/**/*.png"), ["out/a.png", "out/deep/c.png"]);
        assert_eq!(names("*.png"), ["top.png"]);
        assert_eq!(
            names("**/*.png"),
            ["out/a.png", "out/deep/c.png", "top.png"]
        );
        assert_eq!(names("../std*.txt"), ["../stdout.txt", "../stderr.txt"]);
        assert_eq!(names("../stdout.txt"), ["../stdout.txt"]);
        assert!(names("none/*").is_empty());
        assert_eq!(literal_base("out/*.png"), "out/");
        assert_eq!(literal_base("out/**/*.png"), "out/");
        assert_eq!(literal_base("**/*.png"), "");
        assert_eq!(literal_base("../std*.txt"), "../");
        assert_eq!(literal_base("a/b/c.txt"), "a/b/");
        assert_eq!(join_name("", "a/b"), "a/b");
        assert_eq!(join_name("run-1", "a"), "run-1/a");
        assert_eq!(join_name("run-1/", "a"), "run-1/a");
    }
}
