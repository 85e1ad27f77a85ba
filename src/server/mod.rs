//! The server: a TCP listener in front of the actors.
//!
//! Everything runs on the actix system's thread: connections are local
//! tasks, calls are local tasks, entity actors live on the same arbiter.
//! One thread keeps the hot path free of locks and cross-thread wake-ups;
//! the log's writer threads do the slow part (fsync) off it.

mod azure;
mod blobs;
mod config;
mod connection;
mod console;
mod embedded;
mod gate;
mod http_serve;
mod metrics;
mod service;
pub mod supervisors;
pub mod tls;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub use azure::API_VERSION as AZURE_API_VERSION;
pub use config::{ServerConfig, ServerConfigFile, ServerFlags};
pub use embedded::Embedded;
pub use service::Service;

use crate::actors::{Core, CoreConfig};
use crate::clock::{Clock, SystemClock};
use crate::private_file::{write_owner_only, FileError};
use crate::store::{EventStore, StoreError, StoreOptions};

/// Name of the file, in the data directory, holding the admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Name of the file, in the data directory, holding the server's own
/// secret (join tokens and node credentials are derived from it).
pub const SERVER_SECRET_FILE: &str = "server.secret";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    File(#[from] FileError),
    #[error("{0}")]
    Config(String),
}

/// Where the admin key came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKeySource {
    Configured,
    Created(PathBuf),
    Existing(PathBuf),
}

/// Reads a secret file, or creates it with a fresh key, readable by the
/// owner only.
fn secret_file(path: &Path, what: &'static str) -> Result<(String, bool), ServerError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
        Ok(_) => {
            return Err(ServerError::Config(format!(
                "{what} {} is empty; delete it to have a new one made",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::new(what, path)(e).into()),
    }
    let key = crate::clock::new_key();
    write_owner_only(path, &format!("{key}\n"), what, false)?;
    Ok((key, true))
}

/// A started server: its address, and how to stop it.
pub struct Started {
    pub addr: SocketAddr,
    pub admin_key: AdminKeySource,
    /// The TLS certificate's fingerprint and file.
    pub tls_fingerprint: String,
    pub tls_certificate: PathBuf,
    pub plaintext: tls::Plaintext,
    /// Where the console, /metrics and the health checks are served.
    pub console: Option<SocketAddr>,
    /// Where the Azure Batch REST API is served (`--azure-listen`).
    pub azure: Option<SocketAddr>,
}

/// Starts the console and the Azure gateway on their listeners, if
/// bound; their addresses.
fn start_http(
    (console, azure): (Option<console::Listening>, Option<azure::Listening>),
    service: &Rc<Service>,
    tls: &Arc<tls::ServerTls>,
    session: Duration,
    stop: &watch::Receiver<bool>,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let console =
        console.map(|l| console::start(l, service.clone(), tls.clone(), session, stop.clone()));
    let azure = azure.map(|l| azure::start(l, service.clone(), tls.clone(), stop.clone()));
    (console, azure)
}

/// Runs the server until `shutdown` resolves, then drains: stops
/// accepting, lets calls in flight finish (up to the drain timeout), ends
/// subscriptions, flushes the log. Must run inside an actix system.
/// `on_started` is called once the port is bound. A start that fails
/// (port taken, store unreadable) leaves no data directory it created.
pub async fn run(
    config: ServerConfig,
    on_started: impl FnOnce(&Started),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let data_dir = config.data_dir.clone();
    let created = !data_dir.exists();
    let listening = Cell::new(false);
    let result = serve(
        config,
        |s| {
            listening.set(true);
            on_started(s)
        },
        shutdown,
    )
    .await;
    if result.is_err() && created && !listening.get() {
        if let Err(e) = std::fs::remove_dir_all(&data_dir) {
            tracing::warn!(dir = %data_dir.display(), error = %e, "cannot remove the data directory of a failed start");
        }
    }
    result
}

/// The data directory as tasks of local pools may see it: they pass
/// through it to the nodes directory (0711) and can open nothing else,
/// also what an older version left readable.
fn close_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let data = &config.data_dir;
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(FileError::new("data directory", path))
    };
    let nodes_inside = config.nodes_dir.parent() == Some(data.as_path());
    set(data, if nodes_inside { 0o711 } else { 0o700 })?;
    for entry in std::fs::read_dir(data).map_err(FileError::new("data directory", data))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path == config.nodes_dir {
            continue;
        }
        let dir = entry.file_type().is_ok_and(|t| t.is_dir());
        set(&path, if dir { 0o700 } else { 0o600 })?;
    }
    Ok(())
}

