//! JSON Schemas of everything in the log, generated from the Rust types.
//!
//! `schemas/` holds the generated files; `tests/schemas.rs` fails when they
//! are stale and rewrites them when run with `LOTE_UPDATE_SCHEMAS=1`.

use schemars::{schema_for, JsonSchema};

use crate::domain::account::{Account, AccountEvent};
use crate::domain::app::{App, AppEvent};
use crate::domain::job::{Job, JobEvent};
use crate::domain::node::{Node, NodeEvent};
use crate::domain::pool::{Pool, PoolEvent};
use crate::domain::rejection::Rejection;
use crate::domain::request::{RequestEvent, RequestRecord};
use crate::domain::schedule::{Schedule, ScheduleEvent};
use crate::domain::task::{Task, TaskEvent};
use crate::store::Envelope;

fn render<T: JsonSchema>() -> String {
    let schema = schema_for!(T);
    // A schema is plain JSON data.
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}

/// Every schema file: path relative to `schemas/`, and its contents.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("envelope.json", render::<Envelope>()),
        ("rejection.json", render::<Rejection>()),
        ("events/account.json", render::<AccountEvent>()),
        ("events/pool.json", render::<PoolEvent>()),
        ("events/node.json", render::<NodeEvent>()),
        ("events/job.json", render::<JobEvent>()),
        ("events/task.json", render::<TaskEvent>()),
        ("events/request.json", render::<RequestEvent>()),
        ("events/schedule.json", render::<ScheduleEvent>()),
        ("events/app.json", render::<AppEvent>()),
        ("state/account.json", render::<Account>()),
        ("state/pool.json", render::<Pool>()),
        ("state/node.json", render::<Node>()),
        ("state/job.json", render::<Job>()),
        ("state/task.json", render::<Task>()),
        ("state/request.json", render::<RequestRecord>()),
        ("state/schedule.json", render::<Schedule>()),
        ("state/app.json", render::<App>()),
    ]
}
