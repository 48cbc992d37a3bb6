//! The connection loop: HTTP/1.1 over TCP with a cap on open connections, a deadline for each
//! request head and one for idle keep-alive connections, so slow or idle clients cost a bounded
//! number of sockets and no work permits (those are taken per request in [`super::admit`], after
//! the body is read).
//!
//! hyper's own header timeout starts when a connection begins waiting for a request, so it cannot
//! tell an idle connection from one sending its head slowly. Each connection here has a
//! [`ConnectionClock`] instead: the socket wrapper notes when request bytes arrive, the service
//! notes when a request starts and when its response has been sent, and a watchdog closes the
//! connection when it has been quiet longer than the idle timeout or has been sending a head
//! longer than the header timeout.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

/// Limits on connections, whatever their requests.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// A request head must arrive in full within this long of its first byte, or the connection
    /// is closed.
    pub header_timeout: Duration,
    /// A connection with no request in progress and no new request arriving is closed after
    /// this long (from its opening or from its last response).
    pub idle_timeout: Duration,
    /// Connections open at once. A connection accepted beyond this is closed at once (the client
    /// sees the connection drop and retries later), so sockets and their buffers stay bounded.
    pub max_connections: usize,
}

/// See [`ConnectionLimits::header_timeout`].
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// See [`ConnectionLimits::idle_timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// See [`ConnectionLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting, let requests in
/// progress finish, and return. Each request carries `ConnectInfo<SocketAddr>` of its peer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let open = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // A backstop only: the connection clock below is the one that tells idle from slow.
        .header_read_timeout(limits.idle_timeout + limits.header_timeout)
        .keep_alive(true);
    // Check each connection's clock often enough to close it within a quarter of its timeout.
    let check_every = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut refused = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused.note(max);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnectionClock::new());
        let app = app.clone();
        let service_clock = clock.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_progress = service_clock.request_started();
            // A Router is always ready: `call` without `poll_ready` is what axum::serve does too.
            let answer = app.clone().call(request);
            async move {
                let response = answer.await?;
                // Busy until the response body has been sent (or the connection dropped).
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(SendingBody {
                        body,
                        _in_progress: in_progress,
                    })
                }))
            }
        });
        let io = TokioIo::new(WatchedStream {
            stream,
            clock: clock.clone(),
        });
        let connection = http1.serve_connection(io, service);
        let mut stopping = stopping.clone();
        let (header_timeout, idle_timeout) = (limits.header_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let mut watchdog = tokio::time::interval(check_every);
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            // Header timeouts, resets, clients that hang up: routine, not errors.
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stopping.changed() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                        break;
                    }
                    _ = watchdog.tick() => {
                        if let Some(why) = clock.expired(header_timeout, idle_timeout) {
                            // Dropping the connection closes the socket.
                            tracing::debug!(%peer, why, "connection closed");
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it has finished.
    let _all = open.acquire_many(max as u32).await;
    Ok(())
}

/// Connections refused at the cap, logged at most once a minute so a flood does not flood the log.
#[derive(Default)]
struct Refusals {
    since_last_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, max: usize) {
        self.since_last_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                refused = self.since_last_log,
                max_connections = max,
                "connection cap reached; refusing new connections"
            );
            self.since_last_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}

/// When a connection last did something, for the idle and header timeouts.
struct ConnectionClock {
    opened: Instant,
    /// Requests handed to the service whose responses are not yet sent.
    in_progress: AtomicUsize,
    /// Milliseconds after `opened` when the connection last became quiet (no request in
    /// progress): its opening, or its last response sent.
    quiet_since: AtomicU64,
    /// One more than the milliseconds after `opened` when the first byte of a new request head
    /// arrived while quiet; 0 while none has.
    head_since: AtomicU64,
}

impl ConnectionClock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_progress: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn bytes_arrived(&self) {
        if self.in_progress.load(Ordering::SeqCst) == 0 {
            let _ = self
                .head_since
                .compare_exchange(0, self.now() + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn request_started(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(0, Ordering::SeqCst);
        InProgress(self.clone())
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<&'static str> {
        if self.in_progress.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let now = self.now();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.head_since.load(Ordering::SeqCst) {
            0 => (now.saturating_sub(self.quiet_since.load(Ordering::SeqCst)) > millis(idle_timeout))
                .then_some("idle timeout"),
            since => {
                (now.saturating_sub(since - 1) > millis(header_timeout)).then_some("request head too slow")
            }
        }
    }
}

/// A request in progress on its connection; dropped when its response has been sent.
struct InProgress(Arc<ConnectionClock>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let clock = &self.0;
        clock.quiet_since.store(clock.now(), Ordering::SeqCst);
        clock.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in progress until it has been sent.
struct SendingBody {
    body: axum::body::Body,
    _in_progress: InProgress,
}

impl http_body::Body for SendingBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting on the connection's clock when bytes arrive.
struct WatchedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