/// The listening socket, with a hint for the usual reasons it cannot be.
async fn bind(listen: &str, flag: &'static str) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            hint: match (source.kind(), flag) {
                (std::io::ErrorKind::AddrInUse, "--http-listen") => {
                    "; the port is taken (another lote server?). Pick another with --http-listen, e.g. 127.0.0.1:0 for any free port, or serve no console with --no-http"
                }
                (std::io::ErrorKind::AddrInUse, _) => {
                    "; the port is taken (another lote server?). Pick another with --listen, e.g. --listen 127.0.0.1:0 for any free port"
                }
                (std::io::ErrorKind::PermissionDenied, _) => {
                    "; ports below 1024 need privileges; use a higher one"
                }
                _ => "",
            },
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen.to_string(),
        source,
        hint: "",
    })?;
    Ok((listener, addr))
}

/// What the server sets for its whole process before it writes anything.
fn process_settings() {
    // Everything the server writes is its own: the log (account keys are
    // in it), the blobs, the keys. Tasks of local pools run as other users
    // and must not read any of it.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o077) };
    // No transparent huge pages for the server's own memory: the allocator
    // hands freed pages back and takes fresh ones all the time, and with
    // THP each fresh page was a 2 MiB huge page the kernel zeroed whole.
    // That zeroing was 39% of the server's CPU in a dispatch profile, and
    // dispatch ran 13,900 - 21,600 tasks/s with it, 18,900 - 20,300
    // without, at any queue depth. Local agents get the machine's setting back
    // (`supervisors::provider`), so tasks keep it.
    // SAFETY: PR_SET_THP_DISABLE takes one integer and changes only this
    // process's memory policy.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::debug!("transparent huge pages left as the machine sets them");
    }
}

