//! The server on a thread of this process: the embedded default (`lote
//! demo`), the benchmarks and tests use it.

use std::net::SocketAddr;

use super::{run, ServerConfig, ServerError, ADMIN_KEY_FILE};
use crate::private_file::FileError;

/// A server running on a thread of this process: the embedded default
/// (`lote demo`) and the benchmarks use it.
pub struct Embedded {
    pub addr: SocketAddr,
    /// Where its console is served, if it serves one.
    pub console: Option<SocketAddr>,
    /// The admin key it uses (from its data directory).
    pub admin_key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl Embedded {
    /// Starts `run` on its own thread and actix system; returns once the
    /// port is bound, or with the error that kept it from starting.
    pub fn start(config: ServerConfig) -> Result<Embedded, ServerError> {
        let data_dir = config.data_dir.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(run(
                config,
                |s| {
                    let _ = addr_tx.send((s.addr, s.console));
                },
                async move {
                    let _ = stop_rx.await;
                },
            ))
        });
        let Ok((addr, console)) = addr_rx.recv() else {
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => ServerError::Config("the in-process server did not start".into()),
            });
        };
        let key_path = data_dir.join(ADMIN_KEY_FILE);
        let admin_key = std::fs::read_to_string(&key_path)
            .map_err(FileError::new("admin key file", &key_path))?
            .trim()
            .to_string();
        Ok(Embedded {
            addr,
            console,
            admin_key,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Drains and stops the server; returns how it ended.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(ServerError::Config("the in-process server panicked".into())),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
