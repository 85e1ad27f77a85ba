//! Autoscale results as the API returns them: an evaluation with its
//! trace, and the steps of a replay over a pool's recorded past.

use serde::{Deserialize, Serialize};

use crate::domain::autoscale::TraceEntry;
use crate::domain::pool::AutoscaleRun;
use crate::types::Timestamp;

/// One evaluation as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub run: AutoscaleRun,
    pub stopped: bool,
    pub trace: Vec<TraceEntry>,
    pub trace_dropped: usize,
}

/// One step of a replay over history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayStep {
    pub at: Timestamp,
    /// What the formula would have set (`None`: no change, or an error).
    pub would_target: Option<u32>,
    pub results: String,
    pub error: Option<String>,
    /// The pool's real target at that moment.
    pub actual_target: u32,
    /// Nodes the pool really had (the sample nearest before).
    pub actual_nodes: f64,
    /// Samples the formula could see.
    pub samples: usize,
}
