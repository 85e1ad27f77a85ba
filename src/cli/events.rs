//! `lote events`: the event log, live.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{Output, Rendered};
use lote::api::EventView;
use lote::client::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Print events as they are recorded (Ctrl-C to stop). Accounts see
    /// their own; with --admin, every account's.
    Tail {
        /// Start at this log position (1: from the beginning); default:
        /// only new events.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn event_json(e: &EventView) -> Value {
    json!({
        "position": e.position,
        "entity": e.entity,
        "version": e.version,
        "recorded_at": e.recorded_at,
        "event_type": e.event_type,
        "principal": e.principal,
        "request_id": e.request_id,
        "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
    })
}

fn event_line(e: &EventView) -> String {
    format!(
        "#{:<7} {}  {:<40} {:<24} by {}  {}",
        e.position, e.recorded_at, e.entity, e.event_type, e.principal, e.data
    )
}

/// Runs `lote events tail`: prints events as they come (one JSON object
/// per line without `--count`, one array with it).
pub(super) async fn run(
    cmd: EventsCmd,
    client: &Client,
    output: Output,
) -> Result<Rendered, ClientError> {
    let EventsCmd::Tail { from, count } = cmd;
    let mut events = client.tail(from).await?;
    let mut seen = 0u64;
    let mut all = Vec::new();
    while count.is_none_or(|c| seen < c) {
        let Some(item) = events.recv().await else {
            break;
        };
        let event = item?;
        seen += 1;
        match (output, count) {
            // JSON with a count: one array at the end (one value).
            (Output::Json, Some(_)) => all.push(event_json(&event)),
            // JSON without end: one object per line, as it comes.
            (Output::Json, None) => println!("{}", event_json(&event)),
            (Output::Table, _) => println!("{}", event_line(&event)),
        }
    }
    Ok(match (output, count) {
        (Output::Json, Some(_)) => Some((Value::Array(all), String::new())),
        _ => None,
    })
}
