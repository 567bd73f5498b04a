//! Accepted connections, bounded: at most so many open at once, and a client
//! that has not made a request within a deadline of connecting is
//! disconnected, so silent or slow clients cannot hold the server's
//! descriptors. Used by the broker's gRPC server and the HTTP server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// How many connections may be open and how soon each must speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once (WebSockets and streams included); more
    /// are refused as they are accepted.
    pub max_connections: usize,
    /// How long a new connection has to complete its first request's
    /// headers (the TLS handshake included).
    pub first_request: Duration,
}

impl Default for ConnLimits {
    /// 1,024 connections, 10 s to the first request.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            first_request: Duration::from_secs(10),
        }
    }
}

/// Admits connections up to [`ConnLimits::max_connections`] and counts them.
#[derive(Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    limits: ConnLimits,
    rejected: AtomicU64,
}

impl Gate {
    /// A gate with `limits`.
    pub fn new(limits: ConnLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            rejected: AtomicU64::new(0),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Wraps `io` if there is room; gives it back when the cap is reached
    /// (the caller refuses it). Room is freed when the wrapper is dropped,
    /// also after an HTTP upgrade hands the connection to a WebSocket.
    pub fn admit<IO>(&self, io: IO) -> Result<Guarded<IO>, IO> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Guarded {
                io,
                first: Some(Box::pin(tokio::time::sleep(self.limits.first_request))),
                seen: Seen::default(),
                _permit: permit,
            }),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(io)
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits
            .max_connections
            .saturating_sub(self.permits.available_permits())
    }

    /// Connections refused at the cap since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Set once a connection has made a request: its first-request deadline
/// no longer applies.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<AtomicBool>);

impl Seen {
    /// A request arrived on the connection.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An admitted connection: holds its room at the gate, and fails its reads
/// with `TimedOut` once the first-request deadline passes unless a request
/// was [`Seen`] by then (the server then closes it).
#[derive(Debug)]
pub struct Guarded<IO> {
    // Room is freed before the socket closes: a client that sees the close
    // finds the room free.
    _permit: OwnedSemaphorePermit,
    io: IO,
    first: Option<Pin<Box<Sleep>>>,
    seen: Seen,
}

impl<IO> Guarded<IO> {
    /// The handle the request path marks.
    pub fn seen(&self) -> Seen {
        self.seen.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(first) = &mut this.first {
            if this.seen.get() {
                this.first = None;
            } else if first.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the first-request deadline",
                )));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What a gRPC request sees of its connection: the peer, and the handle
/// that ends the first-request deadline.
#[derive(Debug, Clone)]
pub struct GuardedInfo {
    /// Addresses of the TCP connection.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// Marked by every request.
    pub seen: Seen,
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = GuardedInfo;

    fn connect_info(&self) -> GuardedInfo {
        GuardedInfo {
            tcp: self.io.connect_info(),
            seen: self.seen.clone(),
        }
    }
}

/// Marks the connection of a gRPC request as having spoken (plaintext or
/// TLS); installed on the server as an interceptor.
#[allow(clippy::result_large_err)]
pub(crate) fn mark_seen(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(info) = req.extensions().get::<GuardedInfo>() {
        info.seen.mark();
    } else if let Some(tls) = req
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<GuardedInfo>>()
    {
        tls.get_ref().seen.mark();
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silent_connection_times_out_and_spoken_one_does_not() {
        let gate = Gate::new(ConnLimits {
            max_connections: 2,
            first_request: Duration::from_secs(10),
        });
        let (a, mut a_peer) = tokio::io::duplex(64);
        let (b, mut b_peer) = tokio::io::duplex(64);
        let mut a = gate.admit(a).expect("room");
        let mut b = gate.admit(b).expect("room");
        assert_eq!(gate.open(), 2);
        let (c, _c_peer) = tokio::io::duplex(64);
        assert!(gate.admit(c).is_err(), "the third is over the cap");
        assert_eq!(gate.rejected(), 1);

        b.seen().mark();
        let mut buf = [0u8; 8];
        let err = a.read(&mut buf).await.expect_err("deadline");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Past the deadline, the marked one still reads and writes.
        b_peer.write_all(b"hi").await.expect("write");
        assert_eq!(b.read(&mut buf).await.expect("read"), 2);
        b.write_all(b"ok").await.expect("write");
        assert_eq!(b_peer.read(&mut buf).await.expect("read"), 2);
        drop(a);
        a_peer.shutdown().await.expect("shutdown");
        assert_eq!(gate.open(), 1, "a dropped connection frees its room");
    }
}
