//! Compute: placing tasks on nodes, and the node agent that runs them.
//!
//! - [`scheduler`]: the placement picture folded from the log, and rounds.
//! - [`agent`]: `lote agent`, the process on each node that runs tasks.

pub mod agent;
pub mod explain;
mod proc_tree;
mod retention;
pub mod scheduler;
pub mod usage;
