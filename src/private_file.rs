//! Files only their owner may read: keys, secrets, node credentials.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file that could not be read or written, and which.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl FileError {
    pub fn new<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> FileError + 'a {
        move |source| FileError {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `text` to `path` with mode 0600 and syncs it. With `replace`
/// false an existing file is an error (never overwrite a key by accident).
pub fn write_owner_only(
    path: &Path,
    text: &str,
    what: &'static str,
    replace: bool,
) -> Result<(), FileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(FileError::new(what, path))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(FileError::new(what, path))
}
