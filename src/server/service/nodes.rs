//! A pool's nodes: list, show, scheduling on and off, reboot, removal,
//! and the files of a node's own directory (read by its agent).

use super::{misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::domain::node::{Node, NodeCommand};
use crate::domain::pool::{Pool, PoolCommand};
use crate::domain::{Rejection, RejectionCode};
use crate::store::StreamId;
use crate::types::{AccountName, NodeId, PoolId};

/// How long a file operation waits for the node's agent to answer.
const FILE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Service {
    /// A node request of an account.
    pub(super) async fn nodes(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        match request {
            Request::ListNodes { pool } => {
                self.show::<Pool>(&call.pool_stream(pool), pool.as_str())
                    .await?;
                Ok(Response::Nodes(
                    self.list::<Node>(&format!("node/{account}/{pool}/"))?,
                ))
            }
            Request::ShowNode { pool, node } => Ok(Response::Node(
                self.show::<Node>(&StreamId::node(account, pool, node), node.as_str())
                    .await?,
            )),
            Request::DisableNode { pool, node }
            | Request::EnableNode { pool, node }
            | Request::RebootNode { pool, node }
            | Request::ReimageNode { pool, node } => {
                let command = match request {
                    Request::DisableNode { .. } => NodeCommand::DisableScheduling,
                    Request::EnableNode { .. } => NodeCommand::EnableScheduling,
                    Request::ReimageNode { .. } => NodeCommand::Reimage,
                    _ => NodeCommand::Reboot,
                };
                self.exec::<Node>(StreamId::node(account, pool, node), command, ctx())
                    .await
            }
            Request::RemoveNode {
                pool,
                node,
                deallocation,
            } => {
                let removed: Result<Response, ApiError> = self
                    .exec::<Node>(
                        StreamId::node(account, pool, node),
                        NodeCommand::RemoveNode {
                            deallocation: *deallocation,
                        },
                        ctx(),
                    )
                    .await;
                let removed = removed?;
                // As in Azure Batch, removing a node lowers the pool's
                // target, so the pool supervisor does not replace it. A
                // pool under autoscale keeps its formula's target.
                let pool_state = self
                    .show::<Pool>(&call.pool_stream(pool), pool.as_str())
                    .await?;
                if pool_state.state.autoscale.is_none() && pool_state.state.target_nodes > 0 {
                    let resize = PoolCommand::ResizePool {
                        target_nodes: pool_state.state.target_nodes - 1,
                        deallocation: *deallocation,
                    };
                    if let Err(e) = self
                        .core
                        .execute::<Pool>(&call.pool_stream(pool), resize, ctx())
                        .await
                    {
                        tracing::warn!(%pool, error = %e, "pool target not lowered after a node removal");
                    }
                }
                Ok(removed)
            }
            Request::ListNodeFiles {
                pool,
                node,
                path,
                recursive,
            } => {
                let op = crate::api::FileOp::List {
                    recursive: *recursive,
                };
                self.node_file(account, pool, node, path, op).await
            }
            Request::ReadNodeFile {
                pool,
                node,
                path,
                offset,
                max_bytes,
            } => {
                let op = crate::api::FileOp::Read {
                    offset: *offset,
                    max_bytes: *max_bytes,
                };
                self.node_file(account, pool, node, path, op).await
            }
            other => Err(misrouted(other)),
        }
    }

    /// A file operation on a node's own directory.
    pub(super) async fn node_file(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        path: &str,
        op: crate::api::FileOp,
    ) -> Result<Response, ApiError> {
        self.show::<Pool>(&StreamId::pool(account, pool), pool.as_str())
            .await?;
        let answer = self
            .ask_agent(
                account,
                pool,
                node,
                crate::api::FileRoot::Node,
                path,
                op,
                || format!("pool {pool} has no node {node} (lote node list {pool})"),
            )
            .await?;
        Ok(Response::Files {
            node: node.clone(),
            answer,
            completed: false,
        })
    }

    /// Hands a file operation to a node's agent (waking its long poll) and
    /// waits for the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ask_agent(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        root: crate::api::FileRoot,
        path: &str,
        op: crate::api::FileOp,
        gone: impl FnOnce() -> String,
    ) -> Result<crate::api::FileAnswer, ApiError> {
        if path.len() > 4096 {
            return Err(Rejection::invalid("a file path is at most 4096 bytes").into());
        }
        let pool_key: crate::types::SharedStr = format!("{account}/{pool}").into();
        let id = node.clone();
        let known = self
            .supervisors
            .placement
            .inspect(move |s| s.node(&pool_key, &id).is_some())
            .await?;
        if !known {
            return Err(ApiError::rejected(RejectionCode::NodeNotFound, gone()));
        }
        let op = match op {
            crate::api::FileOp::Read { offset, max_bytes } => crate::api::FileOp::Read {
                offset,
                max_bytes: max_bytes.clamp(1, crate::api::OUTPUT_CHUNK_MAX),
            },
            list => list,
        };
        let read = crate::api::FileRead {
            read: 0,
            root,
            path: path.to_string(),
            op,
        };
        self.supervisors
            .placement
            .read_output(account, pool, node, read, FILE_ANSWER_WAIT)
            .await
            .map_err(|why| match why {
                crate::server::supervisors::placement::ReadFailure::Agent(why) => {
                    ApiError::rejected(RejectionCode::FileNotFound, why)
                }
                crate::server::supervisors::placement::ReadFailure::Unreachable(why) => {
                    ApiError::rejected(RejectionCode::NodeStateConflict, why)
                }
            })
    }
}
