//! The supervisors: the control plane's work that no single entity
//! decides. Each folds the log into a picture of its own and acts through
//! the entity actors, so a restart rebuilds it from the log.
//!
//! - [`placement`]: feeds [`scheduler`] from the log, runs placement
//!   rounds, hands each polling agent its work; [`explain`](crate::api::explain)
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
pub mod waits;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;

use crate::actors::Core;
use crate::types::{AccountName, PoolId};

/// What the supervisors need from the server's settings.
pub struct SupervisorSettings {
    pub nodes_dir: PathBuf,
    pub server_addr: String,
    pub server_secret: String,
    pub node_lost_after: Duration,
    pub autoscale: autoscale::AutoscaleSettings,
}

/// The running supervisors the request handlers talk to.
pub struct Supervisors {
    pub placement: Rc<placement::Placement>,
    pub sagas: Rc<sagas::Sagas>,
    pub autoscaler: Rc<autoscale::Autoscaler>,
}

impl Supervisors {
    /// Starts placement and hangs every other supervisor on its feed, in
    /// the order they must see each event (after the scheduler folded it).
    pub fn start(core: &Core, settings: SupervisorSettings, stop: watch::Receiver<bool>) -> Self {
        let placement = placement::Placement::start(core.clone(), stop.clone());
        let sagas = Rc::new(sagas::Sagas::new(
            core.clone(),
            placement.clone(),
            sagas::Local {
                nodes_dir: settings.nodes_dir,
                server_addr: settings.server_addr,
            },
            settings.server_secret,
        ));
        placement.add_reactor(sagas.clone());
        placement.add_reactor(Rc::new(waits::WaitRecorder::new(
            core.clone(),
            placement.clone(),
            stop.clone(),
        )));
        placement.add_reactor(Rc::new(liveness::Liveness::new(
            core.clone(),
            placement.clone(),
            settings.node_lost_after,
            stop.clone(),
        )));
        let autoscaler = Rc::new(autoscale::Autoscaler::new(
            core.clone(),
            placement.clone(),
            settings.autoscale,
            stop,
        ));
        placement.add_reactor(autoscaler.clone());
        Supervisors {
            placement,
            sagas,
            autoscaler,
        }
    }
}

/// `ACCOUNT/POOL`, the key pools go by in placement's picture.
pub fn split_pool_key(key: &str) -> Option<(AccountName, PoolId)> {
    let (account, pool) = key.split_once('/')?;
    Some((AccountName::new(account).ok()?, PoolId::new(pool).ok()?))
}
