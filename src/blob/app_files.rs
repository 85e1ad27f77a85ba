//! The client side of apps: publishing a version (its definition read and
//! checked before anything is sent, its files uploaded as the package of
//! the same name and version, then the version published) and a run's
//! input files (sent once per content: a file the store holds under its
//! SHA-256 is not sent again). The CLI and the demo both use these.

use std::path::{Path, PathBuf};

use super::packages;
use super::transfer::{self, TransferError};
use crate::api::{Request, Response};
use crate::client::Client;
use crate::domain::app::definition::{self, AppDefinition, DEFINITION_BYTES_MAX};
use crate::domain::app::submit::AppInput;
use crate::domain::app::INPUTS_CONTAINER;

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Nothing was sent: the definition or the files are wrong.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Transfer(#[from] TransferError),
}

/// The definition's text and the zip to upload: a directory is zipped
/// into `scratch` (the caller removes it), a zip is sent as is.
fn package_of(path: &Path, scratch: &Path) -> Result<(String, PathBuf), PublishError> {
    let refused = PublishError::Refused;
    if path.is_dir() {
        let toml = path.join("app.toml");
        let text = std::fs::read_to_string(&toml)
            .map_err(|e| refused(format!("cannot read {}: {e}", toml.display())))?;
        packages::zip_dir(path, scratch).map_err(refused)?;
        return Ok((text, scratch.to_path_buf()));
    }
    let text = packages::read_entry(path, "app.toml", DEFINITION_BYTES_MAX as u64)
        .map_err(refused)?
        .ok_or_else(|| {
            refused(format!(
                "{} has no app.toml at its top; an app's definition goes beside its program",
                path.display()
            ))
        })?;
    Ok((text, path.to_path_buf()))
}

/// Publishes the app in `path` (a directory or a zip with app.toml at its
/// top); `progress` sees the package's upload. Returns its definition.
pub async fn publish(
    client: &Client,
    path: &Path,
    make_default: bool,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<AppDefinition, PublishError> {
    let scratch = std::env::temp_dir().join(format!(
        "lote-app-{}.zip",
        crate::clock::new_uuid().simple()
    ));
    let result = match package_of(path, &scratch) {
        Ok((text, zip)) => publish_zip(client, &text, &zip, make_default, progress).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&scratch);
    result
}

async fn publish_zip(
    client: &Client,
    text: &str,
    zip: &Path,
    make_default: bool,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<AppDefinition, PublishError> {
    // Checked here first, so a bad definition costs no upload; the server
    // checks again.
    let def = definition::parse(text)
        .map_err(|p| PublishError::Refused(definition::problems_text(&p)))?;
    // A published version never changes: its package is not replaced.
    if let Ok(Response::App(app)) = client
        .call(&Request::ShowApp {
            app: def.name.clone(),
        })
        .await
    {
        if app.state.resolve(Some(&def.version)).is_ok() {
            return Err(PublishError::Refused(format!(
                "{} {} is published already; a version never changes, so raise `version` in app.toml",
                def.name, def.version
            )));
        }
    }
    transfer::upload_file(
        client,
        Request::BeginPackageUpload {
            id: def.name.clone(),
            version: def.version.clone(),
        },
        zip,
        progress,
    )
    .await?;
    client
        .call(&Request::PublishApp {
            definition: text.to_string(),
            make_default,
        })
        .await
        .map_err(TransferError::from)?;
    if make_default {
        client
            .call(&Request::SetDefaultPackageVersion {
                id: def.name.clone(),
                version: def.version.clone(),
            })
            .await
            .map_err(TransferError::from)?;
    }
    Ok(def)
}

/// One input of a run, uploaded unless the store (or this run, `so_far`)
/// holds its content already; `upload` sends it (with the caller's
/// progress display). Returns the input and whether it was sent.
pub async fn input<F, Fut>(
    client: &Client,
    path: &Path,
    so_far: &[AppInput],
    upload: F,
) -> Result<(AppInput, bool), TransferError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), TransferError>>,
{
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| TransferError::Protocol(format!("{} names no file", path.display())))?;
    let (_, sha) = transfer::file_sha256(path).await?;
    let stored = match transfer::stat(client, INPUTS_CONTAINER, &sha).await {
        Ok(meta) => meta.sha256 == sha,
        Err(_) => false,
    };
    let sent = !stored && !so_far.iter().any(|i| i.sha256 == sha);
    if sent {
        upload(sha.clone()).await?;
    }
    Ok((AppInput { name, sha256: sha }, sent))
}
