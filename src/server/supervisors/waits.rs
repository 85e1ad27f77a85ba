//! Records why queued tasks wait, as `JobTasksWaiting` events on their
//! job, only when the reasons a group of tasks (one job, one slot need)
//! waits for change: not once per scheduling round. The last recorded
//! sets are folded from the log, so a restart records nothing twice.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;

use super::placement::{Placement, Reactor};
use crate::actors::Core;
use crate::domain::decode_event;
use crate::domain::job::{Job, JobCommand, JobEvent, WaitReason};
use crate::domain::Ctx;
use crate::store::{Envelope, StreamId, StreamKind};

/// How often the groups are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Group = (StreamId, u32);

pub struct WaitRecorder {
    core: Core,
    placement: Rc<Placement>,
    /// What was last recorded per group (absent: not waiting).
    last: RefCell<HashMap<Group, Vec<WaitReason>>>,
    busy: Cell<bool>,
    started: Cell<bool>,
    stop: watch::Receiver<bool>,
}

impl WaitRecorder {
    pub fn new(core: Core, placement: Rc<Placement>, stop: watch::Receiver<bool>) -> Self {
        WaitRecorder {
            core,
            placement,
            last: RefCell::default(),
            busy: Cell::new(false),
            started: Cell::new(false),
            stop,
        }
    }

    fn fold(&self, envelope: &Envelope) {
        if envelope.stream.kind() != StreamKind::Job {
            return;
        }
        match envelope.event_type.as_str() {
            "JobTasksWaiting" => {
                if let Ok(JobEvent::JobTasksWaiting { slots, reasons, .. }) =
                    decode_event::<JobEvent>(StreamKind::Job, envelope)
                {
                    let group = (envelope.stream.clone(), slots);
                    if reasons.is_empty() {
                        self.last.borrow_mut().remove(&group);
                    } else {
                        self.last.borrow_mut().insert(group, reasons);
                    }
                }
            }
            "JobCompleted" | "JobDeleted" => {
                self.last
                    .borrow_mut()
                    .retain(|(job, _), _| *job != envelope.stream);
            }
            _ => {}
        }
    }

    /// The groups whose reasons differ from what was last recorded.
    fn changes(&self) -> Vec<(Group, u64, Vec<WaitReason>)> {
        let now: Vec<(Group, u64, Vec<WaitReason>)> = self
            .placement
            .scheduler()
            .wait_groups()
            .into_iter()
            .map(|(job, g)| {
                let shared = g.reasons.into_iter().filter(WaitReason::shared).collect();
                ((job, g.slots), g.tasks, shared)
            })
            .collect();
        let last = self.last.borrow();
        let mut out: Vec<_> = now
            .iter()
            .filter(|(group, _, reasons)| {
                last.get(group)
                    .map_or(!reasons.is_empty(), |l| l != reasons)
            })
            .cloned()
            .collect();
        // Groups that no longer wait.
        for group in last.keys() {
            if !now.iter().any(|(g, _, _)| g == group) {
                out.push((group.clone(), 0, Vec::new()));
            }
        }
        out
    }

    async fn record(&self) {
        for ((job, slots), tasks, reasons) in self.changes() {
            let ctx = Ctx::system(self.core.clock().as_ref(), "placement");
            let command = JobCommand::RecordWaiting {
                slots,
                tasks,
                reasons: reasons.clone(),
            };
            match self.core.execute::<Job>(&job, command, ctx).await {
                Ok(_) => {}
                Err(e) => {
                    // Deleted or gone: nothing waits there any more.
                    tracing::debug!(%job, error = %e, "wait reasons not recorded");
                    self.last.borrow_mut().remove(&(job.clone(), slots));
                    continue;
                }
            }
            if reasons.is_empty() {
                self.last.borrow_mut().remove(&(job, slots));
            } else {
                self.last.borrow_mut().insert((job, slots), reasons);
            }
        }
    }
}

impl Reactor for WaitRecorder {
    fn on_ready(self: Rc<Self>) {
        if self.started.replace(true) {
            return;
        }
        let mut stop = self.stop.clone();
        tokio::task::spawn_local(async move {
            let mut ticker = tokio::time::interval(CHECK_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if !self.busy.replace(true) {
                    self.record().await;
                    self.busy.set(false);
                }
            }
        });
    }
    fn on_event(self: Rc<Self>, envelope: &Envelope) {
        self.fold(envelope);
    }
    fn on_history(self: Rc<Self>, envelope: &Envelope) {
        self.fold(envelope);
    }
}
