//! Compute: placing tasks on nodes, and the node agent that runs them.
//!
//! - [`scheduler`]: the placement picture folded from the log, and rounds.
//! - [`agent`]: `lote agent`, the process on each node that runs tasks.
//! - [`reports`]: an agent's completion reports, gathered into calls.
//! - [`staging`]: an attempt's resource files, output files and packages.
//! - [`files`]: the files API on a node, confined to its directories.
//! - `launch`: a task's process started with `posix_spawn`.

pub mod agent;
pub mod explain;
pub mod files;
mod launch;
mod proc_tree;
mod reports;
mod retention;
pub mod scheduler;
pub mod staging;
pub mod usage;
