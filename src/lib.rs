//! lote: batch computing on machines you own.
//!
//! Layout (module → component). The folders tell the architecture: the
//! control plane (`server`) apart from what runs on a node (`agent`), both
//! speaking the wire protocol (`api`) over the domain's types.
//!
//! - [`types`], [`codec`], [`clock`]: ids and timestamps; the log's binary
//!   encoding (bincode, pinned), in one place; the only reader of the wall
//!   clock and source of random ids.
//! - [`store`]: the event store on RocksDB: log, stream index, group commit,
//!   subscriptions, snapshots, format header, tail verification.
//! - [`domain`]: the aggregates (account, pool, node, job, task): commands,
//!   events, states, `decide` and `apply`; rejection codes; payload layouts
//!   and their upcasters; the autoscale formula language.
//! - [`actors`]: one actix actor per live entity, activated on demand and
//!   passivated when idle; [`actors::Core`] is the front door.
//! - [`api`]: the TCP message API: frames, requests and responses, request
//!   signing, the views clients show. Depends on `domain` and `types` only.
//! - [`server`]: the control plane: listener and connections, request
//!   handlers by family (`server::service`), and the supervisors, actix
//!   actors that talk by messages (`server::supervisors`: placement and its
//!   scheduler, the pool / node / job sagas, autoscale, liveness, wait
//!   reasons, the local provider).
//! - [`agent`]: everything that runs on a node: the agent loop, attempts,
//!   processes and their trees, staging of files, reports, retention,
//!   machine figures. Talks to the server through [`client`] and [`api`]
//!   only.
//! - [`client`]: the async Rust client the CLI, agents and tests use.
//! - [`blob`]: the blob store (trait, local backend), streaming transfers,
//!   application packages.
//! - [`replay`], [`golden`], [`schema`]: rebuilding from the log and audit
//!   trails; log export and import for the golden logs; JSON Schemas.
//! - [`demo`]: the in-process demo workload behind `lote demo`.
//!
//! The `lote` binary (`src/main.rs`) adds the CLI, one file per noun, in
//! `src/cli/`.

pub mod actors;
pub mod agent;
pub mod api;
pub mod blob;
pub mod client;
pub mod clock;
pub mod codec;
pub mod demo;
pub mod domain;
pub mod golden;
pub mod private_file;
pub mod replay;
pub mod schema;
pub mod server;
pub mod store;
pub mod types;
