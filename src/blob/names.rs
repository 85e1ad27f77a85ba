//! What container and blob names may be. Blob names become paths when
//! downloaded or fetched onto a node, so they are checked like paths.

use super::BlobError;

/// Longest blob name, in bytes (Azure's limit too).
pub const BLOB_NAME_BYTES_MAX: usize = 1024;

/// Containers whose names start with this belong to lote itself
/// (application packages); accounts cannot write them directly.
pub const RESERVED_CONTAINER_PREFIX: &str = "lote-";

/// App runs' input files, each named by its content's SHA-256 (an upload
/// under another name is refused).
pub const APP_INPUTS_CONTAINER: &str = "lote-app-inputs";
/// What app runs' tasks leave.
pub const APP_JOBS_CONTAINER: &str = "lote-app-jobs";

/// Whether accounts (and their tasks) are kept from writing `container`:
/// lote's prefix, except the app layer's two containers, which the
/// account's own uploads and tasks fill.
pub fn reserved_for_lote(container: &str) -> bool {
    container.starts_with(RESERVED_CONTAINER_PREFIX)
        && container != APP_INPUTS_CONTAINER
        && container != APP_JOBS_CONTAINER
}

/// 3 to 63 characters of lower-case letters, digits and single dashes,
/// starting and ending with a letter or digit (Azure's rule).
pub fn validate_container(name: &str) -> Result<(), BlobError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(BlobError::Invalid(format!(
            "container name {name:?} must be 3-63 lower-case letters, digits and single dashes, starting and ending with a letter or digit (e.g. inputs, render-2026)"
        )))
    }
}

/// A `/`-separated relative name with no empty, `.` or `..` part.
pub fn validate_blob_name(name: &str) -> Result<(), BlobError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > BLOB_NAME_BYTES_MAX {
        Some("is longer than 1024 bytes")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.starts_with('/') {
        Some("starts with '/'")
    } else if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("has an empty, '.' or '..' part")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(BlobError::Invalid(format!(
            "blob name {:?} {why}; names are relative paths such as images/frame-0001.png",
            truncate(name)
        ))),
    }
}

/// A prefix is a blob name's beginning: empty, or a name that may end in '/'.
pub fn validate_prefix(prefix: &str) -> Result<(), BlobError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_blob_name(prefix.strip_suffix('/').unwrap_or(prefix))
}

fn truncate(name: &str) -> String {
    name.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["inputs", "a1b", "render-2026", &"x".repeat(63)] {
            assert!(validate_container(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Inputs",
            "-ab",
            "ab-",
            "a--b",
            "a_b",
            &"x".repeat(64),
            "a/b",
        ] {
            assert!(validate_container(bad).is_err(), "{bad}");
        }
        for good in ["a", "images/frame-0001.png", "a b/c.d", "..a/b.."] {
            assert!(validate_blob_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a//b", "a/", "./a", "a/../b", "..", "a\0b"] {
            assert!(validate_blob_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_blob_name(&"a".repeat(1025)).is_err());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("images/").is_ok());
        assert!(validate_prefix("images/fr").is_ok());
        assert!(validate_prefix("../").is_err());
    }
}
