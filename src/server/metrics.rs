//! `/metrics`: the server's counters in Prometheus' (OpenMetrics) text
//! format, through `prometheus-client` rather than hand-written text, so
//! escaping, types and the histogram's buckets are right by construction.
//!
//! Two kinds of figures. Counters the server keeps as things happen (API
//! calls and their latency, blob bytes, connected agents) live here and
//! are shared by reference. Figures of state (tasks by state per job and
//! pool, nodes by state per pool, the log's and placement's counters) are
//! read at scrape time from the same sources the API answers from, so the
//! two never disagree. Labels are accounts, pools, jobs and states: never
//! a task, so the number of series grows with jobs, not with tasks.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::service::console::Census;
use super::supervisors::scheduler::PlacementStats;
use crate::store::StatsView;
use crate::types::json_name;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The request's name (`AddTasks`): a closed list.
    pub kind: String,
    /// `ok` or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PoolStateLabels {
    account: String,
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    account: String,
    pool: String,
    job: String,
    state: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The counters kept as things happen.
#[derive(Clone)]
pub struct Metrics {
    calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    blob_bytes: Family<DirectionLabels, Counter>,
    agents: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: Family::new_with_constructor(latency_histogram),
            blob_bytes: Family::default(),
            agents: Gauge::default(),
        }
    }
}

/// Marks a connection as an agent's while it lives.
pub struct AgentConnected(Gauge);

impl Drop for AgentConnected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// One API call (message API or console) and how long it took.
    pub fn call(&self, kind: &str, ok: bool, seconds: f64) {
        self.calls
            .get_or_create(&CallLabels {
                kind: kind.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(seconds);
    }

    /// Blob bytes received (`in`) or sent (`out`).
    pub fn blob_bytes(&self, incoming: bool, bytes: u64) {
        let direction = if incoming { "in" } else { "out" }.to_string();
        self.blob_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes);
    }

    pub fn agent_connected(&self) -> AgentConnected {
        self.agents.inc();
        AgentConnected(self.agents.clone())
    }

    /// The whole exposition: these counters and the state read now.
    pub fn render(&self, census: &Census, log: StatsView, placement: PlacementStats) -> String {
        let mut r = Registry::with_prefix("lote");
        r.register(
            "api_call_seconds",
            "API calls by request and outcome, with their latency",
            self.calls.clone(),
        );
        r.register(
            "blob_bytes",
            "Blob and package bytes received (in) and sent (out)",
            self.blob_bytes.clone(),
        );
        r.register(
            "agents_connected",
            "Agent connections that made a signed call",
            self.agents.clone(),
        );
        state_figures(&mut r, census);
        let counter = |r: &mut Registry, name: &str, help: &str, value: u64| {
            let c: Counter = Counter::default();
            c.inc_by(value);
            r.register(name, help, c);
        };
        counter(
            &mut r,
            "log_appends",
            "Appends to the event log",
            log.appends,
        );
        counter(
            &mut r,
            "log_events",
            "Events written to the log",
            log.events_appended,
        );
        counter(
            &mut r,
            "log_rounds",
            "Write rounds (one RocksDB batch each)",
            log.write_batches,
        );
        counter(&mut r, "log_fsyncs", "WAL fsyncs", log.fsyncs);
        counter(
            &mut r,
            "log_bytes",
            "Bytes of the write batches",
            log.bytes_written,
        );
        counter(
            &mut r,
            "log_stream_reads",
            "Reads of one stream's events from the log's tables (an entity rebuilt or caught up)",
            log.stream_reads,
        );
        counter(
            &mut r,
            "placement_rounds",
            "Placement rounds run",
            placement.rounds,
        );
        counter(
            &mut r,
            "placements",
            "Tasks placed on nodes",
            placement.placements,
        );
        let ready: Gauge = Gauge::default();
        ready.set(i64::from(placement.caught_up));
        r.register(
            "placement_caught_up",
            "1 once placement has folded the log it started with",
            ready,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Tasks by state per job and per pool, nodes by state per pool.
fn state_figures(r: &mut Registry, census: &Census) {
    let nodes: Family<PoolStateLabels, Gauge> = Family::default();
    for n in &census.nodes {
        let (Some(account), Some(pool)) = (&n.state.account, &n.state.pool) else {
            continue;
        };
        nodes
            .get_or_create(&PoolStateLabels {
                account: account.to_string(),
                pool: pool.to_string(),
                state: json_name(&n.state.state),
            })
            .inc();
    }
    // Pools with no node still show, at zero idle.
    for p in &census.pools {
        if let Some(spec) = &p.state.spec {
            let _ = nodes.get_or_create(&PoolStateLabels {
                account: spec.account.to_string(),
                pool: spec.id.to_string(),
                state: "idle".into(),
            });
        }
    }
    let job_tasks: Family<JobStateLabels, Gauge> = Family::default();
    let mut pool_tasks: BTreeMap<PoolStateLabels, i64> = BTreeMap::new();
    for j in &census.jobs {
        let Some(spec) = &j.state.spec else { continue };
        for (bucket, count) in &j.state.task_counts {
            let state = json_name(bucket);
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            job_tasks
                .get_or_create(&JobStateLabels {
                    account: spec.account.to_string(),
                    pool: spec.pool.to_string(),
                    job: spec.id.to_string(),
                    state: state.clone(),
                })
                .set(count);
            *pool_tasks
                .entry(PoolStateLabels {
                    account: spec.account.to_string(),
                    pool: spec.pool.to_string(),
                    state,
                })
                .or_default() += count;
        }
    }
    let pool_family: Family<PoolStateLabels, Gauge> = Family::default();
    for (labels, count) in pool_tasks {
        pool_family.get_or_create(&labels).set(count);
    }
    r.register("nodes", "Nodes by state, per pool", nodes);
    r.register("job_tasks", "Tasks by state, per job", job_tasks);
    r.register(
        "pool_tasks",
        "Tasks by state, per pool (its jobs' tasks)",
        pool_family,
    );
}
