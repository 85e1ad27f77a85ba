//! `lote package`: application packages (versioned zips unpacked on nodes).

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{from_transfer, Progress};
use lote::api::{Request, Response};
use lote::blob::transfer;
use lote::client::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum PackageCmd {
    /// Upload a zip as a version of an application package. The archive is
    /// checked first: entries that leave the package's directory, links,
    /// and archives that expand past 4 GiB are refused.
    ///
    /// Example:
    ///   lote package upload blender 4.2 ./blender-4.2.zip --default
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
    /// Make a version the package's default.
    SetDefault {
        id: String,
        #[arg(value_name = "VERSION")]
        package_version: String,
    },
    /// Delete one version of a package.
    Delete {
        id: String,
        #[arg(value_name = "VERSION")]
        package_version: String,
    },
}

pub async fn package(client: &Client, cmd: PackageCmd) -> Result<Response, ClientError> {
    match cmd {
        PackageCmd::Upload {
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
        PackageCmd::List => client.call(&Request::ListPackages).await,
        PackageCmd::SetDefault {
            id,
            package_version: version,
        } => {
            client
                .call(&Request::SetDefaultPackageVersion { id, version })
                .await
        }
        PackageCmd::Delete {
            id,
            package_version: version,
        } => {
            client
                .call(&Request::DeletePackageVersion { id, version })
                .await
        }
    }
}
