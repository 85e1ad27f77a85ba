//! Records why queued tasks wait, as `JobTasksWaiting` events on their
//! job, only when the reasons a group of tasks (one job, one slot need)
//! waits for change: not once per scheduling round. The last recorded
//! sets are folded from the log, so a restart records nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::placement::{Feed, PlacementHandle};
use crate::actors::Core;
use crate::api::explain::WaitGroup;
use crate::domain::decode_event;
use crate::domain::job::{Job, JobCommand, JobEvent, WaitReason};
use crate::domain::Ctx;
use crate::store::{Envelope, StreamId, StreamKind};

/// How often the groups are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Group = (StreamId, u32);

/// One group's reasons to record: its tasks, and the reasons (none: it
/// no longer waits).
type Change = (Group, u64, Vec<WaitReason>);

pub struct WaitRecorder {
    core: Core,
    placement: PlacementHandle,
    /// What was last recorded per group (absent: not waiting).
    last: HashMap<Group, Vec<WaitReason>>,
    /// A check or its recording is under way.
    busy: bool,
    started: bool,
    stop: watch::Receiver<bool>,
}

/// What a check recorded: each group's reasons as now recorded (none: it
/// no longer waits, or its job is gone).
struct Recorded(Vec<(Group, Vec<WaitReason>)>);

impl Message for Recorded {
    type Result = ();
}

impl WaitRecorder {
    pub fn new(core: Core, placement: PlacementHandle, stop: watch::Receiver<bool>) -> Self {
        WaitRecorder {
            core,
            placement,
            last: HashMap::new(),
            busy: false,
            started: false,
            stop,
        }
    }

    fn fold(&mut self, envelope: &Envelope) {
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
                        self.last.remove(&group);
                    } else {
                        self.last.insert(group, reasons);
                    }
                }
            }
            "JobCompleted" | "JobDeleted" => {
                self.last.retain(|(job, _), _| *job != envelope.stream);
            }
            _ => {}
        }
    }

    /// The groups whose reasons differ from what was last recorded.
    fn changes(&self, groups: Vec<(StreamId, WaitGroup)>) -> Vec<Change> {
        let now: Vec<Change> = groups
            .into_iter()
            .map(|(job, g)| {
                let shared = g.reasons.into_iter().filter(WaitReason::shared).collect();
                ((job, g.slots), g.tasks, shared)
            })
            .collect();
        let mut out: Vec<_> = now
            .iter()
            .filter(|(group, _, reasons)| {
                self.last
                    .get(group)
                    .map_or(!reasons.is_empty(), |l| l != reasons)
            })
            .cloned()
            .collect();
        // Groups that no longer wait.
        for group in self.last.keys() {
            if !now.iter().any(|(g, _, _)| g == group) {
                out.push((group.clone(), 0, Vec::new()));
            }
        }
        out
    }

    /// Asks placement for the groups, then records what changed.
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let placement = self.placement.clone();
        let groups = async move { placement.inspect(|s| s.wait_groups()).await };
        ctx.spawn(groups.into_actor(self).map(|groups, act, ctx| {
            let changes = match groups {
                Ok(groups) => act.changes(groups),
                Err(_) => Vec::new(),
            };
            if changes.is_empty() {
                act.busy = false;
                return;
            }
            tokio::task::spawn_local(record(act.core.clone(), changes, ctx.address()));
        }));
    }
}

/// Records each change on its job, then tells the recorder what stands.
async fn record(core: Core, changes: Vec<Change>, recorder: Addr<WaitRecorder>) {
    let mut recorded = Vec::with_capacity(changes.len());
    for ((job, slots), tasks, reasons) in changes {
        let ctx = Ctx::system(core.clock().as_ref(), "placement");
        let command = JobCommand::RecordWaiting {
            slots,
            tasks,
            reasons: reasons.clone(),
        };
        match core.execute::<Job>(&job, command, ctx).await {
            Ok(_) => recorded.push(((job, slots), reasons)),
            Err(e) => {
                // Deleted or gone: nothing waits there any more.
                tracing::debug!(%job, error = %e, "wait reasons not recorded");
                recorded.push(((job, slots), Vec::new()));
            }
        }
    }
    recorder.do_send(Recorded(recorded));
}

impl Actor for WaitRecorder {
    type Context = Context<Self>;
}

impl Handler<Feed> for WaitRecorder {
    type Result = ();

    fn handle(&mut self, feed: Feed, ctx: &mut Context<Self>) {
        for envelope in feed.events() {
            self.fold(envelope);
        }
        if feed.starts(&mut self.started) {
            let stop = self.stop.clone();
            super::tick_until_stopped(ctx, CHECK_EVERY, &stop, |act: &mut Self, ctx| {
                act.check(ctx)
            });
        }
    }
}

impl Handler<Recorded> for WaitRecorder {
    type Result = ();

    fn handle(&mut self, Recorded(recorded): Recorded, _: &mut Context<Self>) {
        for (group, reasons) in recorded {
            if reasons.is_empty() {
                self.last.remove(&group);
            } else {
                self.last.insert(group, reasons);
            }
        }
        self.busy = false;
    }
}