async fn serve(
    config: ServerConfig,
    on_started: impl FnOnce(&Started),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    process_settings();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(FileError::new("data directory", &config.data_dir))?;
    close_data_dir(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = EventStore::open(
        &config.data_dir,
        StoreOptions {
            durability: config.durability,
            ..StoreOptions::default()
        },
        clock.clone(),
    )?;
    let (admin_key, admin_source) = match &config.admin_key {
        Some(key) => (key.clone(), AdminKeySource::Configured),
        None => {
            let path = config.data_dir.join(ADMIN_KEY_FILE);
            let (key, created) = secret_file(&path, "admin key file")?;
            let source = if created {
                AdminKeySource::Created(path)
            } else {
                AdminKeySource::Existing(path)
            };
            (key, source)
        }
    };
    let (server_secret, _) = secret_file(
        &config.data_dir.join(SERVER_SECRET_FILE),
        "server secret file",
    )?;
    let (listener, addr) = bind(&config.listen, "--listen").await?;
    let console = console::bind(config.http_listen.as_deref()).await?;
    let azure = azure::bind(config.azure_listen.as_deref(), &config.azure_vm_sizes).await?;
    let server_tls = Arc::new(tls::ServerTls::load_or_create(
        &config.data_dir,
        config.tls_files.clone(),
        tls::certificate_names(&addr),
        config.plaintext,
    )?);
    let blob_store = crate::blob::local::LocalBlobStore::open(&config.data_dir, config.durability)
        .map_err(|e| ServerError::Config(format!("cannot open the blob store: {e}")))?;
    let blobs = Rc::new(blobs::Blobs::new(Arc::new(crate::blob::local::Shared(
        blob_store,
    ))));
    let core = Core::new(store.clone(), clock.clone(), CoreConfig::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisors = supervisors::Supervisors::start(
        &core,
        supervisors::SupervisorSettings {
            nodes_dir: config.nodes_dir.clone(),
            server_addr: addr.to_string(),
            tls_fingerprint: (server_tls.plaintext == tls::Plaintext::Never)
                .then(|| server_tls.fingerprint.clone()),
            schedule_min_interval_secs: config.schedule_min_interval_secs,
            server_secret: server_secret.clone(),
            node_lost_after: config.node_lost_after,
            autoscale: supervisors::autoscale::AutoscaleSettings {
                sample_period: config.autoscale_sample,
                min_interval_secs: config.autoscale_min_interval_secs,
            },
        },
        stop_rx.clone(),
    );
    let service = Rc::new(Service::new(
        core,
        clock,
        admin_key,
        server_secret,
        supervisors,
        blobs,
        server_tls.fingerprint.clone(),
    ));
    let (console_addr, azure_addr) = start_http(
        (console, azure),
        &service,
        &server_tls,
        config.console_session,
        &stop_rx,
    );
    let limits = Rc::new(connection::Limits {
        tls: Some(server_tls.clone()),
        ..connection::Limits::from(&config)
    });
    let open = Rc::new(OpenConnections::default());
    on_started(&Started {
        addr,
        admin_key: admin_source,
        tls_fingerprint: server_tls.fingerprint.clone(),
        tls_certificate: server_tls.certificate.clone(),
        plaintext: server_tls.plaintext,
        console: console_addr,
        azure: azure_addr,
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "lote server listening");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // little instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let guard = open.enter();
                let over_cap = guard.count > limits.connections_max;
                let service = service.clone();
                let limits = limits.clone();
                let stop = stop_rx.clone();
                tokio::task::spawn_local(async move {
                    connection::serve(stream, peer, service, limits, stop, over_cap).await;
                    drop(guard);
                });
            }
        }
    }
    tracing::info!("shutting down: draining connections");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.drain_timeout, open.all_closed()).await;
    if drained.is_err() {
        tracing::warn!(
            still_open = open.count.get(),
            "drain timeout passed; closing the remaining connections"
        );
    }
    close_log(&store).await?;
    tracing::info!("log flushed; bye");
    Ok(())
}

/// A clean stop's end: every append durable, then the memtables written
/// out, so the next start has no write-ahead log to replay before it can
/// place (`EventStore::flush_memtables_blocking`).
async fn close_log(store: &EventStore) -> Result<(), ServerError> {
    store.flush().await?;
    let tables = store.clone();
    match tokio::task::spawn_blocking(move || tables.flush_memtables_blocking()).await {
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "memtables not written out; the next start replays the write-ahead log"
        ),
        Err(e) => tracing::warn!(error = %e, "memtables not written out"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

/// Counts open connections, and wakes whoever waits for none.
#[derive(Default)]
struct OpenConnections {
    count: Cell<usize>,
    none_left: Notify,
}

struct ConnectionGuard {
    open: Rc<OpenConnections>,
    count: usize,
}

impl OpenConnections {
    fn enter(self: &Rc<Self>) -> ConnectionGuard {
        let count = self.count.get() + 1;
        self.count.set(count);
        ConnectionGuard {
            open: self.clone(),
            count,
        }
    }

    async fn all_closed(&self) {
        while self.count.get() > 0 {
            self.none_left.notified().await;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let left = self.open.count.get() - 1;
        self.open.count.set(left);
        if left == 0 {
            self.open.none_left.notify_waiters();
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
