//! `lote node`: a pool's nodes and their files.

use std::path::PathBuf;

use clap::Subcommand;

use super::files::{list_files, read_file, FileTarget};
use super::render::render;
use super::Rendered;
use lote::api::Request;
use lote::client::{Client, ClientError};
use lote::domain::pool::Deallocation;
use lote::types::{NodeId, PoolId};

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// A pool's nodes and their states.
    List { pool: PoolId },
    /// One node in full, as JSON.
    Show { pool: PoolId, node: NodeId },
    /// Place no new tasks on the node; running ones finish.
    Disable { pool: PoolId, node: NodeId },
    /// Place tasks on the node again.
    Enable { pool: PoolId, node: NodeId },
    /// Restart the node's agent: its tasks are requeued (no retry used),
    /// the pool's start task runs again, then the node takes work.
    Reboot { pool: PoolId, node: NodeId },
    /// Reboot the node with its directories wiped: task and start task
    /// directories, shared/, unpacked packages and the download cache.
    /// It registers again as a fresh node of its pool (same id and
    /// credential) and runs the start task.
    Reimage { pool: PoolId, node: NodeId },
    /// Take the node out of its pool; it loses its files, name and
    /// address. A local node's agent is stopped.
    ///
    /// Examples:
    ///   lote node remove render node-3                      # requeue its tasks
    ///   lote node remove render node-3 --deallocation taskcompletion
    #[command(verbatim_doc_comment)]
    Remove {
        pool: PoolId,
        node: NodeId,
        /// requeue: kill its tasks and queue them again (no retry used);
        /// terminate: kill and fail them; taskcompletion: give it no new
        /// work and remove it when its tasks end.
        #[arg(long, value_enum, default_value = "requeue")]
        deallocation: Deallocation,
    },
    /// List a node's files: shared/, starttask/, tasks/, apps/.
    ///
    /// Example: lote node files render node-1 starttask --recursive
    #[command(verbatim_doc_comment)]
    Files {
        pool: PoolId,
        node: NodeId,
        #[arg(default_value = "")]
        path: String,
        #[arg(long, short)]
        recursive: bool,
    },
    /// Print one of a node's files (or save it with --dest).
    ///
    /// Example: lote node file render node-1 starttask/stdout.txt
    #[command(verbatim_doc_comment)]
    File {
        pool: PoolId,
        node: NodeId,
        path: String,
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

/// Runs one `lote node` command.
pub(super) async fn run(cmd: NodeCmd, client: &Client) -> Result<Rendered, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    let response = match cmd {
        NodeCmd::List { pool } => call(Request::ListNodes { pool }).await?,
        NodeCmd::Show { pool, node } => call(Request::ShowNode { pool, node }).await?,
        NodeCmd::Disable { pool, node } => call(Request::DisableNode { pool, node }).await?,
        NodeCmd::Enable { pool, node } => call(Request::EnableNode { pool, node }).await?,
        NodeCmd::Reboot { pool, node } => call(Request::RebootNode { pool, node }).await?,
        NodeCmd::Reimage { pool, node } => call(Request::ReimageNode { pool, node }).await?,
        NodeCmd::Remove {
            pool,
            node,
            deallocation,
        } => {
            call(Request::RemoveNode {
                pool,
                node,
                deallocation,
            })
            .await?
        }
        NodeCmd::Files {
            pool,
            node,
            path,
            recursive,
        } => {
            let target = FileTarget::Node { pool, node };
            list_files(client, target, path, recursive).await?
        }
        NodeCmd::File {
            pool,
            node,
            path,
            dest,
        } => {
            let target = FileTarget::Node { pool, node };
            let done = read_file(client, target, path, dest, false).await?;
            return Ok(Some(done));
        }
    };
    Ok(Some(render(response)))
}
