//! Bookkeeping that keeps the supervisors from repeating work: each job's
//! unfinished tasks (so its completion is asked about once, when the last
//! ends), and coalesced runs (a burst of asks makes one more run, never
//! none).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::domain::decode_event;
use crate::domain::job::{JobEvent, OnTaskFailure};
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::TaskId;

/// A job as [`Sagas`] follows it, to know when to ask whether it is due
/// for completion (the job's actor decides, as it always has).
#[derive(Default)]
struct JobCount {
    /// Tasks active or running.
    unfinished: u64,
    /// Tasks ever added.
    added: u64,
    /// Its spec says to complete it when all its tasks have.
    completes_when_done: bool,
    /// What its spec says a failed task does to it.
    on_failure: OnTaskFailure,
    terminating: bool,
}

impl JobCount {
    fn may_be_due(&self) -> bool {
        self.unfinished == 0 && (self.terminating || (self.completes_when_done && self.added > 0))
    }
}

/// Every job neither completed nor deleted, followed from the log.
#[derive(Default)]
pub(super) struct JobCounts(
    RefCell<HashMap<StreamId, JobCount>>,
    /// Tasks that failed in jobs that terminate on a task's failure, not
    /// yet acted on.
    RefCell<Vec<(StreamId, TaskId, OnTaskFailure)>>,
);

