//! The HTTP server's connections: admitted at the gate (a cap on how many
//! are open, a deadline for each one's first request), TLS handshakes,
//! HTTP/1.1 and HTTP/2 through hyper with a header-read timeout, an idle
//! timeout and a stream cap, and a shutdown drain bounded by its grace
//! whatever clients do.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use docproc_broker::conn::{Gate, Guarded};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::tls::ClientAddr;

/// How connections are served; [`Default`] holds the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's headers: a new connection
    /// its first request (TLS handshake included), a kept-alive HTTP/1.1
    /// connection its next one (so that is also its idle timeout).
    pub header_timeout: Duration,
    /// An HTTP/2 connection with no request in flight for this long is
    /// closed (GOAWAY).
    pub idle_timeout: Duration,
    /// Connections open at once, WebSockets included; more are refused.
    pub max_connections: usize,
    /// Requests in flight on one HTTP/2 connection.
    pub max_streams: u32,
    /// On shutdown, how long requests in flight may take; then their
    /// connections are closed.
    pub drain: Duration,
}

impl Default for HttpLimits {
    /// 10 s for headers, 60 s idle, 1,024 connections, 100 streams each,
    /// 10 s to drain.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_streams: 100,
            drain: Duration::from_secs(10),
        }
    }
}

impl HttpLimits {
    /// The gate these limits ask for.
    pub fn gate(&self) -> Gate {
        Gate::new(docproc_broker::conn::ConnLimits {
            max_connections: self.max_connections,
            first_request: self.header_timeout,
        })
    }
}

/// Room for a request line in HTTP/1.1's read buffer beside the headers.
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// HTTP/2 pings on a quiet connection; unanswered within as long, it closes.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Refusals answered at once (a 503 written, the request read and
/// discarded); beyond that a refused connection is simply closed.
const REFUSERS: usize = 64;
/// How long answering a refused connection may take.
const REFUSE_WAIT: Duration = Duration::from_secs(1);
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 1\r\ncontent-length: 78\r\n\r\n\
{\"code\":\"too_many_connections\",\"message\":\"the server has too many open connections\"}";

/// Serves `router` on `listener` (HTTPS with `tls`) until `shutdown`
/// resolves; then stops accepting, asks every connection to finish
/// (HTTP/1.1 closes after its response, HTTP/2 sends GOAWAY) and closes
/// those still open after [`HttpLimits::drain`]. Header blocks up to
/// `max_header_bytes` are read (the request guard answers 431 above it).
pub async fn serve(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    router: Router,
    limits: HttpLimits,
    max_header_bytes: usize,
    gate: Arc<Gate>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
    let builder = Arc::new(builder(limits, max_header_bytes));
    let refusers = Arc::new(Semaphore::new(REFUSERS));
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                match gate.admit(tcp) {
                    Ok(io) => {
                        conns.spawn(connection(io, peer, tls.clone(), router.clone(), builder.clone(), limits.idle_timeout, closing.clone()));
                    }
                    Err(tcp) => refuse(tcp, tls.is_none(), &refusers, gate.limits().max_connections),
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    closing_tx.send_replace(true);
    let drained = tokio::time::timeout(limits.drain, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            grace = ?limits.drain,
            "connections still busy after the drain; closing them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

fn builder(limits: HttpLimits, max_header: usize) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The request line (long filter lists) and the headers; the guard
        // answers 431 above max_header, hyper above this.
        .max_buf_size(max_header + MAX_REQUEST_LINE);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .max_header_list_size(max_header as u32);
    b
}

/// Over the cap: a plaintext client is told so (503 `too_many_connections`,
/// its request read and discarded so the answer is not lost to a reset);
/// a TLS client, or any beyond [`REFUSERS`] at once, is just closed.
fn refuse(tcp: TcpStream, plaintext: bool, refusers: &Arc<Semaphore>, max: usize) {
    tracing::warn!(peer = ?tcp.peer_addr().ok(), max, "HTTP connection refused: too many open");
    let Some(permit) = plaintext
        .then(|| refusers.clone().try_acquire_owned().ok())
        .flatten()
    else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSE_WAIT, answer_refused(tcp)).await;
    });
}

async fn answer_refused(mut tcp: TcpStream) -> std::io::Result<()> {
    tcp.write_all(REFUSED).await?;
    tcp.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match tcp.read(&mut sink).await? {
            0 => break,
            n => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

async fn connection(
    io: Guarded<TcpStream>,
    peer: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle: Duration,
    closing: watch::Receiver<bool>,
) {
    let seen = io.seen();
    let conn = Conn {
        peer,
        router,
        seen,
        idle,
        closing,
    };
    match tls {
        None => conn.drive(io, &builder).await,
        // A stalled handshake fails its reads at the first-request deadline.
        Some(acceptor) => match acceptor.accept(io).await {
            Ok(stream) => conn.drive(stream, &builder).await,
            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        },
    }
}

/// One connection's service and its watchers.
struct Conn {
    peer: std::net::SocketAddr,
    router: Router,
    seen: docproc_broker::conn::Seen,
    idle: Duration,
    closing: watch::Receiver<bool>,
}

impl Conn {
    async fn drive<IO>(self, io: IO, builder: &auto::Builder<TokioExecutor>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            router,
            seen,
            idle,
            mut closing,
        } = self;
        let activity = Arc::new(Activity::new());
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            seen.mark();
            let busy = tracked.begin();
            req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
            let router = router.clone();
            async move {
                let res = router.oneshot(req.map(axum::body::Body::new)).await;
                drop(busy);
                res
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut asked = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c), if !asked => {
                    conn.as_mut().graceful_shutdown();
                    asked = true;
                }
                _ = activity.idle_for(idle), if !asked => {
                    conn.as_mut().graceful_shutdown();
                    asked = true;
                }
            }
        }
    }
}

/// Requests in flight on a connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// Held while a request is handled.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(idle).await;
                continue;
            }
            let due = *self.last.lock() + idle;
            if Instant::now() >= due && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}
