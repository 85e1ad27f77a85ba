//! Reading entities for a reply: one by id (without waking an actor for
//! an id that was never used), or a page of them folded from the log.
//! What "does not exist" means is per kind, and its reply is the same
//! whether the entity never was, was deleted, or is another account's.

use super::{internal, Service};
use crate::actors::Registered;
use crate::api::ApiError;
use crate::domain::account::{Account, AccountStatus};
use crate::domain::job::{Job, JobStatus};
use crate::domain::node::Node;
use crate::domain::pool::{Pool, PoolStatus};
use crate::domain::task::{Task, TaskStatus};
use crate::domain::{self, RejectionCode, Versioned};
use crate::store::StreamId;

/// Entities that have a "does not exist (any more)" state, and the code
/// that says so.
pub(super) trait Visible: Registered {
    const NOT_FOUND: RejectionCode;
    const NOUN: &'static str;
    fn visible(&self) -> bool;
}

impl Visible for Account {
    const NOT_FOUND: RejectionCode = RejectionCode::AccountNotFound;
    const NOUN: &'static str = "account";
    fn visible(&self) -> bool {
        !matches!(self.status, AccountStatus::Absent | AccountStatus::Deleted)
    }
}
impl Visible for Pool {
    const NOT_FOUND: RejectionCode = RejectionCode::PoolNotFound;
    const NOUN: &'static str = "pool";
    fn visible(&self) -> bool {
        !matches!(self.status, PoolStatus::Absent | PoolStatus::Deleted)
    }
}
impl Visible for Node {
    const NOT_FOUND: RejectionCode = RejectionCode::NodeNotFound;
    const NOUN: &'static str = "node";
    fn visible(&self) -> bool {
        self.state.is_live()
    }
}
impl Visible for crate::domain::schedule::Schedule {
    const NOT_FOUND: RejectionCode = RejectionCode::ScheduleNotFound;
    const NOUN: &'static str = "job schedule";
    fn visible(&self) -> bool {
        use crate::domain::schedule::ScheduleStatus;
        !matches!(
            self.status,
            ScheduleStatus::Absent | ScheduleStatus::Deleted
        )
    }
}

impl Visible for crate::domain::app::App {
    const NOT_FOUND: RejectionCode = RejectionCode::AppNotFound;
    const NOUN: &'static str = "app";
    fn visible(&self) -> bool {
        !self.versions.is_empty()
    }
}
impl Visible for Job {
    const NOT_FOUND: RejectionCode = RejectionCode::JobNotFound;
    const NOUN: &'static str = "job";
    fn visible(&self) -> bool {
        !matches!(self.status, JobStatus::Absent | JobStatus::Deleted)
    }
}
impl Visible for Task {
    const NOT_FOUND: RejectionCode = RejectionCode::TaskNotFound;
    const NOUN: &'static str = "task";
    fn visible(&self) -> bool {
        !matches!(self.status, TaskStatus::Absent | TaskStatus::Deleted)
    }
}

pub(super) fn not_found<A: Visible>(id: &str) -> ApiError {
    ApiError::rejected(A::NOT_FOUND, format!("no {} {id}", A::NOUN))
}

impl Service {
    /// The state of an entity that exists, without starting an actor for
    /// ids that were never used (unauthenticated callers can name any).
    pub(super) async fn existing<A: Visible>(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Versioned<A>>, ApiError> {
        if !self.core.exists::<A>(stream)? {
            return Ok(None);
        }
        let current = self.core.state::<A>(stream).await?;
        Ok(current.state.visible().then_some(current))
    }

    pub(super) async fn show<A: Visible>(
        &self,
        stream: &StreamId,
        id: &str,
    ) -> Result<Versioned<A>, ApiError> {
        self.existing(stream)
            .await?
            .ok_or_else(|| not_found::<A>(id))
    }

    /// Every visible entity whose stream starts with `prefix`, folded from
    /// the log without waking actors.
    pub(super) fn list<A: Visible>(&self, prefix: &str) -> Result<Vec<Versioned<A>>, ApiError> {
        Ok(self.page(prefix, None, usize::MAX)?.0)
    }

    /// One page of [`list`](Self::list): at most `limit` entities from the
    /// stream after `after`, and the stream to continue after if more
    /// follow. Events past the durable head are not shown.
    pub(super) fn page<A: Visible>(
        &self,
        prefix: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<(Vec<Versioned<A>>, Option<StreamId>), ApiError> {
        let store = self.core.store();
        let head = store.head();
        let mut out: Vec<(StreamId, Versioned<A>)> = Vec::new();
        let mut current: Option<(StreamId, Versioned<A>)> = None;
        let mut failed = None;
        let mut more = false;
        let flush = |current: &mut Option<(StreamId, Versioned<A>)>,
                     out: &mut Vec<(StreamId, Versioned<A>)>| {
            if let Some((stream, v)) = current.take() {
                if v.state.visible() {
                    out.push((stream, v));
                }
            }
        };
        store.scan_streams_after(prefix, after, |envelope| {
            if envelope.position > head {
                return Ok(true);
            }
            if current.as_ref().map(|(s, _)| s) != Some(&envelope.stream) {
                flush(&mut current, &mut out);
                if out.len() >= limit {
                    more = true;
                    return Ok(false);
                }
                current = Some((
                    envelope.stream.clone(),
                    Versioned {
                        version: 0,
                        state: A::default(),
                    },
                ));
            }
            if let Some((_, v)) = current.as_mut() {
                match domain::fold(
                    std::mem::take(&mut v.state),
                    std::slice::from_ref(&envelope),
                ) {
                    Ok(state) => {
                        v.state = state;
                        v.version = envelope.stream_version;
                    }
                    Err(e) => {
                        failed = Some(e);
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })?;
        if let Some(e) = failed {
            return Err(internal(e));
        }
        flush(&mut current, &mut out);
        let next = if more {
            out.last().map(|(s, _)| s.clone())
        } else {
            None
        };
        Ok((out.into_iter().map(|(_, v)| v).collect(), next))
    }
}
