//! How `lote job wait` and `lote app job wait` ask the server to wait.

use lote::api::Request;
use lote::types::JobId;

/// One `WaitJob` of a wait begun at `started`: answered when the job has
/// no unfinished task, or within a second with `progress` (to redraw its
/// line), and never past the wait's own timeout.
pub(super) fn wait_request(
    id: &JobId,
    progress: bool,
    started: std::time::Instant,
    timeout_secs: Option<u64>,
) -> Request {
    let mut wait_ms = if progress {
        1000
    } else {
        lote::api::WAIT_JOB_MS_MAX
    };
    if let Some(t) = timeout_secs {
        let left = std::time::Duration::from_secs(t).saturating_sub(started.elapsed());
        wait_ms = wait_ms.min(left.as_millis().min(u128::from(u32::MAX)) as u32);
    }
    Request::WaitJob {
        job: id.clone(),
        wait_ms,
    }
}
