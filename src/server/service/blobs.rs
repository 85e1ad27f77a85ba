//! The blob store and application packages, for an account (and the
//! blob reads and writes of its nodes).

use super::{internal, misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::types::AccountName;

impl Service {
    /// A package request of an account.
    pub(super) async fn packages(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let _ctx = || call.ctx(self);
        match request {
            Request::ListPackages => self.blobs.packages(account).await,
            Request::BeginPackageUpload { id, version } => {
                self.blobs
                    .begin_package(account, id.clone(), version.clone(), self.clock.now())
                    .await
            }
            Request::SetDefaultPackageVersion { id, version } => {
                self.blobs
                    .set_default(account, id.clone(), version.clone(), self.clock.now())
                    .await
            }
            Request::DeletePackageVersion { id, version } => {
                self.blobs
                    .delete_version(account, id.clone(), version.clone())
                    .await
            }
            other => Err(misrouted(other)),
        }
    }

    /// The blob store's requests, for an account or a node of it.
    pub(super) async fn blob_request(
        &self,
        account: &AccountName,
        request: Request,
    ) -> Result<Response, ApiError> {
        let blobs = &self.blobs;
        match request {
            Request::ListContainers => blobs.containers(account).await,
            Request::ListBlobs {
                container,
                prefix,
                after,
                limit,
            } => blobs.list(account, container, prefix, after, limit).await,
            Request::ShowBlob { container, name } => Ok(Response::Blob(
                blobs.stat(account, &container, &name).await?,
            )),
            Request::DeleteBlob { container, name } => blobs.delete(account, container, name).await,
            Request::BeginUpload { container, name } => {
                blobs
                    .begin(account, container, name, self.clock.now())
                    .await
            }
            Request::UploadChunk {
                upload,
                offset,
                data,
            } => {
                self.metrics.blob_bytes(true, data.len() as u64);
                blobs.chunk(account, upload, offset, data).await
            }
            Request::FinishUpload {
                upload,
                size,
                sha256,
            } => blobs.finish(account, upload, size, sha256).await,
            Request::AbortUpload { upload } => blobs.abort(account, upload),
            Request::ReadBlob {
                container,
                name,
                sha256,
                offset,
                max_bytes,
            } => {
                let read = blobs
                    .read(account, container, name, sha256, offset, max_bytes)
                    .await;
                if let Ok(Response::BlobData { data }) = &read {
                    self.metrics.blob_bytes(false, data.len() as u64);
                }
                read
            }
            Request::ResolvePackage { id, version } => {
                let (version, blob) = blobs.resolve(account, id.clone(), version).await?;
                Ok(Response::PackageResolved { id, version, blob })
            }
            other => Err(internal(format!("{} is not a blob request", other.name()))),
        }
    }
}
