//! The connection loop: HTTP/1.1 over TCP with a cap on open connections and a deadline for
//! each request head, so slow or idle clients cost a bounded number of sockets and no work
//! permits (those are taken per request in [`super::admit`], after the body is read).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

/// Limits on connections, whatever their requests.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// A connection must deliver a complete request head within this long of opening or of its
    /// previous response, or it is closed. The same clock is the keep-alive idle timeout: hyper
    /// starts it when a connection begins waiting for a request.
    pub header_timeout: Duration,
    /// Connections open at once. A connection accepted beyond this is closed at once (the client
    /// sees the connection drop and retries later), so sockets and their buffers stay bounded.
    pub max_connections: usize,
}

/// See [`ConnectionLimits::header_timeout`].
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// See [`ConnectionLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
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
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready: `call` without `poll_ready` is what axum::serve does too.
            app.clone().call(request)
        });
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        // Header timeouts, resets, clients that hang up: routine, not errors.
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
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
