//! One client connection: handshake, then calls in flight concurrently.
//!
//! A reader loop takes frames off the socket; each call runs as its own
//! local task; a writer task owns the socket's write half and sends what
//! the calls answer, in the order they finish. A bad frame gets a goodbye
//! naming the problem and closes this connection only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{ServerConfig, Service};
use crate::api::frame::frame_bytes;
use crate::api::{
    ApiError, ClientFrame, ErrorKind, ServerFrame, FRAME_BYTES_MAX, MAGIC, PROTOCOL_VERSION,
    READ_BUFFER_BYTES,
};
use crate::codec;

/// Frames queued for the writer; past this, calls wait to reply, which in
/// turn stops the reader taking more (backpressure on a slow reader).
const OUTBOX_FRAMES_MAX: usize = 1024;

pub(super) struct Limits {
    pub connections_max: usize,
    pub calls_in_flight_max: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Limits {
            connections_max: c.connections_max,
            calls_in_flight_max: c.calls_in_flight_max,
            read_timeout: c.read_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// Why the reader stopped.
enum ReadEnd {
    Closed,
    /// Nothing arrived for the idle period (nothing was consumed either:
    /// waiting again is safe).
    Idle,
    Goodbye(ApiError),
}

/// Reads one frame: waits up to `idle` for it to start, then up to `read`
/// for all of it. The length is checked before the body is allocated.
async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
    read: Duration,
) -> Result<Vec<u8>, ReadEnd> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(idle, reader.read(&mut prefix[..1])).await {
        Err(_) => return Err(ReadEnd::Idle),
        Ok(Ok(0)) | Ok(Err(_)) => return Err(ReadEnd::Closed),
        Ok(Ok(_)) => {}
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 || len > FRAME_BYTES_MAX {
            return Ok(Err(len));
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(Ok(body))
    };
    match tokio::time::timeout(read, rest).await {
        Err(_) => Err(ReadEnd::Goodbye(ApiError::new(
            ErrorKind::Timeout,
            format!(
                "a frame started but did not arrive whole within {}s; closing",
                read.as_secs()
            ),
        ))),
        Ok(Err(_)) => Err(ReadEnd::Closed),
        Ok(Ok(Err(len))) => Err(ReadEnd::Goodbye(ApiError::new(
            ErrorKind::TooLarge,
            format!("frame length {len} is outside 1..={FRAME_BYTES_MAX} bytes"),
        ))),
        Ok(Ok(Ok(body))) => Ok(body),
    }
}

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    service: Rc<Service>,
    limits: Rc<Limits>,
    stop: watch::Receiver<bool>,
    over_cap: bool,
) {
    let (reader, writer) = stream.into_split();
    // Cancelling a read of it (idle timeout) keeps what it buffered.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (tx, rx) = mpsc::channel::<ServerFrame>(OUTBOX_FRAMES_MAX);
    let writer_task = tokio::task::spawn_local(write_frames(writer, rx));
    let goodbye = |error: ApiError| ServerFrame::Goodbye { error };
    if over_cap {
        let _ = tx
            .send(goodbye(ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "the server has its maximum of {} connections; try again shortly",
                    limits.connections_max
                ),
            )))
            .await;
        drop(tx);
        let _ = writer_task.await;
        return;
    }
    let end = match handshake(&mut reader, &limits, peer).await {
        Ok(()) => {
            let _ = tx
                .send(ServerFrame::Welcome {
                    version: PROTOCOL_VERSION,
                    server: format!("lote/{}", env!("CARGO_PKG_VERSION")),
                    frame_bytes_max: FRAME_BYTES_MAX as u32,
                })
                .await;
            serve_calls(&mut reader, &service, &limits, &tx, stop).await
        }
        Err(refusal) => refusal,
    };
    if let Some(error) = end {
        tracing::debug!(%peer, error = %error, "closing connection");
        let _ = tx.send(goodbye(error)).await;
    }
    drop(tx);
    let _ = writer_task.await;
}

/// Reads and checks the client's hello: `Err(None)` if the peer left
/// without one, `Err(Some(refusal))` to say goodbye with.
async fn handshake(
    reader: &mut BufReader<OwnedReadHalf>,
    limits: &Limits,
    peer: SocketAddr,
) -> Result<(), Option<ApiError>> {
    let hello = match next_frame(reader, limits.read_timeout, limits.read_timeout).await {
        Ok(body) => codec::decode_message::<ClientFrame>(&body)
            .map_err(|e| ApiError::new(ErrorKind::Malformed, format!("not a lote hello: {e}"))),
        Err(ReadEnd::Closed) => return Err(None),
        Err(ReadEnd::Goodbye(e)) => Err(e),
        Err(ReadEnd::Idle) => Err(ApiError::new(
            ErrorKind::Timeout,
            format!(
                "no hello within {}s; closing",
                limits.read_timeout.as_secs()
            ),
        )),
    };
    let refusal = match hello {
        Ok(ClientFrame::Hello(h)) if h.magic != MAGIC => Some(ApiError::new(
            ErrorKind::Malformed,
            "not a lote client (bad magic)",
        )),
        Ok(ClientFrame::Hello(h)) if h.version != PROTOCOL_VERSION => Some(ApiError::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION}, the client {}; upgrade the older side",
                h.version
            ),
        )),
        Ok(ClientFrame::Hello(h)) => {
            tracing::debug!(%peer, client = %h.client, "connected");
            None
        }
        Ok(_) => Some(ApiError::new(
            ErrorKind::HandshakeRequired,
            "the first frame must be a hello",
        )),
        Err(e) => Some(e),
    };
    match refusal {
        Some(error) => Err(Some(error)),
        None => Ok(()),
    }
}

