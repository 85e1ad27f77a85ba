//! The agent's heartbeat and machine figures. Any call is a heartbeat, and
//! the long poll is the call a working agent makes anyway: its figures
//! ride on it, so an idle node calls the server once per heartbeat period,
//! not once per purpose. Only while the poll loop is away (a start task
//! waited for, a reboot) does the usage report go as a call of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::agent::NodeUsage;
use crate::api::Request;
use crate::client::Client;

/// The period before registration says otherwise: the shortest the server
/// allows (a third of its shortest lost-node timeout, 2 s).
const PERIOD_BEFORE_REGISTRATION: Duration = Duration::from_millis(666);

struct Beat {
    period: Duration,
    /// When the poll loop last sent a poll; None before the first.
    polled: Option<Instant>,
    /// A sample waiting for the next poll.
    usage: Option<NodeUsage>,
}

static BEAT: Mutex<Beat> = Mutex::new(Beat {
    period: PERIOD_BEFORE_REGISTRATION,
    polled: None,
    usage: None,
});

fn beat() -> std::sync::MutexGuard<'static, Beat> {
    BEAT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server's heartbeat period, as registration gave it.
pub(super) fn set_period(ms: u32) {
    beat().period = Duration::from_millis(u64::from(ms.max(100)));
}

/// A poll is going out: it takes the sample waiting, if any.
pub(super) fn polling() -> Option<NodeUsage> {
    let mut b = beat();
    b.polled = Some(Instant::now());
    b.usage.take()
}

/// Samples the machine once per period: the sample waits for the next
/// poll when the poll loop is at work (it polled within the period), and
/// goes at once as a call of its own when it is not.
pub(super) fn start(client: std::sync::Arc<Client>, root: std::path::PathBuf) {
    tokio::spawn(async move {
        let mut probe = super::usage::UsageProbe::default();
        loop {
            let period = beat().period;
            tokio::time::sleep(period).await;
            let usage = probe.sample(&root);
            let alone = {
                let mut b = beat();
                let polling = b.polled.is_some_and(|at| at.elapsed() < b.period);
                if polling {
                    b.usage = Some(usage);
                }
                !polling
            };
            if alone {
                if let Err(e) = client.call(&Request::AgentUsage { usage }).await {
                    tracing::debug!(error = %e, "usage report not sent");
                }
            }
        }
    });
}
