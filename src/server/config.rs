//! The server's settings: flag > environment > config file > default.
//!
//! clap resolves flag over environment; what neither gave stays `None` and
//! is taken from the file, then from the defaults here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ServerError;
use crate::store::Durability;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_DATA_DIR: &str = "lote-data";
pub const DEFAULT_CONNECTIONS_MAX: usize = 1024;
pub const DEFAULT_CALLS_IN_FLIGHT_MAX: usize = 256;
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// Connections that have not yet made a signed call: past this many, the
/// oldest is closed to make room (so that idle sockets never fill the
/// connection cap).
pub const DEFAULT_UNAUTHENTICATED_MAX: usize = 256;
/// The same, per source address: one address's flood closes only its own
/// oldest.
pub const DEFAULT_UNAUTHENTICATED_PER_SOURCE_MAX: usize = 64;
/// Seconds a connection has from its first byte to its first call that
/// authenticates.
pub const DEFAULT_AUTH_DEADLINE_SECS: u64 = 10;
/// A node whose agent is silent this long is lost; agents call at least
/// every third of it (their long poll, parked no longer).
pub const DEFAULT_NODE_LOST_AFTER_SECS: u64 = 5;
/// Azure's sample period: 2 samples a minute.
pub const DEFAULT_AUTOSCALE_SAMPLE_SECS: u64 = 30;
/// Azure's shortest evaluation interval.
pub const DEFAULT_AUTOSCALE_MIN_INTERVAL_SECS: u64 = 300;

