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
use std::sync::Arc;
use std::time::Duration;

use super::tls::{BoxRead, BoxWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::gate::{Evicted, Gate, Waiting};
use super::service::authenticate::Session;
use super::{ServerConfig, Service};
use crate::api::frame::{append_frame, read_to_len, FrameError};
use crate::api::{
    ApiError, ClientFrame, ErrorKind, ServerFrame, FRAME_BYTES_MAX, MAGIC, PROTOCOL_VERSION,
    READ_BUFFER_BYTES,
};
use crate::codec;

/// Frames queued for the writer; past this, calls wait to reply, which in
/// turn stops the reader taking more (backpressure on a slow reader).
const OUTBOX_FRAMES_MAX: usize = 1024;

/// Largest hello: nothing bigger is read before it.
pub const HELLO_BYTES_MAX: usize = 4 * 1024;

/// Bytes of frame bodies all connections together may hold at once,
/// from the first byte read to the end of the call. A frame's body is
/// taken from this budget as its bytes arrive, never as its prefix claims:
/// a socket that announces 4 MiB and sends five bytes holds five bytes.
pub const FRAME_BUDGET_BYTES: usize = 512 * 1024 * 1024;

/// A frame body is read (and charged to the budget) this much at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(super) struct Limits {
    pub connections_max: usize,
    pub calls_in_flight_max: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub auth_deadline: Duration,
    /// Connections that have not authenticated yet.
    pub gate: Rc<Gate>,
    /// Bytes of frames in flight, across connections.
    pub budget: Arc<Semaphore>,
    /// The server's TLS; None: plaintext only (tests of the connection
    /// alone).
    pub tls: Option<Arc<super::tls::ServerTls>>,
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Limits {
            connections_max: c.connections_max,
            calls_in_flight_max: c.calls_in_flight_max,
            read_timeout: c.read_timeout,
            idle_timeout: c.idle_timeout,
            auth_deadline: c.auth_deadline,
            gate: Gate::new(c.unauthenticated_max, c.unauthenticated_per_source_max),
            budget: Arc::new(Semaphore::new(FRAME_BUDGET_BYTES)),
            tls: None,
        }
    }
}

/// A frame's body and its share of the byte budget, given back when the
/// frame (and the call it carries) is done.
struct Frame {
    body: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Why the reader stopped.
enum ReadEnd {
    Closed,
    /// Nothing arrived for the idle period (nothing was consumed either:
    /// waiting again is safe).
    Idle,
    Goodbye(ApiError),
}

/// Reads one frame of at most `max` bytes: waits up to `idle` for it to
/// start, then up to `read` for all of it. Each chunk of the body is
/// charged to `budget` before it is read.
async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
    read: Duration,
    max: usize,
    budget: &Arc<Semaphore>,
    authenticated: bool,
) -> Result<Frame, ReadEnd> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(idle, reader.read(&mut prefix[..1])).await {
        Err(_) => return Err(ReadEnd::Idle),
        Ok(Ok(0)) | Ok(Err(_)) => return Err(ReadEnd::Closed),
        Ok(Ok(_)) => {}
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 || len > max {
            return Ok(Err(len));
        }
        // Read into spare capacity, not into zeros written first. Before
        // a call verifies, the body grows as its bytes arrive: a stalled
        // stranger holds no more than it sent. After, it is reserved whole:
        // growing a 1 MiB upload chunk by doubling copied it once more.
        let mut body = Vec::with_capacity(if authenticated { len } else { 0 });
        let mut held: Option<OwnedSemaphorePermit> = None;
        while body.len() < len {
            let n = (len - body.len()).min(READ_CHUNK_BYTES);
            let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            };
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            let end = body.len() + n;
            if body.capacity() < end {
                // Doubling, as a Vec grows, but never past the frame.
                let want = end.max(body.capacity() * 2).min(len);
                body.reserve_exact(want - body.len());
            }
            read_to_len(&mut *reader, &mut body, end).await?;
        }
        Ok::<_, std::io::Error>(Ok(Frame {
            body,
            _budget: held,
        }))
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
            format!("frame length {len} is outside 1..={max} bytes"),
        ))),
        Ok(Ok(Ok(body))) => Ok(body),
    }
}