impl JobCounts {
    /// Folds a job event; true when it may have made the job due for
    /// completion: its last unfinished task ended (or it was enabled with
    /// none left) and it is terminating or completes when its tasks do. The job's actor is asked only then, not at every
    /// finished task (which would read back two count events per task).
    pub(super) fn fold(&self, envelope: &Envelope) -> bool {
        use crate::domain::task::TaskBucket as B;
        if envelope.stream.kind() != StreamKind::Job {
            return false;
        }
        let mut counts = self.0.borrow_mut();
        let event = envelope.event_type.as_str();
        if event == "JobCreated" {
            let Ok(JobEvent::JobCreated { spec, .. }) =
                decode_event::<JobEvent>(StreamKind::Job, envelope)
            else {
                return false;
            };
            let count = JobCount {
                completes_when_done: spec.on_all_tasks_complete
                    == crate::domain::job::OnAllTasksComplete::TerminateJob,
                on_failure: spec.on_task_failure,
                ..JobCount::default()
            };
            counts.insert(envelope.stream.clone(), count);
            return false;
        }
        if event == "JobDisabled" {
            // A failure before the job was disabled has been acted on (or
            // made moot): a restart must not disable it again.
            self.1
                .borrow_mut()
                .retain(|(job, _, _)| job != &envelope.stream);
        }
        if matches!(event, "JobCompleted" | "JobDeleted") {
            counts.remove(&envelope.stream);
            return false;
        }
        let Some(count) = counts.get_mut(&envelope.stream) else {
            return false;
        };
        match event {
            "JobTaskAdded" => {
                count.unfinished += 1;
                count.added += 1;
                false
            }
            "JobTerminating" => {
                count.terminating = true;
                false
            }
            "JobEnabled" => count.may_be_due(),
            // New settings: it may now complete when its tasks have, and
            // may already have none left.
            "JobUpdated" => {
                let Ok(JobEvent::JobUpdated { spec, .. }) =
                    decode_event::<JobEvent>(StreamKind::Job, envelope)
                else {
                    return false;
                };
                count.completes_when_done = spec.on_all_tasks_complete
                    == crate::domain::job::OnAllTasksComplete::TerminateJob;
                count.on_failure = spec.on_task_failure;
                count.may_be_due()
            }
            "JobTaskCountsChanged" => {
                let Ok(JobEvent::JobTaskCountsChanged { task, from, to }) =
                    decode_event::<JobEvent>(StreamKind::Job, envelope)
                else {
                    return false;
                };
                if to == Some(B::Failed)
                    && from != to
                    && count.on_failure != OnTaskFailure::NoAction
                {
                    self.1
                        .borrow_mut()
                        .push((envelope.stream.clone(), task, count.on_failure));
                }
                let unfinished = |b: &Option<B>| matches!(b, Some(B::Active | B::Running));
                match (unfinished(&from), unfinished(&to)) {
                    (false, true) => {
                        count.unfinished += 1;
                        false
                    }
                    (true, false) => {
                        count.unfinished = count.unfinished.saturating_sub(1);
                        count.may_be_due()
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The failed tasks whose jobs act on a failure: once per job that
    /// terminates on any, each task's for jobs that read its exit
    /// conditions; a job already terminating (or gone) is left out.
    pub(super) fn take_failures(&self) -> Vec<(StreamId, TaskId, OnTaskFailure)> {
        let counts = self.0.borrow();
        let mut failures = std::mem::take(&mut *self.1.borrow_mut());
        let mut seen = std::collections::HashSet::new();
        failures.retain(|(job, _, on)| {
            counts.get(job).is_some_and(|c| !c.terminating)
                && (*on != OnTaskFailure::TerminateJob || seen.insert(job.clone()))
        });
        failures
    }

    /// The jobs that may be due now.
    pub(super) fn due(&self) -> Vec<StreamId> {
        self.0
            .borrow()
            .iter()
            .filter(|(_, count)| count.may_be_due())
            .map(|(job, _)| job.clone())
            .collect()
    }
}

/// Work asked for by key while the same key's work may be under way: one
/// run at a time per key, and one more after it when asked meanwhile, so
/// a burst of asks costs at most two runs and the last ask is never lost.
pub(super) struct Coalescer<K>(RefCell<HashMap<K, bool>>);

impl<K> Default for Coalescer<K> {
    fn default() -> Self {
        Coalescer(RefCell::default())
    }
}

impl<K: std::hash::Hash + Eq + Clone> Coalescer<K> {
    /// Whether the caller should start a run for `key`; false when one is
    /// under way, which then runs once more.
    pub(super) fn start(&self, key: &K) -> bool {
        let mut running = self.0.borrow_mut();
        if let Some(again) = running.get_mut(key) {
            *again = true;
            return false;
        }
        running.insert(key.clone(), false);
        true
    }

    /// From within a run: run once more after it.
    pub(super) fn ask_again(&self, key: &K) {
        self.0.borrow_mut().insert(key.clone(), true);
    }

    /// Called at the end of a run: whether to run again (it was asked for
    /// meanwhile); false, and the key is free, otherwise.
    pub(super) fn again(&self, key: &K) -> bool {
        let mut running = self.0.borrow_mut();
        match running.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(key);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Coalescer, JobCounts};
    use crate::domain::job::{JobEvent, JobSpec, OnAllTasksComplete};
    use crate::domain::task::TaskBucket as B;
    use crate::domain::Ctx;
    use crate::store::{Envelope, StreamId};
    use crate::types::{AccountName, JobId, PoolId, Principal, TaskId, Timestamp};

    fn envelope(stream: &StreamId, event: &JobEvent) -> Envelope {
        let ctx = Ctx::live(
            &crate::clock::SystemClock,
            Principal::Admin,
            crate::clock::new_request_id(),
        );
        crate::domain::to_envelope(event, stream, (1, 1), &ctx).unwrap()
    }

    #[test]
    fn a_job_is_asked_about_only_when_its_last_unfinished_task_ends() {
        let counts = JobCounts::default();
        let account = AccountName::new("acme").unwrap();
        let job = |name: &str, policy| {
            let id = JobId::new(name).unwrap();
            let stream = StreamId::job(&account, &id);
            let spec = JobSpec {
                on_all_tasks_complete: policy,
                ..JobSpec::on_pool(id, account.clone(), PoolId::new("p").unwrap())
            };
            let created = JobEvent::JobCreated {
                spec,
                at: Timestamp::EPOCH,
            };
            assert!(!counts.fold(&envelope(&stream, &created)));
            stream
        };
        let fold = |stream: &StreamId, event: JobEvent| counts.fold(&envelope(stream, &event));
        let added = || JobEvent::JobTaskAdded {
            task: TaskId::new("t").unwrap(),
            at: Timestamp::EPOCH,
        };
        let moved = |from, to| JobEvent::JobTaskCountsChanged {
            task: TaskId::new("t").unwrap(),
            from,
            to,
        };
        let done = job("done", OnAllTasksComplete::TerminateJob);
        assert!(!fold(&done, added()));
        assert!(!fold(&done, added()));
        assert!(!fold(&done, moved(Some(B::Active), Some(B::Running))));
        assert!(
            !fold(&done, moved(Some(B::Running), Some(B::Succeeded))),
            "one left"
        );
        // A retried task goes back to active: still one left after it.
        assert!(!fold(&done, moved(Some(B::Failed), Some(B::Active))));
        assert!(!fold(&done, moved(Some(B::Active), Some(B::Failed))));
        assert!(counts.due().is_empty());
        assert!(
            fold(&done, moved(Some(B::Active), None)),
            "the last one deleted"
        );
        assert_eq!(counts.due(), std::slice::from_ref(&done));
        // Completed: no longer followed.
        let completed = JobEvent::JobCompleted {
            reason: "all tasks completed".into(),
            at: Timestamp::EPOCH,
        };
        assert!(!fold(&done, completed));
        assert!(!fold(&done, moved(Some(B::Running), Some(B::Succeeded))));
        assert!(counts.due().is_empty());

        // A job that stays active when its tasks are done is never asked,
        // unless it is terminating.
        let stays = job("stays", OnAllTasksComplete::NoAction);
        assert!(!fold(&stays, added()));
        assert!(!fold(&stays, moved(Some(B::Active), Some(B::Succeeded))));
        assert!(!fold(&stays, added()));
        let terminating = JobEvent::JobTerminating {
            reason: "asked".into(),
            at: Timestamp::EPOCH,
        };
        assert!(!fold(&stays, terminating));
        assert!(fold(&stays, moved(Some(B::Active), Some(B::Failed))));
        // Enabled with nothing left: asked.
        let idle = job("idle", OnAllTasksComplete::TerminateJob);
        assert!(
            !fold(
                &idle,
                JobEvent::JobEnabled {
                    at: Timestamp::EPOCH
                }
            ),
            "no task yet"
        );
        assert!(!fold(&idle, added()));
        assert!(fold(&idle, moved(Some(B::Active), Some(B::Succeeded))));
        assert!(fold(
            &idle,
            JobEvent::JobEnabled {
                at: Timestamp::EPOCH
            }
        ));
    }

    #[test]
    fn asks_during_a_run_make_one_more_run_and_none_is_lost() {
        let c = Coalescer::<&str>::default();
        assert!(c.start(&"job"), "the first ask runs");
        assert!(!c.start(&"job"), "an ask while it runs waits");
        assert!(!c.start(&"job"), "so does a second");
        assert!(c.start(&"other"), "another key runs at once");
        assert!(c.again(&"job"), "the asks meanwhile make one more run");
        assert!(!c.again(&"job"), "and only one");
        assert!(c.start(&"job"), "a finished key runs again when asked");
        assert!(!c.again(&"job"));
        assert!(!c.again(&"other"));
        assert!(c.start(&"pool"));
        c.ask_again(&"pool");
        assert!(c.again(&"pool"), "a run can ask for the next itself");
        assert!(!c.again(&"pool"));
    }
}
