//! The async Rust client: connect, sign, call, reconnect.
//!
//! One connection carries many calls at once: a writer task sends frames,
//! a reader task routes each reply to its waiting caller by call id. A
//! broken connection fails the calls waiting on it; the next call opens a
//! new one. Calls that were sent but not answered are *not* resent (the
//! server may have done them); resend them yourself, with the same client
//! request id where the request has one, and the server will not do the
//! work twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::api::auth::{sign, Challenge, Signed};
use crate::api::frame::{append_frame, FrameError};
use crate::api::{
    read_frame, ApiError, CallRef, ClientFrame, ClientFrameRef, Credential, EventView, Hello,
    Request, Response, ServerFrame, FRAME_BYTES_MAX, MAGIC, PROTOCOL_VERSION,
};
use crate::clock::{new_uuid, Clock, SystemClock};
use crate::codec;

/// How to reach the server and whose key to sign with.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub addr: String,
    pub credential: Credential,
    pub key: String,
    /// Shown in the server's logs.
    pub name: String,
    pub connect_timeout: Duration,
    /// Longest wait for one reply.
    pub call_timeout: Duration,
    /// How the server's certificate is trusted; None: plaintext, allowed
    /// only to this machine unless `insecure_plaintext`.
    pub trust: Option<crate::api::tls::Trust>,
    /// Plaintext to a server on another machine (keys and data in clear).
    pub insecure_plaintext: bool,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>, credential: Credential, key: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            credential,
            key: key.into(),
            name: format!("lote-client/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            trust: None,
            insecure_plaintext: false,
        }
    }

    /// The same, trusting the server's certificate as `trust` says.
    pub fn with_trust(mut self, trust: Option<crate::api::tls::Trust>) -> Self {
        self.trust = trust;
        self
    }
}

type BoxRead = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// A connected stream, over TLS when the transport says so, in halves.
async fn connect_stream(
    addr: &str,
    transport: &crate::api::tls::Transport,
) -> std::io::Result<(BoxRead, BoxWrite)> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match transport {
        crate::api::tls::Transport::Plain => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        crate::api::tls::Transport::Tls { config, name } => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = connector.connect(name.clone(), stream).await?;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the server refused the connection: {0}")]
    Refused(ApiError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error(
        "connection lost before the reply ({0}); the request may or may not have been carried out"
    )]
    Disconnected(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The server's error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) | ClientError::Refused(e) => Some(e),
            _ => None,
        }
    }

    /// Worth trying again shortly: the server is away, restarting or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Disconnected(_)
            | ClientError::Timeout(_) => true,
            ClientError::Api(a) | ClientError::Refused(a) => a.retryable(),
            ClientError::Protocol(_) => false,
        }
    }
}

enum Waiter {
    Call(oneshot::Sender<Result<Response, ApiError>>),
    Stream(mpsc::Sender<Result<EventView, ClientError>>),
}

type Waiters = Arc<Mutex<HashMap<u64, Waiter>>>;

struct Connection {
    /// From the server's welcome: every call on this connection signs it.
    challenge: Challenge,
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    alive: Arc<AtomicBool>,
}

/// A client of one server with one credential. Cheap to share (`Arc`);
/// calls from many tasks go out on the same connection.
pub struct Client {
    config: ClientConfig,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    next_id: AtomicU64,
    clock: SystemClock,
}

/// The hello frame (length prefix included) every connection starts with.
pub fn hello_frame(client: &str) -> Vec<u8> {
    let hello = ClientFrame::Hello(Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: client.to_string(),
    });
    let mut out = Vec::new();
    // A hello is a few bytes of plain data: it always encodes.
    append_frame(&hello, &mut out).expect("hello encodes");
    out
}

