//! lote: batch computing on machines you own.
//!
//! Layout (module → component):
//! - [`codec`]: the log's binary encoding (bincode, pinned), in one place.
//! - [`clock`]: the only reader of the wall clock and source of random ids.
//! - [`types`]: ids, timestamps, secrets, principals.
//! - [`store`]: the event store on RocksDB: log, stream index, group commit,
//!   subscriptions, snapshots, format header, tail verification.
//! - [`domain`]: the aggregates (account, pool, node, job, task): commands,
//!   events, states, `decide` and `apply`; rejection codes; upcasters.
//! - [`actors`]: one actix actor per live entity, activated on demand and
//!   passivated when idle; [`actors::Core`] is the front door.
//! - [`replay`]: rebuilding from the log, consistency checks, audit trails.
//! - [`schema`]: JSON Schemas of the log's types (checked into `schemas/`).
//! - [`golden`]: export and import of logs, for the golden logs in `replay/`.
//! - [`demo`]: the in-process demo workload behind `lote demo`.
//! - [`api`]: the TCP message API: frames, messages, request signing.
//! - [`server`]: the server hosting the actors behind the API.
//! - [`client`]: the async Rust client the CLI, agents and tests use.
//! - [`compute`]: placement (the scheduler) and the node agent.
//! - [`autoscale`]: the formula language, its evaluator and the metrics it reads.
//! - [`blob`]: the blob store (trait, local backend), streaming transfers,
//!   application packages.

pub mod actors;
pub mod api;
pub mod autoscale;
pub mod blob;
pub mod client;
pub mod clock;
pub mod codec;
pub mod compute;
pub mod demo;
pub mod domain;
pub mod golden;
pub mod private_file;
pub mod replay;
pub mod schema;
pub mod server;
pub mod store;
pub mod types;