/// `lote server` flags. Every one also reads an environment variable.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServerFlags {
    /// Config file (TOML) with any of the settings below, by the same names
    /// with '_' for '-'; flags and environment variables override it.
    #[arg(long, env = "LOTE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the event log, the admin key and the server secret live.
    /// [default: lote-data]
    #[arg(long, env = "LOTE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where local pools' nodes keep their directories (task working
    /// directories, outputs, caches): put it on a fast local disk or a
    /// tmpfs, apart from the log. [default: DATA_DIR/nodes]
    #[arg(long, env = "LOTE_NODES_DIR")]
    pub nodes_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    /// [default: 127.0.0.1:7070]
    #[arg(long, env = "LOTE_LISTEN")]
    pub listen: Option<String>,
    /// When appends and blob uploads are acknowledged: sync (after fsync:
    /// survives power loss) or buffered (once the OS has them: survives a
    /// crash of lote, not of the machine). [default: sync]
    #[arg(long, env = "LOTE_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Use this admin key instead of the one in DATA_DIR/admin.key.
    #[arg(long, env = "LOTE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Most open connections; more are told "overloaded" and closed.
    /// [default: 1024]
    #[arg(long, env = "LOTE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most calls in flight on one connection. [default: 256]
    #[arg(long, env = "LOTE_MAX_CALLS_IN_FLIGHT")]
    pub max_calls_in_flight: Option<usize>,
    /// Seconds a started frame (or the hello) may take to arrive whole.
    /// [default: 30]
    #[arg(long, env = "LOTE_READ_TIMEOUT_SECS")]
    pub read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent before it is closed.
    /// [default: 300]
    #[arg(long, env = "LOTE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds to let calls in flight finish at shutdown. [default: 30]
    #[arg(long, env = "LOTE_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Most connections waiting to authenticate (hello sent, no signed
    /// call yet); past it the oldest is closed. Keeps idle or slow sockets
    /// from filling --max-connections. [default: 256]
    #[arg(long, env = "LOTE_MAX_UNAUTHENTICATED")]
    pub max_unauthenticated: Option<usize>,
    /// The same, per source address. [default: 64]
    #[arg(long, env = "LOTE_MAX_UNAUTHENTICATED_PER_SOURCE")]
    pub max_unauthenticated_per_source: Option<usize>,
    /// Seconds a new connection has to make its first signed call.
    /// [default: 10]
    #[arg(long, env = "LOTE_AUTH_DEADLINE_SECS")]
    pub auth_deadline_secs: Option<u64>,
    /// Seconds without a call from a node's agent after which the node is
    /// lost: marked unusable, its tasks requeued (no retry used) and, in a
    /// local pool, the node replaced. An idle agent calls every third of
    /// it (at least 2). [default: 5]
    #[arg(long, env = "LOTE_NODE_LOST_AFTER_SECS")]
    pub node_lost_after_secs: Option<u64>,
    /// Seconds between samples of each pool's load, the data autoscale
    /// formulas read with GetSample. [default: 30]
    #[arg(long, env = "LOTE_AUTOSCALE_SAMPLE_SECS")]
    pub autoscale_sample_secs: Option<u64>,
    /// Shortest autoscale evaluation interval a pool may ask for; lower it
    /// (down to 5) for tests and demos. [default: 300]
    #[arg(long, env = "LOTE_AUTOSCALE_MIN_INTERVAL_SECS")]
    pub autoscale_min_interval_secs: Option<u64>,
    /// Shortest recurrence a job schedule may ask for; lower it (down to 1)
    /// for tests and demos. [default: 60]
    #[arg(long, env = "LOTE_SCHEDULE_MIN_INTERVAL_SECS")]
    pub schedule_min_interval_secs: Option<u64>,
    /// The server's TLS certificate (PEM; the chain, leaf first). Without
    /// it the server makes a self-signed one at first start, keeps it in
    /// DATA_DIR/tls and prints its SHA-256 fingerprint, which clients pin
    /// (--tls-fingerprint) and join tokens carry.
    #[arg(long, env = "LOTE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "LOTE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Who may connect without TLS: loopback (clients on this machine,
    /// such as local agents), never, or insecure-any (keys and data in
    /// clear over the network). [default: loopback]
    #[arg(long, env = "LOTE_PLAINTEXT", value_enum)]
    pub plaintext: Option<super::tls::Plaintext>,
    /// Where the admin console, /metrics, /healthz and /readyz are served
    /// (HTTP; HTTPS with the server's certificate for whom --plaintext
    /// does not allow plaintext). [default: 127.0.0.1:7071; port 0 when
    /// --listen's port is 0]
    #[arg(long, env = "LOTE_HTTP_LISTEN", conflicts_with = "no_http")]
    pub http_listen: Option<String>,
    /// Serve no console, metrics or health endpoints.
    #[arg(long, env = "LOTE_NO_HTTP")]
    pub no_http: bool,
    /// Hours a console sign-in lasts. [default: 12]
    #[arg(long, env = "LOTE_CONSOLE_SESSION_HOURS")]
    pub console_session_hours: Option<u64>,
    /// Serve the Azure Batch REST API here (api-version 2025-06-01,
    /// SharedKey with the accounts' keys; `lote account keys` shows
    /// them as Azure clients take them), so Azure's own SDK works
    /// against lote. Off unless given; HTTPS with the server's certificate
    /// for whom --plaintext does not allow plaintext.
    #[arg(long, env = "LOTE_AZURE_LISTEN")]
    pub azure_listen: Option<String>,
    /// A VM size the Azure gateway knows, NAME=CORES:MEMORY_MIB
    /// (repeatable; e.g. standard_d2s_v3=2:8192). A pool asked for with
    /// `vmSize` gets nodes of that size. [default: eight common Azure
    /// sizes, docs/azure-compat.md]
    #[arg(
        long = "azure-vm-size",
        env = "LOTE_AZURE_VM_SIZES",
        value_delimiter = ',',
        value_name = "NAME=CORES:MEMORY_MIB"
    )]
    pub azure_vm_sizes: Vec<String>,
}

/// The config file's contents. Unknown keys are an error, so a typo does
/// not silently leave a default in place.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfigFile {
    pub data_dir: Option<PathBuf>,
    pub nodes_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub durability: Option<Durability>,
    pub admin_key: Option<String>,
    pub max_connections: Option<usize>,
    pub max_calls_in_flight: Option<usize>,
    pub read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    pub max_unauthenticated: Option<usize>,
    pub max_unauthenticated_per_source: Option<usize>,
    pub auth_deadline_secs: Option<u64>,
    pub autoscale_sample_secs: Option<u64>,
    pub autoscale_min_interval_secs: Option<u64>,
    pub node_lost_after_secs: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub plaintext: Option<super::tls::Plaintext>,
    pub schedule_min_interval_secs: Option<u64>,
    pub http_listen: Option<String>,
    pub no_http: Option<bool>,
    pub console_session_hours: Option<u64>,
    pub azure_listen: Option<String>,
    pub azure_vm_sizes: Option<Vec<String>>,
}

