//! Runs the real `lote server` binary on 127.0.0.1:0 for end-to-end tests,
//! and speaks raw frames to it where a test must send what no client would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lote::api::{ApiError, ClientFrame, Credential, Request, Response, ServerFrame};
use lote::client::{Client, ClientConfig};
use lote::codec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct ServerProcess {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    pub admin_key: String,
    /// Keeps a temporary data directory alive while the server runs.
    _temp: Option<tempfile::TempDir>,
    /// Local agents outlive this process (it crashed; another takes over).
    handed_over: bool,
    /// How `admin()` and `client()` trust the server; None: plaintext
    /// (loopback).
    pub trust: Option<lote::api::tls::Trust>,
    /// The console's address (`--http-listen`), if it serves one.
    pub console: Option<String>,
    /// The Azure Batch gateway's address (`--azure-listen`), if any.
    pub azure: Option<String>,
}

pub fn lote_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lote")
}

impl ServerProcess {
    /// The server's resident memory, from the kernel, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status")
            * 1024
    }

    /// A server on a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Self {
        let temp = open_tempdir();
        let mut server = Self::start_in(temp.path(), extra).unwrap();
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir`; Err(stderr) if it exits instead of listening.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Result<Self, String> {
        let mut cmd = Command::new(lote_bin());
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("LOTE_ADMIN_KEY")
            .env("LOTE_LOG", "warn")
            .stderr(Stdio::piped());
        Self::spawn(cmd, data_dir)
    }

    /// A server from a prepared command (which must print its address).
    pub fn from_command(cmd: Command, data_dir: &Path) -> Self {
        Self::spawn(cmd, data_dir).unwrap()
    }

    fn spawn(mut cmd: Command, data_dir: &Path) -> Result<Self, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lote server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let addr = match first {
            Some(Ok(line)) if line.starts_with("lote server listening on ") => line
                .trim_start_matches("lote server listening on ")
                .to_string(),
            _ => {
                let out = child.wait_with_output().unwrap();
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        };
        // The start-up lines end with where the console is (or that there
        // is none).
        let mut console = None;
        let mut azure = None;
        for line in lines.by_ref().take(8).map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("azure batch api on http://") {
                azure = rest.split(' ').next().map(str::to_string);
            }
            if let Some(rest) = line.strip_prefix("console on http://") {
                console = rest.split('/').next().map(str::to_string);
                break;
            }
            if line.starts_with("no console") {
                break;
            }
        }
        // Keep draining stdout so later prints never block the server.
        std::thread::spawn(move || for _ in lines {});
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        Ok(ServerProcess {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            admin_key,
            _temp: None,
            handed_over: false,
            trust: None,
            console,
            azure,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait (up to 30 s) for a clean exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no drain, no flush), then a new server on the same data
    /// directory and address, so local agents, which keep running, find
    /// it again.
    pub fn crash_restart(self, extra: &[&str]) -> ServerProcess {
        self.crash_restart_after(Duration::ZERO, extra, || {})
    }

    /// SIGKILL, then `during` runs while the server stays down for `down`,
    /// then the restart (as [`crash_restart`](Self::crash_restart)).
    pub fn crash_restart_after(
        mut self,
        down: Duration,
        extra: &[&str],
        during: impl FnOnce(),
    ) -> ServerProcess {
        let temp = self.take_temp();
        let mut child = self.child.take().expect("server running");
        let _ = child.kill();
        let _ = child.wait();
        self.handed_over = true;
        std::thread::sleep(down);
        during();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut again = loop {
            let mut cmd = Command::new(lote_bin());
            cmd.args(["server", "--listen", &self.addr, "--data-dir"])
                .arg(&self.data_dir)
                .args(extra)
                .env_remove("LOTE_ADMIN_KEY")
                .env("LOTE_LOG", "warn")
                .stderr(Stdio::piped());
            match Self::spawn(cmd, &self.data_dir) {
                Ok(s) => break s,
                // The port or the data directory's lock is not free yet.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restart after a crash failed: {e}"),
            }
        };
        again._temp = temp;
        again
    }

    /// Keeps the data directory after the process is gone.
    pub fn take_temp(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }

    pub fn admin(&self) -> Client {
        self.client(Credential::Admin, &self.admin_key.clone())
    }

    pub fn client(&self, credential: Credential, key: &str) -> Client {
        Client::new(
            ClientConfig::new(self.addr.clone(), credential, key).with_trust(self.trust.clone()),
        )
    }

    /// The fingerprint of the certificate the server made at first start.
    pub fn tls_fingerprint(&self) -> String {
        lote::server::tls::certificate_fingerprint(&self.data_dir.join("tls/cert.pem")).unwrap()
    }

    /// From now on `admin()` and `client()` reach it over TLS, pinned.
    pub fn pin_tls(&mut self) {
        let fp = lote::api::tls::parse_fingerprint(&self.tls_fingerprint()).unwrap();
        self.trust = Some(lote::api::tls::Trust::Fingerprint(fp));
    }

    /// Creates an account; returns its client (primary key) and both keys.
    pub async fn account(&self, name: &str) -> (Client, String, String) {
        let admin = self.admin();
        let account = lote::types::AccountName::new(name).unwrap();
        admin
            .call(&Request::CreateAccount {
                name: account.clone(),
                request_id: None,
            })
            .await
            .unwrap();
        let Response::Keys {
            primary, secondary, ..
        } = admin
            .call(&Request::ShowKeys {
                name: account.clone(),
            })
            .await
            .unwrap()
        else {
            panic!("keys expected")
        };
        let client = self.client(Credential::Account { account }, &primary);
        (client, primary, secondary)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.handed_over {
            stop_local_agents(&self.data_dir);
        }
    }
}

/// Local pools' agents are detached from the server on purpose (they
/// outlive a restart); a test must still leave nothing running. SIGTERM
/// makes each agent kill its tasks' process groups before it exits.
pub fn stop_local_agents(data_dir: &Path) {
    fn walk(dir: &Path, pids: &mut Vec<i32>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("tasks") {
                    walk(&path, pids);
                }
            } else if path.file_name().is_some_and(|n| n == "agent.pid") {
                if let Ok(pid) = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .parse()
                {
                    pids.push(pid);
                }
            }
        }
    }
    let mut pids = Vec::new();
    walk(&data_dir.join("nodes"), &mut pids);
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// A raw connection: bytes in, frames out.
pub struct Raw {
    pub stream: TcpStream,
    /// The challenge of this connection's welcome (zeros before it).
    pub challenge: [u8; 16],
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            challenge: [0; 16],
        }
    }

    /// Connects and completes the hello.
    pub async fn ready(addr: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&lote::client::hello_frame("raw-test")).await;
        match raw.frame().await {
            Some(ServerFrame::Welcome { challenge, .. }) => {
                raw.challenge = challenge;
                raw
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed: that is for the reads to see.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or None once the server closed (10 s at most).
    pub async fn frame(&mut self) -> Option<ServerFrame> {
        let read = async {
            let mut prefix = [0u8; 4];
            self.stream.read_exact(&mut prefix).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(codec::decode_message::<ServerFrame>(&body).expect("server frames decode"))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("server answered within 10s")
    }

    /// Sends a frame and returns the reply to it, or the goodbye.
    pub async fn exchange(&mut self, frame: &[u8]) -> Result<Response, ApiError> {
        self.send(frame).await;
        match self.frame().await {
            Some(ServerFrame::Reply { result, .. }) => result,
            Some(ServerFrame::Goodbye { error }) => Err(error),
            Some(other) => panic!("unexpected {other:?}"),
            None => Err(ApiError::new(
                lote::api::ErrorKind::Internal,
                "connection closed without a word",
            )),
        }
    }

    /// Whether the server closed the connection (reads EOF) within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// Frames a message body (adds the length prefix).
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The current time as the server reads it, in microseconds.
pub fn now_micros() -> i64 {
    use lote::clock::Clock;
    lote::clock::SystemClock.now().as_micros()
}

pub fn encode_frame(frame: &ClientFrame) -> Vec<u8> {
    framed(&codec::encode_message(frame).unwrap())
}

/// The job's state, as its owner sees it.
pub async fn show_job(
    client: &Client,
    job: &str,
) -> lote::domain::Versioned<lote::domain::job::Job> {
    let job = lote::types::JobId::new(job).unwrap();
    match client.call(&Request::ShowJob { job }).await.unwrap() {
        Response::Job(j) => j,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// The caller's pools.
pub async fn list_pools(client: &Client) -> Vec<lote::domain::Versioned<lote::domain::pool::Pool>> {
    match client.call(&Request::ListPools).await.unwrap() {
        Response::Pools(p) => p,
        other => panic!("expected pools, got {other:?}"),
    }
}

/// The rejection code of a failed call.
pub fn rejection(
    result: Result<Response, lote::client::ClientError>,
) -> Option<lote::domain::RejectionCode> {
    result.err().and_then(|e| e.api().and_then(|a| a.rejection))
}

/// The error kind of a failed call.
pub fn error_kind(
    result: Result<Response, lote::client::ClientError>,
) -> Option<lote::api::ErrorKind> {
    result.err().and_then(|e| e.api().map(|a| a.kind))
}

impl ServerProcess {
    /// Stops with SIGTERM (asserting a clean exit) and starts again on the
    /// same data directory; the temporary directory moves to the new one.
    pub fn restart(self) -> ServerProcess {
        self.restart_with(&[])
    }

    /// [`restart`](Self::restart) with these flags.
    pub fn restart_with(mut self, extra: &[&str]) -> ServerProcess {
        let temp = self.take_temp();
        assert!(self.terminate().success());
        // A clean stop writes the memtables out: the next start has no
        // write-ahead log to replay before it places anything.
        let to_replay: u64 = std::fs::read_dir(&self.data_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(to_replay, 0, "a clean stop left write-ahead log to replay");
        let mut again = ServerProcess::start_in(&self.data_dir, extra).unwrap();
        again._temp = temp;
        again
    }
}

/// A temporary directory that tasks can enter and write: an agent running
/// as root runs tasks as the pool's unprivileged user, which a private
/// (0700) directory would shut out of the node directories and markers
/// below it.
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}