/// Reads calls until the peer leaves, misbehaves, idles or the server
/// stops; each call runs as a task of its own. Returns the goodbye to
/// send, once every call in flight has replied.
async fn serve_calls(
    reader: &mut BufReader<OwnedReadHalf>,
    service: &Rc<Service>,
    limits: &Limits,
    tx: &mpsc::Sender<ServerFrame>,
    mut stop: watch::Receiver<bool>,
) -> Option<ApiError> {
    let in_flight = std::sync::Arc::new(Semaphore::new(limits.calls_in_flight_max));
    let subscriptions: Rc<RefCell<HashMap<u64, tokio::task::AbortHandle>>> = Rc::default();
    // A call that found its own body malformed ends the connection here.
    let fatal: Rc<RefCell<Option<ApiError>>> = Rc::default();
    let fatal_set = Rc::new(tokio::sync::Notify::new());
    let end = loop {
        let frame = tokio::select! {
            _ = fatal_set.notified() => break fatal.borrow_mut().take(),
            frame = next_frame(reader, limits.idle_timeout, limits.read_timeout) => frame,
            _ = stop.wait_for(|s| *s) => break Some(ApiError::new(
                ErrorKind::ShuttingDown,
                "the server is shutting down; calls in flight were finished",
            )),
        };
        let body = match frame {
            Ok(body) => body,
            Err(ReadEnd::Closed) => break None,
            Err(ReadEnd::Goodbye(e)) => break Some(e),
            // Quiet is not idle while calls run or events stream out.
            Err(ReadEnd::Idle)
                if !subscriptions.borrow().is_empty()
                    || in_flight.available_permits() < limits.calls_in_flight_max =>
            {
                continue
            }
            Err(ReadEnd::Idle) => {
                break Some(ApiError::new(
                    ErrorKind::Timeout,
                    format!("no request for {}s; closing", limits.idle_timeout.as_secs()),
                ))
            }
        };
        match codec::decode_message::<ClientFrame>(&body) {
            Err(e) => {
                break Some(ApiError::new(
                    ErrorKind::Malformed,
                    format!("undecodable frame: {e}"),
                ))
            }
            Ok(ClientFrame::Hello(_)) => {
                break Some(ApiError::new(
                    ErrorKind::HandshakeRequired,
                    "a second hello on one connection",
                ))
            }
            Ok(ClientFrame::Cancel { id }) => {
                if let Some(handle) = subscriptions.borrow_mut().remove(&id) {
                    handle.abort();
                }
            }
            Ok(ClientFrame::Call(call)) => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    let _ = tx
                        .send(ServerFrame::Reply {
                            id: call.id,
                            result: Err(ApiError::new(
                                ErrorKind::Overloaded,
                                format!(
                                    "{} calls already in flight on this connection; wait for replies",
                                    limits.calls_in_flight_max
                                ),
                            )),
                        })
                        .await;
                    continue;
                };
                let service = service.clone();
                let tx = tx.clone();
                let subs = subscriptions.clone();
                let stop = stop.clone();
                let fatal = fatal.clone();
                let fatal_set = fatal_set.clone();
                tokio::task::spawn_local(async move {
                    let id = call.id;
                    let outcome = service.call(call, &tx, stop).await;
                    match outcome {
                        super::service::CallOutcome::Reply {
                            result,
                            fatal: None,
                        } => {
                            let _ = tx.send(ServerFrame::Reply { id, result }).await;
                        }
                        super::service::CallOutcome::Reply {
                            result,
                            fatal: Some(error),
                        } => {
                            let _ = tx.send(ServerFrame::Reply { id, result }).await;
                            *fatal.borrow_mut() = Some(error);
                            fatal_set.notify_one();
                        }
                        super::service::CallOutcome::Subscription(handle) => {
                            subs.borrow_mut().insert(id, handle);
                        }
                    }
                    drop(permit);
                });
            }
        }
    };
    // Let the calls in flight finish and reply before saying goodbye.
    let _ = in_flight
        .acquire_many(limits.calls_in_flight_max as u32)
        .await;
    for (_, handle) in subscriptions.borrow_mut().drain() {
        handle.abort();
    }
    end
}

/// Encodes and writes the connection's outgoing frames, gathering
/// whatever is queued into one write; ends after a goodbye.
async fn write_frames(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<ServerFrame>) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut said_goodbye = false;
    while let Some(first) = rx.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let goodbye = matches!(frame, ServerFrame::Goodbye { .. });
            said_goodbye |= goodbye;
            match codec::encode_message(&frame) {
                Ok(body) if body.len() <= FRAME_BYTES_MAX => frame_bytes(&body, &mut out),
                Ok(body) => {
                    // A reply that does not fit a frame becomes an error
                    // reply, so the caller is not left waiting.
                    tracing::warn!(bytes = body.len(), "reply exceeds the frame limit");
                    if let ServerFrame::Reply { id, .. } = frame {
                        let error = ServerFrame::Reply {
                            id,
                            result: Err(ApiError::new(
                                ErrorKind::TooLarge,
                                "the reply is larger than a frame; ask for less (use --limit / paging)",
                            )),
                        };
                        if let Ok(body) = codec::encode_message(&error) {
                            frame_bytes(&body, &mut out);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a reply"),
            }
            if goodbye || out.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if writer.write_all(&out).await.is_err() || said_goodbye {
            break;
        }
    }
    let _ = writer.shutdown().await;
}