/// Settings after precedence is applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Where local nodes' directories live (`DATA_DIR/nodes` unless set).
    pub nodes_dir: PathBuf,
    pub listen: String,
    pub durability: Durability,
    pub admin_key: Option<String>,
    pub connections_max: usize,
    pub calls_in_flight_max: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub unauthenticated_max: usize,
    pub unauthenticated_per_source_max: usize,
    pub auth_deadline: Duration,
    pub autoscale_sample: Duration,
    pub autoscale_min_interval_secs: u64,
    pub node_lost_after: Duration,
    pub schedule_min_interval_secs: u64,
    /// A given certificate and key; None: the server's own, made once.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Only one of the two was given (refused at load).
    tls_half: bool,
    pub plaintext: super::tls::Plaintext,
    /// The console's address; None: no console.
    pub http_listen: Option<String>,
    pub console_session: Duration,
    /// The Azure Batch REST gateway's address; None: none.
    pub azure_listen: Option<String>,
    /// Its VM sizes (`NAME=CORES:MEMORY_MIB`); empty: lote's defaults.
    pub azure_vm_sizes: Vec<String>,
}

/// The console's port unless another is given.
const DEFAULT_HTTP_PORT: u16 = 7071;

/// The console's default address: --listen's host on port 7071, or on
/// port 0 when --listen asks for any free port (tests, several servers on
/// one machine), so two servers never fight over the console's port.
fn default_http_listen(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:0"),
        Some((host, _)) => format!("{host}:{DEFAULT_HTTP_PORT}"),
        None => format!("127.0.0.1:{DEFAULT_HTTP_PORT}"),
    }
}

impl ServerConfig {
    /// Defaults for a data directory, as a test or an embedder wants them.
    pub fn new(data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        ServerConfig::resolve(
            ServerFlags {
                data_dir: Some(data_dir.into()),
                listen: Some(listen.into()),
                ..ServerFlags::default()
            },
            ServerConfigFile::default(),
        )
    }

