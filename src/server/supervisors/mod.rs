//! The supervisors: the control plane's work that no single entity
//! decides. Each is an actix actor with a mailbox of typed messages; each
//! folds the log (a batch per message, from placement's feed) into a
//! picture of its own and acts through the entity actors, so a restart
//! rebuilds it from the log. They share no state: a supervisor that needs
//! placement's picture asks it with a message.
//!
//! - [`placement`]: owns [`scheduler`]'s picture, folds the log into it,
//!   runs placement rounds, hands each polling agent its work; [`explain`](crate::api::explain)
//!   words come from its picture.
//! - [`sagas`]: the pool, node and job supervisors (resizes, node removal
//!   and reboot, job terminate / delete / disable, wall-clock limits, job
//!   completion); [`provider`] starts local nodes' agents.
//! - [`autoscale`]: samples pools' load and evaluates their formulas.
//! - [`liveness`]: marks nodes whose agent went silent as lost.
//! - [`waits`]: records why groups of queued tasks wait.

pub mod autoscale;
pub mod liveness;
pub mod placement;
pub mod provider;
pub mod sagas;
pub mod scheduler;
pub mod schedules;
pub mod waits;

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::actors::Core;
use crate::types::{AccountName, PoolId};

/// What the supervisors need from the server's settings.
pub struct SupervisorSettings {
    pub nodes_dir: PathBuf,
    pub server_addr: String,
    /// Local agents pin it when the server takes no plaintext.
    pub tls_fingerprint: Option<String>,
    pub schedule_min_interval_secs: u64,
    pub server_secret: String,
    pub node_lost_after: Duration,
    pub autoscale: autoscale::AutoscaleSettings,
}

/// The running supervisors, by the addresses the request handlers send
/// their messages to.
pub struct Supervisors {
    pub placement: placement::PlacementHandle,
    pub sagas: Addr<sagas::SagaSupervisor>,
    pub autoscaler: Addr<autoscale::Autoscaler>,
    pub liveness: Addr<liveness::Liveness>,
    pub schedules: Addr<schedules::ScheduleSupervisor>,
    /// Where local nodes live (`--nodes-dir`).
    pub nodes_dir: PathBuf,
    pub autoscale: autoscale::AutoscaleSettings,
    /// Shortest recurrence a job schedule may ask for.
    pub schedule_min_interval_secs: u64,
    /// Longest an agent's poll is parked: its answer is the agent's cue to
    /// call again, and a call is its heartbeat, so a third of the time
    /// after which a silent node counts as lost.
    pub poll_wait_max: Duration,
}

impl Supervisors {
    /// Starts placement, subscribes every other supervisor to its feed
    /// (each gets a batch after the scheduler folded it), then starts the
    /// feed, so that none misses an event.
    pub fn start(core: &Core, settings: SupervisorSettings, stop: watch::Receiver<bool>) -> Self {
        let placement = placement::PlacementHandle::start(core.clone(), stop.clone());
        let (nodes_dir, autoscale) = (settings.nodes_dir.clone(), settings.autoscale);
        let sagas = sagas::SagaSupervisor::new(
            core.clone(),
            placement.clone(),
            sagas::Local {
                nodes_dir: settings.nodes_dir,
                server_addr: settings.server_addr,
                tls_fingerprint: settings.tls_fingerprint,
            },
            settings.server_secret,
        )
        .start();
        placement.subscribe(sagas.clone().recipient());
        let waits = waits::WaitRecorder::new(core.clone(), placement.clone(), stop.clone()).start();
        placement.subscribe(waits.recipient());
        let liveness = liveness::Liveness::new(
            core.clone(),
            placement.clone(),
            settings.node_lost_after,
            stop.clone(),
        )
        .start();
        placement.subscribe(liveness.clone().recipient());
        let autoscaler = autoscale::Autoscaler::new(
            core.clone(),
            placement.clone(),
            settings.autoscale,
            stop.clone(),
        )
        .start();
        placement.subscribe(autoscaler.clone().recipient());
        let schedules = schedules::ScheduleSupervisor::new(core.clone(), stop.clone()).start();
        placement.subscribe(schedules.clone().recipient());
        placement.start_feed(core.store().clone(), stop);
        Supervisors {
            placement,
            sagas,
            autoscaler,
            liveness,
            schedules,
            schedule_min_interval_secs: settings.schedule_min_interval_secs,
            poll_wait_max: poll_wait_max(settings.node_lost_after),
            nodes_dir,
            autoscale,
        }
    }
}

/// How long an agent's poll may be parked before it is answered empty.
/// The next poll is the node's heartbeat: two more such waits fit in the
/// lost-node timeout before a live node could be taken for lost.
pub fn poll_wait_max(node_lost_after: Duration) -> Duration {
    (node_lost_after / 3).min(Duration::from_millis(u64::from(
        crate::api::AGENT_POLL_WAIT_MS_MAX,
    )))
}

/// Runs `then` on the actor once `stop` turns true.
pub(crate) fn when_stopped<A, F>(ctx: &mut Context<A>, stop: &watch::Receiver<bool>, then: F)
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(&mut A, &mut Context<A>) + 'static,
{
    let mut stop = stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    ctx.spawn(actix::fut::wrap_future::<_, A>(stopped).map(move |_, act, ctx| then(act, ctx)));
}

/// Runs `tick` on the actor every `every` until `stop` turns true.
pub(crate) fn tick_until_stopped<A, F>(
    ctx: &mut Context<A>,
    every: Duration,
    stop: &watch::Receiver<bool>,
    tick: F,
) where
    A: Actor<Context = Context<A>>,
    F: FnMut(&mut A, &mut Context<A>) + 'static,
{
    let ticks = ctx.run_interval(every, tick);
    when_stopped(ctx, stop, move |_, ctx| {
        ctx.cancel_future(ticks);
    });
}

/// `ACCOUNT/POOL`, the key pools go by in placement's picture.
pub fn split_pool_key(key: &str) -> Option<(AccountName, PoolId)> {
    let (account, pool) = key.split_once('/')?;
    Some((AccountName::new(account).ok()?, PoolId::new(pool).ok()?))
}
