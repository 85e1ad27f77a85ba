//! Application packages: versioned zips of a program and its files, kept
//! in the account's reserved container and unpacked once per node.
//!
//! A version is the blob `ID/VERSION.zip` of [`PACKAGES_CONTAINER`]; the
//! default version's name is the content of the blob `ID/default`. The
//! archive is checked when it is uploaded and again when a node unpacks it
//! (the node trusts nothing it downloads): entries that leave the target
//! directory, symlinks, and archives that expand past
//! [`PACKAGE_EXPANDED_BYTES_MAX`] or hold more than [`PACKAGE_ENTRIES_MAX`]
//! entries are refused.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use super::BlobMeta;
pub use crate::api::blobs::{PackageVersion, PackageView};

/// The reserved container that holds an account's packages.
pub const PACKAGES_CONTAINER: &str = "lote-apps";

/// Most bytes one package may expand to on a node.
pub const PACKAGE_EXPANDED_BYTES_MAX: u64 = 4 << 30;

/// Most entries (files and directories) in one package.
pub const PACKAGE_ENTRIES_MAX: usize = 100_000;

/// The blob holding a version.
pub fn version_blob(id: &str, version: &str) -> String {
    format!("{id}/{version}.zip")
}

/// The blob naming the default version.
pub fn default_blob(id: &str) -> String {
    format!("{id}/default")
}

/// Groups the reserved container's blobs into packages. `defaults` holds
/// each `ID/default` blob's content.
pub fn views(blobs: &[BlobMeta], defaults: &[(String, String)]) -> Vec<PackageView> {
    let mut out: Vec<PackageView> = Vec::new();
    for b in blobs {
        let Some((id, file)) = b.name.split_once('/') else {
            continue;
        };
        let Some(version) = file.strip_suffix(".zip") else {
            continue;
        };
        if out.last().map(|p| p.id.as_str()) != Some(id) {
            out.push(PackageView {
                id: id.to_string(),
                default_version: defaults
                    .iter()
                    .find(|(d, _)| d == id)
                    .map(|(_, v)| v.clone()),
                versions: vec![],
            });
        }
        if let Some(p) = out.last_mut() {
            p.versions.push(PackageVersion {
                version: version.to_string(),
                size: b.size,
                sha256: b.sha256.clone(),
                uploaded_at: b.uploaded_at,
            });
        }
    }
    out
}

/// What an archive holds, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: usize,
    pub expanded_bytes: u64,
}

/// The entry's path inside the target directory, or why it is refused.
fn entry_path<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> Result<PathBuf, String> {
    let name = entry.name().to_string();
    if entry.is_symlink() {
        return Err(format!(
            "entry {name:?} is a symbolic link; packages may not hold links"
        ));
    }
    // enclosed_name refuses absolute paths and any `..` that climbs out.
    let path = entry
        .enclosed_name()
        .ok_or_else(|| format!("entry {name:?} would be written outside the package directory"))?;
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("entry {name:?} contains '..'"));
    }
    Ok(path)
}

/// Opens an archive, refusing one with too many entries.
fn open_archive<R: Read + Seek>(reader: R) -> Result<zip::ZipArchive<R>, String> {
    let archive =
        zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip archive: {e}"))?;
    if archive.len() > PACKAGE_ENTRIES_MAX {
        return Err(format!(
            "the archive holds {} entries; at most {PACKAGE_ENTRIES_MAX}",
            archive.len()
        ));
    }
    Ok(archive)
}

/// Checks an archive without unpacking it (at upload).
pub fn check_archive<R: Read + Seek>(reader: R) -> Result<ArchiveSummary, String> {
    let mut archive = open_archive(reader)?;
    let mut expanded = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable: {e}"))?;
        entry_path(&entry)?;
        expanded = expanded.saturating_add(entry.size());
        if expanded > PACKAGE_EXPANDED_BYTES_MAX {
            return Err(format!(
                "the archive expands past {PACKAGE_EXPANDED_BYTES_MAX} bytes"
            ));
        }
    }
    Ok(ArchiveSummary {
        entries: archive.len(),
        expanded_bytes: expanded,
    })
}