    /// Reads the config file named by the flags (if any) and resolves.
    pub fn load(flags: ServerFlags) -> Result<Self, ServerError> {
        let file = match &flags.config {
            None => ServerConfigFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(crate::private_file::FileError::new("config file", path))?;
                toml::from_str(&text).map_err(|e| {
                    ServerError::Config(format!("config file {}: {e}", path.display()))
                })?
            }
        };
        let config = ServerConfig::resolve(flags, file);
        if config.connections_max == 0 || config.calls_in_flight_max == 0 {
            return Err(ServerError::Config(
                "max-connections and max-calls-in-flight must be at least 1".into(),
            ));
        }
        if config.unauthenticated_max == 0 || config.unauthenticated_per_source_max == 0 {
            return Err(ServerError::Config(
                "max-unauthenticated and max-unauthenticated-per-source must be at least 1".into(),
            ));
        }
        if config.auth_deadline.is_zero() {
            return Err(ServerError::Config(
                "auth-deadline-secs must be at least 1".into(),
            ));
        }
        if config.node_lost_after < Duration::from_secs(2) {
            return Err(ServerError::Config(
                "node-lost-after-secs must be at least 2: an idle agent calls every third of it"
                    .into(),
            ));
        }
        if config.autoscale_sample.is_zero() {
            return Err(ServerError::Config(
                "autoscale-sample-secs must be at least 1".into(),
            ));
        }
        let min = crate::domain::pool::AUTOSCALE_INTERVAL_SECS_MIN;
        if config.autoscale_min_interval_secs < min {
            return Err(ServerError::Config(format!(
                "autoscale-min-interval-secs must be at least {min}"
            )));
        }
        if config.schedule_min_interval_secs == 0 {
            return Err(ServerError::Config(
                "schedule-min-interval-secs must be at least 1".into(),
            ));
        }
        if config.tls_half {
            return Err(ServerError::Config(
                "tls_cert and tls_key go together: give both, or neither for a certificate the server makes".into(),
            ));
        }
        if config.admin_key.as_deref().is_some_and(|k| k.len() < 16) {
            return Err(ServerError::Config(
                "the admin key must be at least 16 characters".into(),
            ));
        }
        Ok(config)
    }

    fn resolve(flags: ServerFlags, file: ServerConfigFile) -> Self {
        let tls_cert = flags.tls_cert.or(file.tls_cert);
        let tls_key = flags.tls_key.or(file.tls_key);
        let tls_half = tls_cert.is_some() != tls_key.is_some();
        let secs = |flag: Option<u64>, file: Option<u64>, default: u64| {
            Duration::from_secs(flag.or(file).unwrap_or(default))
        };
        let listen = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        ServerConfig {
            nodes_dir: flags
                .nodes_dir
                .or(file.nodes_dir)
                .unwrap_or_else(|| data_dir.join("nodes")),
            data_dir,
            durability: flags.durability.or(file.durability).unwrap_or_default(),
            admin_key: flags.admin_key.or(file.admin_key),
            connections_max: flags
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_CONNECTIONS_MAX),
            calls_in_flight_max: flags
                .max_calls_in_flight
                .or(file.max_calls_in_flight)
                .unwrap_or(DEFAULT_CALLS_IN_FLIGHT_MAX),
            read_timeout: secs(
                flags.read_timeout_secs,
                file.read_timeout_secs,
                DEFAULT_READ_TIMEOUT_SECS,
            ),
            idle_timeout: secs(
                flags.idle_timeout_secs,
                file.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT_SECS,
            ),
            drain_timeout: secs(
                flags.drain_timeout_secs,
                file.drain_timeout_secs,
                DEFAULT_DRAIN_TIMEOUT_SECS,
            ),
            unauthenticated_max: flags
                .max_unauthenticated
                .or(file.max_unauthenticated)
                .unwrap_or(DEFAULT_UNAUTHENTICATED_MAX),
            unauthenticated_per_source_max: flags
                .max_unauthenticated_per_source
                .or(file.max_unauthenticated_per_source)
                .unwrap_or(DEFAULT_UNAUTHENTICATED_PER_SOURCE_MAX),
            auth_deadline: secs(
                flags.auth_deadline_secs,
                file.auth_deadline_secs,
                DEFAULT_AUTH_DEADLINE_SECS,
            ),
            autoscale_sample: secs(
                flags.autoscale_sample_secs,
                file.autoscale_sample_secs,
                DEFAULT_AUTOSCALE_SAMPLE_SECS,
            ),
            node_lost_after: secs(
                flags.node_lost_after_secs,
                file.node_lost_after_secs,
                DEFAULT_NODE_LOST_AFTER_SECS,
            ),
            autoscale_min_interval_secs: flags
                .autoscale_min_interval_secs
                .or(file.autoscale_min_interval_secs)
                .unwrap_or(DEFAULT_AUTOSCALE_MIN_INTERVAL_SECS),
            schedule_min_interval_secs: flags
                .schedule_min_interval_secs
                .or(file.schedule_min_interval_secs)
                .unwrap_or(crate::domain::schedule::INTERVAL_SECS_MIN),
            tls_files: tls_cert.zip(tls_key),
            tls_half,
            plaintext: flags.plaintext.or(file.plaintext).unwrap_or_default(),
            console_session: Duration::from_secs(
                3600 * flags
                    .console_session_hours
                    .or(file.console_session_hours)
                    .unwrap_or(12)
                    .max(1),
            ),
            azure_listen: flags.azure_listen.or(file.azure_listen),
            azure_vm_sizes: if flags.azure_vm_sizes.is_empty() {
                file.azure_vm_sizes.unwrap_or_default()
            } else {
                flags.azure_vm_sizes
            },
            http_listen: (!(flags.no_http || file.no_http.unwrap_or(false))).then(|| {
                flags
                    .http_listen
                    .or(file.http_listen)
                    .unwrap_or_else(|| default_http_listen(&listen))
            }),
            listen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let file: ServerConfigFile = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nidle_timeout_secs = 5\nmax_connections = 7",
        )
        .unwrap();
        let flags = ServerFlags {
            max_connections: Some(3),
            ..ServerFlags::default()
        };
        let c = ServerConfig::resolve(flags, file);
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.connections_max, 3);
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(
            c.read_timeout,
            Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS)
        );
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(toml::from_str::<ServerConfigFile>("lisen = \"x\"").is_err());
    }
}
