//! HTTP/1.1 on a listener of its own, for the console and the Azure
//! gateway: hyper serves each connection as a local task on the control
//! plane's thread, like the message API's connections, so a request
//! reaches the very `Service` (and its dispatcher) a framed call does.
//!
//! Every connection is hostile until it authenticates: headers must
//! arrive within a deadline and within a size, connections are capped,
//! and TLS follows the message API's `--plaintext` policy with the same
//! certificate.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::console::http::Body;
use super::tls::ServerTls;

/// Most connections of one listener open at once; more are closed at once.
const CONNECTIONS_MAX: usize = 256;
/// How long a request's headers may take to arrive.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head hyper buffers.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// What answers a request: (request, peer, whether over TLS).
pub(super) type App = Rc<
    dyn Fn(Request<Incoming>, SocketAddr, bool) -> Pin<Box<dyn Future<Output = Response<Body>>>>,
>;

/// How a listener serves.
pub(super) struct Serving {
    /// For logs and the plain-HTTP refusal ("the console").
    pub what: &'static str,
    pub tls: Arc<ServerTls>,
    pub stop: watch::Receiver<bool>,
}

/// Serves `listener` with `app` on the control plane's thread until
/// `serving.stop`.
pub(super) fn spawn(listener: TcpListener, app: App, serving: Serving) {
    tokio::task::spawn_local(accept_loop(listener, app, serving));
}

async fn accept_loop(listener: TcpListener, app: App, serving: Serving) {
    let open = Rc::new(Cell::new(0usize));
    let mut stop = serving.stop.clone();
    let serving = Rc::new(serving);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{} accept failed", serving.what);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        if open.get() >= CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let (app, serving, open) = (app.clone(), serving.clone(), open.clone());
        tokio::task::spawn_local(async move {
            serve_connection(stream, peer, app, &serving).await;
            open.set(open.get() - 1);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    serving: &Serving,
) {
    let _ = stream.set_nodelay(true);
    let negotiated =
        tokio::time::timeout(HEADER_TIMEOUT, serving.tls.negotiate(stream, peer)).await;
    let (read, write, secure) = match negotiated {
        Ok(Ok(halves)) => halves,
        Ok(Err(Some((stream, why)))) => return refuse_plain(stream, &why, serving.what).await,
        _ => return,
    };
    let io = hyper_util::rt::TokioIo::new(tokio::io::join(read, write));
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app(req, peer, secure).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(HEAD_BYTES_MAX)
        .serve_connection(io, handler)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "{} connection ended", serving.what);
    }
}

/// A plain request where TLS is required: a readable 400, not a reset.
async fn refuse_plain(mut stream: tokio::net::TcpStream, why: &str, what: &str) {
    let body = format!("{why}\n({what} is served over HTTPS for this address)\n");
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    // Closing with the request unread would reset the connection and
    // lose the answer: read (and drop) a little of it first.
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
