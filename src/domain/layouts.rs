//! The payload layout of every event type: which changed, and so which
//! layout each writes today. Event types read their current layout here;
//! the upcasters (`upcast.rs`) read this list and the event types, so
//! nothing here depends on either.

use crate::store::StreamKind;

/// The layout version of event types that never changed.
pub const CURRENT_EVENT_SCHEMA: u16 = 1;

/// One change of an event type's payload layout: from `from` to `from + 1`.
#[derive(Clone, Copy, Debug)]
pub struct LayoutChange {
    pub kind: StreamKind,
    pub event_type: &'static str,
    pub from: u16,
}

/// Every layout change, oldest first per event type. Each needs a lift in
/// `upcast::lift_for`.
pub const CHANGES: &[LayoutChange] = &[
    LayoutChange {
        kind: StreamKind::Task,
        event_type: "TaskAdded",
        from: 1,
    },
    LayoutChange {
        kind: StreamKind::Job,
        event_type: "JobCreated",
        from: 1,
    },
    LayoutChange {
        kind: StreamKind::Pool,
        event_type: "PoolCreated",
        from: 1,
    },
    LayoutChange {
        kind: StreamKind::Pool,
        event_type: "PoolCreated",
        from: 2,
    },
    LayoutChange {
        kind: StreamKind::Job,
        event_type: "JobCreated",
        from: 2,
    },
    // Task dependencies and exit conditions in task specs (and so in job
    // managers and schedule templates), dependency settings in job specs.
    LayoutChange {
        kind: StreamKind::Task,
        event_type: "TaskAdded",
        from: 2,
    },
    LayoutChange {
        kind: StreamKind::Job,
        event_type: "JobCreated",
        from: 3,
    },
    LayoutChange {
        kind: StreamKind::Schedule,
        event_type: "ScheduleCreated",
        from: 1,
    },
    LayoutChange {
        kind: StreamKind::Schedule,
        event_type: "ScheduleUpdated",
        from: 1,
    },
    // Apps: `retry` in exit options (so in task specs, job managers and
    // schedule templates), `auto_pool` in job specs.
    LayoutChange {
        kind: StreamKind::Task,
        event_type: "TaskAdded",
        from: 3,
    },
    LayoutChange {
        kind: StreamKind::Job,
        event_type: "JobCreated",
        from: 4,
    },
    LayoutChange {
        kind: StreamKind::Schedule,
        event_type: "ScheduleCreated",
        from: 2,
    },
    LayoutChange {
        kind: StreamKind::Schedule,
        event_type: "ScheduleUpdated",
        from: 2,
    },
];

/// The layout version written today for `event_type`: one more than the
/// first layout for every change listed for it.
pub fn current_schema(kind: StreamKind, event_type: &str) -> u16 {
    CURRENT_EVENT_SCHEMA
        + CHANGES
            .iter()
            .filter(|c| c.kind == kind && c.event_type == event_type)
            .count() as u16
}

/// The newest payload layout of any event type: golden logs are recorded
/// per newest layout (`replay/vN`).
pub fn newest_layout() -> u16 {
    CHANGES
        .iter()
        .map(|c| current_schema(c.kind, c.event_type))
        .max()
        .unwrap_or(CURRENT_EVENT_SCHEMA)
}