/// A goodbye written straight to a stream that never got a writer task
/// (over the cap, or plaintext where only TLS is taken).
async fn goodbye_now(mut stream: TcpStream, error: ApiError) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    if append_frame(&ServerFrame::Goodbye { error }, &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
        let _ = stream.shutdown().await;
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
    if over_cap {
        let error = ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "the server has its maximum of {} connections; try again shortly",
                limits.connections_max
            ),
        );
        goodbye_now(stream, error).await;
        return;
    }
    // Hostile until a signed call verifies: a short deadline, and a place
    // at the gate that a flood of newer connections can take. The TLS
    // handshake is inside both.
    let waiting = limits.gate.enter(peer.ip());
    let deadline = Instant::now() + limits.auth_deadline;
    let negotiated = match &limits.tls {
        None => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite, false))
        }
        Some(tls) => tokio::select! {
            biased;
            _ = waiting.evicted() => Err(None),
            _ = tokio::time::sleep_until(deadline) => Err(None),
            n = tls.negotiate(stream, peer) => n,
        },
    };
    let (reader, writer) = match negotiated {
        Ok((reader, writer, _tls)) => (reader, writer),
        Err(Some((stream, why))) => {
            goodbye_now(stream, ApiError::new(ErrorKind::PermissionDenied, why)).await;
            return;
        }
        Err(None) => return,
    };
    // Cancelling a read of it (idle timeout) keeps what it buffered.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (tx, rx) = mpsc::channel::<ServerFrame>(OUTBOX_FRAMES_MAX);
    let writer_task = tokio::task::spawn_local(write_frames(writer, rx));
    let goodbye = |error: ApiError| ServerFrame::Goodbye { error };
    let shook = tokio::select! {
        biased;
        why = waiting.evicted() => Err(Some(evicted(why, &limits, peer))),
        _ = tokio::time::sleep_until(deadline) => Err(Some(too_slow(&limits))),
        shook = handshake(&mut reader, &limits, peer) => shook,
    };
    let end = match shook {
        Ok(()) => {
            // Every signature on this connection covers it: a call
            // captured here verifies on no other connection, now or after
            // a restart.
            let session = Rc::new(Session::new(crate::clock::random16()));
            let _ = tx
                .send(ServerFrame::Welcome {
                    version: PROTOCOL_VERSION,
                    server: format!("lote/{}", env!("CARGO_PKG_VERSION")),
                    frame_bytes_max: FRAME_BYTES_MAX as u32,
                    challenge: session.challenge,
                })
                .await;
            let unauthenticated = Some((waiting, deadline));
            let conn = Conn {
                service: &service,
                session: &session,
                limits: &limits,
                tx: &tx,
                peer,
            };
            serve_calls(&mut reader, &conn, stop, unauthenticated).await
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

/// The goodbye of a connection closed to make room at the gate.
fn evicted(why: Evicted, limits: &Limits, peer: SocketAddr) -> ApiError {
    let whose = match why {
        Evicted::Source => format!("from {}", peer.ip()),
        Evicted::All => "in all".to_string(),
    };
    ApiError::new(
        ErrorKind::Overloaded,
        format!(
            "closed to make room: too many connections {whose} were waiting to authenticate; \
             a client signs its first call right after the hello (deadline {}s)",
            limits.auth_deadline.as_secs()
        ),
    )
}

/// The goodbye of a connection that did not authenticate in time.
fn too_slow(limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        format!(
            "no signed call within {}s of connecting; closing",
            limits.auth_deadline.as_secs()
        ),
    )
}

/// Resolves when the waiting connection is evicted; never once it has
/// authenticated.
async fn evicted_while(waiting: &Option<(Waiting, Instant)>) -> Evicted {
    match waiting {
        Some((w, _)) => w.evicted().await,
        None => std::future::pending().await,
    }
}

/// Resolves at the waiting connection's deadline; never once it has
/// authenticated.
async fn deadline_while(waiting: &Option<(Waiting, Instant)>) {
    match waiting {
        Some((_, deadline)) => tokio::time::sleep_until(*deadline).await,
        None => std::future::pending().await,
    }
}

/// Reads and checks the client's hello: `Err(None)` if the peer left
/// without one, `Err(Some(refusal))` to say goodbye with.
async fn handshake(
    reader: &mut BufReader<BoxRead>,
    limits: &Limits,
    peer: SocketAddr,
) -> Result<(), Option<ApiError>> {
    let read = limits.read_timeout;
    let hello = match next_frame(reader, read, read, HELLO_BYTES_MAX, &limits.budget, false).await {
        Ok(frame) => codec::decode_message::<ClientFrame>(&frame.body)
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

/// What the calls of one connection share with its reader.
struct Calls {
    in_flight: Arc<Semaphore>,
    subscriptions: Rc<RefCell<HashMap<u64, tokio::task::AbortHandle>>>,
    /// A call that found its own body malformed ends the connection here.
    fatal: Rc<RefCell<Option<ApiError>>>,
    fatal_set: Rc<Notify>,
    /// A call ended (its permit is back).
    settled: Rc<Notify>,
}

/// Reads calls until the peer leaves, misbehaves, idles or the server
/// stops; each call runs as a task of its own. Until a call verifies,
/// `waiting` holds the connection's place at the gate and its deadline,
/// and one call at a time is read. Returns the goodbye to send, once
/// every call in flight has replied.
/// One connection past its hello.
struct Conn<'a> {
    service: &'a Rc<Service>,
    session: &'a Rc<Session>,
    limits: &'a Limits,
    tx: &'a mpsc::Sender<ServerFrame>,
    peer: SocketAddr,
}

async fn serve_calls(
    reader: &mut BufReader<BoxRead>,
    conn: &Conn<'_>,
    mut stop: watch::Receiver<bool>,
    mut waiting: Option<(Waiting, Instant)>,
) -> Option<ApiError> {
    let (limits, tx, peer) = (conn.limits, conn.tx, conn.peer);
    let calls = Calls {
        in_flight: Arc::new(Semaphore::new(limits.calls_in_flight_max)),
        subscriptions: Rc::default(),
        fatal: Rc::default(),
        fatal_set: Rc::new(Notify::new()),
        settled: Rc::new(Notify::new()),
    };
    let end = loop {
        let idle = calls.in_flight.available_permits() == limits.calls_in_flight_max;
        // Before it authenticates, a connection has one call in flight.
        let may_read = waiting.is_none() || idle;
        let frame = tokio::select! {
            biased;
            _ = calls.fatal_set.notified() => break calls.fatal.borrow_mut().take(),
            // Authenticated as soon as a call verifies, also while that
            // call runs on (a long first call is not cut at the deadline):
            // checked before the deadline and the gate.
            _ = conn.session.verified(), if waiting.is_some() => {
                waiting = None;
                continue;
            }
            why = evicted_while(&waiting) => break Some(evicted(why, limits, peer)),
            _ = deadline_while(&waiting) => break Some(too_slow(limits)),
            _ = calls.settled.notified(), if waiting.is_some() => continue,
            _ = stop.wait_for(|s| *s) => break Some(ApiError::new(
                ErrorKind::ShuttingDown,
                "the server is shutting down; calls in flight were finished",
            )),
            frame = next_frame(
                reader,
                limits.idle_timeout,
                limits.read_timeout,
                FRAME_BYTES_MAX,
                &limits.budget,
                waiting.is_none(),
            ), if may_read => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(ReadEnd::Closed) => break None,
            Err(ReadEnd::Goodbye(e)) => break Some(e),
            // Quiet is not idle while calls run or events stream out.
            Err(ReadEnd::Idle) if !calls.subscriptions.borrow().is_empty() || !idle => continue,
            Err(ReadEnd::Idle) => {
                break Some(ApiError::new(
                    ErrorKind::Timeout,
                    format!("no request for {}s; closing", limits.idle_timeout.as_secs()),
                ))
            }
        };
        match codec::decode_message::<ClientFrame>(&frame.body) {
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
                if let Some(handle) = calls.subscriptions.borrow_mut().remove(&id) {
                    handle.abort();
                }
            }
            Ok(ClientFrame::Call(call)) => {
                let Ok(permit) = calls.in_flight.clone().try_acquire_owned() else {
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
                spawn_call(&calls, conn, &stop, call, (permit, frame));
            }
        }
    };
    // Let the calls in flight finish and reply before saying goodbye.
    let _ = calls
        .in_flight
        .acquire_many(limits.calls_in_flight_max as u32)
        .await;
    for (_, handle) in calls.subscriptions.borrow_mut().drain() {
        handle.abort();
    }
    end
}

/// Runs one call as a task of its own; `held` (its in-flight permit and
/// its frame's bytes) is given back when it has replied.
fn spawn_call(
    calls: &Calls,
    conn: &Conn<'_>,
    stop: &watch::Receiver<bool>,
    call: crate::api::Call,
    held: (OwnedSemaphorePermit, Frame),
) {
    let service = conn.service.clone();
    let session = conn.session.clone();
    let tx = conn.tx.clone();
    let stop = stop.clone();
    let subs = calls.subscriptions.clone();
    let fatal = calls.fatal.clone();
    let fatal_set = calls.fatal_set.clone();
    let settled = calls.settled.clone();
    tokio::task::spawn_local(async move {
        let id = call.id;
        let outcome = service.call(call, &session, &tx, stop).await;
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
        drop(held);
        settled.notify_one();
    });
}

/// Encodes and writes the connection's outgoing frames, gathering
/// whatever is queued into one write; ends after a goodbye.
async fn write_frames(mut writer: BoxWrite, mut rx: mpsc::Receiver<ServerFrame>) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut said_goodbye = false;
    while let Some(first) = rx.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let goodbye = matches!(frame, ServerFrame::Goodbye { .. });
            said_goodbye |= goodbye;
            match append_frame(&frame, &mut out) {
                Ok(()) => {}
                Err(FrameError::TooLarge { len, .. }) => {
                    // A reply that does not fit a frame becomes an error
                    // reply, so the caller is not left waiting. Its bytes
                    // are not kept for the connection's life.
                    out.shrink_to(256 * 1024);
                    tracing::warn!(bytes = len, "reply exceeds the frame limit");
                    if let ServerFrame::Reply { id, .. } = frame {
                        let error = ServerFrame::Reply {
                            id,
                            result: Err(ApiError::new(
                                ErrorKind::TooLarge,
                                "the reply is larger than a frame; ask for less (use --limit / paging)",
                            )),
                        };
                        let _ = append_frame(&error, &mut out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{read_frame, Response};

    fn blob_reply(id: u64, bytes: usize) -> ServerFrame {
        ServerFrame::Reply {
            id,
            result: Ok(Response::BlobData {
                data: vec![id as u8; bytes],
            }),
        }
    }

    /// Replies are encoded in place in the connection's outgoing buffer;
    /// one too large for a frame must leave nothing of itself there, and
    /// become an error reply between the intact ones around it.
    #[tokio::test]
    async fn a_reply_over_the_frame_limit_becomes_an_error_and_spoils_no_other() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(write_frames(Box::new(ours), rx));
        tx.send(blob_reply(1, 3 << 20)).await.unwrap();
        tx.send(blob_reply(2, FRAME_BYTES_MAX + 1)).await.unwrap();
        tx.send(blob_reply(3, 10)).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        for _ in 0..3 {
            let body = read_frame(&mut theirs, FRAME_BYTES_MAX).await.unwrap();
            got.push(codec::decode_message::<ServerFrame>(&body).unwrap());
        }
        writer.await.unwrap();
        let data = |frame: &ServerFrame| match frame {
            ServerFrame::Reply {
                result: Ok(Response::BlobData { data }),
                ..
            } => Some(data.clone()),
            _ => None,
        };
        assert_eq!(data(&got[0]), Some(vec![1u8; 3 << 20]));
        match &got[1] {
            ServerFrame::Reply {
                id: 2,
                result: Err(e),
            } => {
                assert_eq!(e.kind, ErrorKind::TooLarge, "{e:?}")
            }
            other => panic!("expected reply 2 as an error, got {other:?}"),
        }
        assert_eq!(data(&got[2]), Some(vec![3u8; 10]));
    }
}