/// Unpacks `zip_path` into `dest`, which must not exist: into a fresh
/// directory beside it first, renamed into place only when every entry is
/// out, so a half-unpacked package is never used. Sizes are counted as
/// bytes are written, not trusted from the archive's headers.
pub fn unpack(zip_path: &Path, dest: &Path, max_bytes: u64) -> Result<ArchiveSummary, String> {
    let file =
        std::fs::File::open(zip_path).map_err(|e| format!("cannot open the package: {e}"))?;
    let mut archive = open_archive(file)?;
    let parent = dest
        .parent()
        .ok_or_else(|| "the package directory has no parent".to_string())?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".unpack-{}", crate::clock::new_uuid().as_simple()));
    let result = unpack_into(&mut archive, &staging, max_bytes).and_then(|summary| {
        std::fs::rename(&staging, dest)
            .map_err(|e| format!("cannot move the package into place: {e}"))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn unpack_into(
    archive: &mut zip::ZipArchive<std::fs::File>,
    root: &Path,
    max_bytes: u64,
) -> Result<ArchiveSummary, String> {
    std::fs::create_dir(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let mut written = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable: {e}"))?;
        let rel = entry_path(&entry)?;
        let path = root.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("cannot create {}: {e}", rel.display()))?;
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", rel.display()))?;
        }
        // create_new: an entry named twice, or a path an earlier entry made
        // into something else, is refused rather than followed.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", rel.display()))?;
        let budget = max_bytes.saturating_sub(written);
        let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
            .map_err(|e| format!("cannot unpack {}: {e}", rel.display()))?;
        written += copied;
        if copied > budget {
            return Err(format!("the archive expands past {max_bytes} bytes"));
        }
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            // Permission bits only: no setuid, setgid or sticky from a zip.
            let perms = std::fs::Permissions::from_mode(mode & 0o777);
            std::fs::set_permissions(&path, perms)
                .map_err(|e| format!("cannot set the mode of {}: {e}", rel.display()))?;
        }
    }
    Ok(ArchiveSummary {
        entries: archive.len(),
        expanded_bytes: written,
    })
}

/// Zips every file under `dir` (names relative to it, modes kept) into
/// `dest`: how a directory becomes a package.
pub fn zip_dir(dir: &Path, dest: &Path) -> Result<usize, String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::create(dest)
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut w = zip::ZipWriter::new(file);
    let mut stack = vec![dir.to_path_buf()];
    let mut files = vec![];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read {}: {e}", d.display()))?;
            let kind = e
                .file_type()
                .map_err(|err| format!("cannot read {}: {err}", e.path().display()))?;
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                files.push(e.path());
            } else {
                return Err(format!(
                    "{} is a link or special file; a package holds plain files",
                    e.path().display()
                ));
            }
        }
    }
    files.sort();
    for path in &files {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .permissions()
            .mode();
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777)
            .large_file(true);
        w.start_file(rel.to_string_lossy(), options)
            .map_err(|e| format!("cannot zip {}: {e}", rel.display()))?;
        let mut src = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        std::io::copy(&mut src, &mut w)
            .map_err(|e| format!("cannot zip {}: {e}", rel.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    w.finish()
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok(files.len())
}

/// One file of a zip as text (at most `max` bytes), if the zip has it.
pub fn read_entry(zip_path: &Path, name: &str, max: u64) -> Result<Option<String>, String> {
    let file = std::fs::File::open(zip_path)
        .map_err(|e| format!("cannot open {}: {e}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a zip archive: {e}", zip_path.display()))?;
    let Ok(entry) = archive.by_name(name) else {
        return Ok(None);
    };
    let mut text = String::new();
    entry
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {name} in {}: {e}", zip_path.display()))?;
    if text.len() as u64 > max {
        return Err(format!("{name} is over {max} bytes"));
    }
    Ok(Some(text))
}

/// The environment variable names a package's directory is exposed in:
/// `LOTE_APP_<ID>` and `LOTE_APP_<ID>_<VERSION>`, upper-cased, with every
/// character that may not appear in a shell variable name as `_`.
pub fn env_names(id: &str, version: &str) -> (String, String) {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = format!("LOTE_APP_{}", clean(id));
    let versioned = format!("{base}_{}", clean(version));
    (base, versioned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        file
    }

    #[test]
    fn unpacking_refuses_escapes_and_counts_real_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let good = zip_of(&[("bin/tool", b"#!/bin/sh\n"), ("share/readme", b"hi")]);
        let summary = unpack(good.path(), &dir.path().join("good"), 1 << 20).unwrap();
        assert_eq!(summary.expanded_bytes, 12);
        assert_eq!(
            std::fs::read(dir.path().join("good/share/readme")).unwrap(),
            b"hi"
        );
        for (name, bad) in [
            ("slip", zip_of(&[("../../escape", b"x")])),
            ("deep-slip", zip_of(&[("a/../../escape", b"x")])),
            ("absolute", zip_of(&[("/tmp/escape", b"x")])),
        ] {
            let err = unpack(bad.path(), &dir.path().join(name), 1 << 20).unwrap_err();
            assert!(
                err.contains("outside") || err.contains(".."),
                "{name}: {err}"
            );
            assert!(!dir.path().join(name).exists(), "{name} left a directory");
            assert!(check_archive(std::fs::File::open(bad.path()).unwrap()).is_err());
        }
        // Past the byte limit: refused, and nothing half-unpacked is kept.
        let big = zip_of(&[("a", &[7u8; 5000]), ("b", &[7u8; 5000])]);
        let err = unpack(big.path(), &dir.path().join("big"), 6000).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        assert!(!dir.path().join("big").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".unpack-"))
            .collect();
        assert!(leftovers.is_empty());
        // A link inside an archive.
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(file.reopen().unwrap());
        w.add_symlink(
            "link",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.finish().unwrap();
        let err = unpack(file.path(), &dir.path().join("link"), 1 << 20).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(
            env_names("my-tool", "2.1.0"),
            ("LOTE_APP_MY_TOOL".into(), "LOTE_APP_MY_TOOL_2_1_0".into())
        );
    }
}
