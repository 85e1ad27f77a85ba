//! Blob store and application package views, as lists and shows report
//! them.

use serde::{Deserialize, Serialize};

use crate::types::Timestamp;

/// A stored blob, as lists and shows report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub container: String,
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    pub uploaded_at: Timestamp,
}

/// One package with its versions, as `lote package list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageView {
    pub id: String,
    pub default_version: Option<String>,
    pub versions: Vec<PackageVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    pub version: String,
    pub size: u64,
    pub sha256: String,
    pub uploaded_at: Timestamp,
}