/// A signed call for `request` (length prefix included), for the
/// connection whose welcome gave `challenge`.
pub fn call_frame(
    id: u64,
    credential: &Credential,
    key: &str,
    timestamp: i64,
    challenge: &Challenge,
    request: &Request,
) -> Result<Vec<u8>, ClientError> {
    let body = codec::encode_message(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let bulk = request.bulk();
    let signed = Signed {
        body: &body,
        bulk_len: bulk.len() as u64,
    };
    let auth = sign(
        key,
        challenge,
        id,
        credential.clone(),
        timestamp,
        *new_uuid().as_bytes(),
        signed,
    );
    // Encoded in place after its length prefix (`append_frame`): an upload
    // chunk is copied once, into the frame.
    let call = ClientFrameRef::Call(CallRef {
        id,
        auth: &auth,
        body: &body,
        bulk,
    });
    let mut out = Vec::with_capacity(4 + body.len() + bulk.len() + 256);
    match append_frame(&call, &mut out) {
        Ok(()) => Ok(out),
        Err(FrameError::TooLarge { len, max }) => Err(ClientError::Protocol(format!(
            "the request is {len} bytes, over the {max}-byte frame limit; send it in smaller batches"
        ))),
        Err(e) => Err(ClientError::Protocol(e.to_string())),
    }
}

/// The connection's writer: sends queued frames until the queue closes or
/// the socket fails (then marks the connection dead).
async fn send_frames<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: W,
    mut out_rx: mpsc::Receiver<Vec<u8>>,
    alive: Arc<AtomicBool>,
) {
    // Small frames queued together go out in one write; a large
    // one (an upload chunk) goes out as it is, not copied first.
    const LARGE: usize = 64 * 1024;
    let mut batch = Vec::with_capacity(LARGE);
    let mut next = None;
    'frames: loop {
        let Some(frame) = next.take() else {
            match out_rx.recv().await {
                Some(f) => next = Some(f),
                None => break,
            }
            continue;
        };
        let out: &[u8] = if frame.len() >= LARGE {
            &frame
        } else {
            batch.clear();
            batch.extend_from_slice(&frame);
            while batch.len() < 256 * 1024 {
                match out_rx.try_recv() {
                    Ok(more) if more.len() >= LARGE => {
                        next = Some(more);
                        break;
                    }
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            &batch
        };
        if writer.write_all(out).await.is_err() {
            alive.store(false, Ordering::Release);
            break 'frames;
        }
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        Client {
            config,
            connection: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            clock: SystemClock,
        }
    }

    /// Connects now (otherwise the first call does), to surface a wrong
    /// address or a refused hello early.
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.live_connection().await.map(|_| ())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    async fn live_connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(self.open().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn open(&self) -> Result<Connection, ClientError> {
        let addr = &self.config.addr;
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.clone(),
            reason,
        };
        let transport = crate::api::tls::Transport::choose(
            addr,
            self.config.trust.as_ref(),
            self.config.insecure_plaintext,
        )
        .map_err(connect_err)?;
        let (reader, mut writer) = tokio::time::timeout(
            self.config.connect_timeout,
            connect_stream(addr, &transport),
        )
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
        let mut reader = tokio::io::BufReader::with_capacity(crate::api::READ_BUFFER_BYTES, reader);
        writer
            .write_all(&hello_frame(&self.config.name))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let welcome = tokio::time::timeout(
            self.config.connect_timeout,
            read_frame(&mut reader, FRAME_BYTES_MAX),
        )
        .await
        .map_err(|_| connect_err("no welcome from the server".into()))?
        .map_err(|e| connect_err(format!("during the handshake: {e}")))?;
        let challenge = match codec::decode_message::<ServerFrame>(&welcome) {
            Ok(ServerFrame::Welcome { challenge, .. }) => challenge,
            Ok(ServerFrame::Goodbye { error }) => return Err(ClientError::Refused(error)),
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
            Err(e) => return Err(ClientError::Protocol(format!("undecodable welcome: {e}"))),
        };

        let (out, out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let waiters: Waiters = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));

        tokio::spawn(send_frames(writer, out_rx, alive.clone()));

        let reader_waiters = waiters.clone();
        let reader_alive = alive.clone();
        tokio::spawn(async move {
            let why = loop {
                let body = match read_frame(&mut reader, FRAME_BYTES_MAX).await {
                    Ok(b) => b,
                    Err(e) => break e.to_string(),
                };
                let frame = match codec::decode_message::<ServerFrame>(&body) {
                    Ok(f) => f,
                    Err(e) => break format!("undecodable frame from the server: {e}"),
                };
                match frame {
                    ServerFrame::Reply { id, result } => {
                        let waiter = {
                            let mut w = lock(&reader_waiters);
                            match (w.remove(&id), &result) {
                                // A started subscription stays registered.
                                (Some(Waiter::Stream(s)), Ok(Response::Subscribed { .. })) => {
                                    w.insert(id, Waiter::Stream(s));
                                    None
                                }
                                (other, _) => other,
                            }
                        };
                        match waiter {
                            Some(Waiter::Call(tx)) => {
                                let _ = tx.send(result);
                            }
                            Some(Waiter::Stream(tx)) => {
                                if let Err(e) = result {
                                    let _ = tx.send(Err(ClientError::Api(e))).await;
                                }
                            }
                            None => {}
                        }
                    }
                    ServerFrame::Event { id, event } => {
                        let tx = match lock(&reader_waiters).get(&id) {
                            Some(Waiter::Stream(tx)) => Some(tx.clone()),
                            _ => None,
                        };
                        if let Some(tx) = tx {
                            if tx.send(Ok(event)).await.is_err() {
                                lock(&reader_waiters).remove(&id);
                            }
                        }
                    }
                    ServerFrame::Goodbye { error } => break error.to_string(),
                    ServerFrame::Welcome { .. } => break "a second welcome".to_string(),
                }
            };
            reader_alive.store(false, Ordering::Release);
            let left: Vec<Waiter> = lock(&reader_waiters).drain().map(|(_, w)| w).collect();
            for waiter in left {
                match waiter {
                    // Dropping the sender tells the caller.
                    Waiter::Call(_) => {}
                    Waiter::Stream(tx) => {
                        let _ = tx.send(Err(ClientError::Disconnected(why.clone()))).await;
                    }
                }
            }
        });
        Ok(Connection {
            challenge,
            out,
            waiters,
            alive,
        })
    }

    fn frame(
        &self,
        id: u64,
        connection: &Connection,
        request: &Request,
    ) -> Result<Vec<u8>, ClientError> {
        call_frame(
            id,
            &self.config.credential,
            &self.config.key,
            self.clock.now().as_micros(),
            &connection.challenge,
            request,
        )
    }

    /// Sends one request and waits for its reply.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = self.live_connection().await?;
        let frame = self.frame(id, &connection, request)?;
        let (tx, rx) = oneshot::channel();
        lock(&connection.waiters).insert(id, Waiter::Call(tx));
        if connection.out.send(frame).await.is_err() {
            lock(&connection.waiters).remove(&id);
            return Err(ClientError::Disconnected("the connection closed".into()));
        }
        match tokio::time::timeout(self.config.call_timeout, rx).await {
            Err(_) => {
                lock(&connection.waiters).remove(&id);
                Err(ClientError::Timeout(self.config.call_timeout))
            }
            Ok(Err(_)) => Err(ClientError::Disconnected(
                "the server closed the connection".into(),
            )),
            Ok(Ok(result)) => result.map_err(ClientError::Api),
        }
    }

    /// Streams events from log position `from` (0: only new ones). The
    /// receiver ends with an error item when the connection is lost.
    pub async fn tail(
        &self,
        from: u64,
    ) -> Result<mpsc::Receiver<Result<EventView, ClientError>>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = self.live_connection().await?;
        let frame = self.frame(id, &connection, &Request::TailEvents { from })?;
        let (tx, rx) = mpsc::channel(1024);
        lock(&connection.waiters).insert(id, Waiter::Stream(tx));
        if connection.out.send(frame).await.is_err() {
            lock(&connection.waiters).remove(&id);
            return Err(ClientError::Disconnected("the connection closed".into()));
        }
        Ok(rx)
    }
}

fn lock(waiters: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
    // A panic while holding this lock cannot leave the map inconsistent
    // (single inserts and removes), so a poisoned lock is still usable.
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}
