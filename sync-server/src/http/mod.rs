//! HTTP: routes, shared state, and the problem body every error answers with.

mod authed;
pub use authed::{Authed, CarerDevice, Office, OfficeOrSelf, OfficeOrSupervisor, Operations, RoleRule};
mod office;
pub mod openapi;
mod ops;
mod oversight;
mod reference;
mod reports;
pub mod serve;
mod sign_in;
pub use sign_in::SignInFailure;
mod supervision;
mod sync;
pub use sync::{decode_request, decode_request_v2};
pub mod times;

use crate::services::visits::{VisitService, VisitServiceError};
use crate::store::{Principal, ServerStore, StoreError};
use crate::telemetry::Telemetry;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use caresync_core::domain::*;
use caresync_core::protocol::{Problem, ENROL_PATH, MAX_REQUEST_BYTES, SYNC_PATH};
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ServerStore>,
    pub visits: Arc<VisitService>,
    pub telemetry: Arc<Telemetry>,
    /// A device's scope: visits planned from this far back...
    pub scope_back_ms: Millis,
    /// ...to this far ahead.
    pub scope_ahead_ms: Millis,
    /// The agency's time zone: days, weeks and months of reports and timelines.
    pub tz: chrono_tz::Tz,
    /// Requests being handled at once. A request takes one only once its caller is
    /// authenticated and its body is read (see [`admit`]), so slow clients never hold one.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Reports computed at once: each reads and judges a whole period on every core, so two
    /// at a time bounds their memory and leaves the rest of the permits to phones.
    pub reports_in_flight: Arc<tokio::sync::Semaphore>,
    /// How long a request waits for a permit before it is told to come back later.
    pub permit_wait: std::time::Duration,
    /// How long a new office or supervisor API token works (`--token-ttl-days`).
    pub token_ttl_ms: Millis,
    /// Failed sign-ins and enrolments per source and per person (in this process's memory).
    pub sign_in_limits: Arc<crate::services::sign_in_limits::SignInLimits>,
    /// A request's whole body must arrive within this long of its head, or it gets 408.
    pub body_timeout: std::time::Duration,
    /// Request bodies held in memory at once, in KiB: a request is charged its declared length
    /// (the body limit if undeclared) before its body is read, until it is answered. Bodies are
    /// read before a work permit is taken, so this, not the permits, bounds their memory
    /// whatever the number of connections.
    pub body_budget_kib: Arc<tokio::sync::Semaphore>,
    /// Alert deadlines and the sweep's pace (`services::alerts`).
    pub oversight: Arc<crate::services::alerts::OversightSettings>,
}

/// See [`AppState::reports_in_flight`].
pub const MAX_REPORTS_IN_FLIGHT: usize = 2;
/// The default of [`AppState::permit_wait`].
pub const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// The default of [`AppState::body_timeout`]: a sync request is a few kilobytes, and even the
/// 8 MiB limit arrives within it at about 1 Mbit/s.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The default of [`AppState::body_budget_kib`]: 256 MiB, thirty-two bodies at the 8 MiB limit.
pub const BODY_BUDGET_KIB: usize = 256 * 1024;
/// Enrolment is a code and a device name: its body limit is small, because anyone may send one.
pub const MAX_ENROL_BYTES: usize = 16 * 1024;
/// API routes anyone may call: no token to check before their body is read. Dashboard pages
/// (outside `/api/`) sign in with a session cookie, checked by the page itself.
const PUBLIC_PATHS: &[&str] = &[ENROL_PATH, "/api/openapi.json"];
/// Probes answer without a permit, or a busy instance would look dead.
const PROBE_PATHS: &[&str] = &["/healthz", "/metrics"];

/// More than the two cores and the one SQLite writer can use; each holds at most one body.
pub const MAX_IN_FLIGHT: usize = 32;
/// Threads in tokio's blocking pool: the handlers holding a permit, plus room for the
/// reports' own work and the odd probe.
pub const MAX_BLOCKING_THREADS: usize = MAX_IN_FLIGHT + 8;
/// Visit documents kept in memory unless `--document-cache` says otherwise: about 25 KiB each
/// (Automerge's op set), so about 50 MiB. A document not cached is loaded from its chunks on
/// its next sync (a few hundred microseconds).
pub const DOCUMENT_CACHE: usize = 2_000;

impl AppState {
    pub fn new(store: Arc<dyn ServerStore>) -> Self {
        Self {
            visits: Arc::new(VisitService::new(store.clone(), DOCUMENT_CACHE)),
            store,
            telemetry: Arc::new(Telemetry::default()),
            scope_back_ms: 7 * DAY_MS,
            scope_ahead_ms: 14 * DAY_MS,
            tz: chrono_tz::Europe::London,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            reports_in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
            permit_wait: PERMIT_WAIT,
            token_ttl_ms: crate::services::people::DEFAULT_TOKEN_TTL_MS,
            sign_in_limits: Arc::default(),
            body_timeout: BODY_TIMEOUT,
            body_budget_kib: Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)),
            oversight: Arc::default(),
        }
    }

    /// With the agency's alert settings: the visit service raises with them too. For start-up,
    /// before the state is shared.
    pub fn with_oversight(mut self, settings: crate::services::alerts::OversightSettings) -> Self {
        let settings = Arc::new(settings);
        self.visits =
            Arc::new(VisitService::new(self.store.clone(), 10_000).with_oversight(settings.clone()));
        self.oversight = settings;
        self
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .op("post", SYNC_PATH, sync::sync)
        .route(ENROL_PATH, post(sync::enrol))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(openapi::openapi))
        .merge(office::routes())
        .merge(reference::routes())
        .merge(supervision::routes())
        .merge(reports::routes())
        .merge(crate::web::routes())
        .merge(oversight::routes())
        // RFC 3339 beside every epoch-milliseconds instant in the API's JSON answers.
        .layer(axum::middleware::from_fn(times::with_rfc3339))
        // One byte over the limit is enough to tell "too large" from "exactly at the limit".
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES + 1))
        // Matched routes only: an unknown path or method answers 404/405 as before.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admit))
        // Outermost: a source that has used up its failed sign-ins holds no permit.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sign_in::limit_failed_sign_ins,
        ))
        .with_state(state)
}

/// An error answer: an HTTP status and a problem body with a stable code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub problem: Problem,
    /// Set on a failed sign-in or enrolment, for the limiter and the log (`sign_in`).
    pub sign_in_failure: Option<sign_in::SignInFailure>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            problem: Problem {
                code: code.into(),
                message: message.into(),
            },
            sign_in_failure: None,
        }
    }
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        // The detail goes to the log (never note text: errors carry ids and causes only).
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.problem)).into_response();
        if let Some(failure) = self.sign_in_failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<VisitServiceError> for ApiError {
    fn from(e: VisitServiceError) -> Self {
        match e {
            VisitServiceError::UnknownVisit(id) => ApiError::not_found(format!("no visit {id}")),
            VisitServiceError::AlreadyExists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("visit {id} already exists"),
            ),
            VisitServiceError::Invalid(m) => ApiError::bad_request("invalid", m),
            VisitServiceError::Rejected(invalid) => invalid.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::services::validation::Invalid> for ApiError {
    fn from(e: crate::services::validation::Invalid) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

impl From<crate::services::Refused> for ApiError {
    fn from(e: crate::services::Refused) -> Self {
        use crate::services::Refused;
        match e {
            Refused::NotFound(message) => ApiError::not_found(message),
            Refused::Invalid(invalid) => invalid.into(),
            Refused::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            Refused::Store(e) => e.into(),
            Refused::Visit(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The caller, from `Authorization: Bearer <token>`; 401 if missing, unknown, revoked or
/// expired, or the person was deactivated (each failure is logged and counted by `sign_in`).
fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    crate::services::people::authenticate(state.store.as_ref(), bearer(headers)?, now())?
        .map_err(sign_in::refused)
}

/// [`authenticate`] from the store's memory, without blocking; `None` if it must ask the store.
fn authenticate_from_memory(state: &AppState, headers: &HeaderMap) -> Option<ApiResult<Principal>> {
    let token = match bearer(headers) {
        Ok(token) => token,
        Err(missing) => return Some(Err(missing)),
    };
    let judged = crate::services::people::authenticate_from_memory(state.store.as_ref(), token, now())?;
    Some(judged.map_err(sign_in::refused))
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
}

/// Admit a request to a handler: authenticate it from its headers (401 at once, before its
/// body is read, if that fails on a route that needs a token), read its body within
/// [`AppState::body_timeout`] (408 and the connection closed if it dribbles), and only then
/// take a work permit (see [`AppState::in_flight`]) for the handler. So a slow or unknown
/// client costs a connection slot, never a permit; the permit bounds work, not waiting.
///
/// The caller's [`Principal`] goes into the request's extensions for handlers that want it.
async fn admit(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if PROBE_PATHS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    if path.starts_with("/api/") && !PUBLIC_PATHS.contains(&path.as_str()) {
        // A token read lately is answered from memory; only a miss takes a blocking thread.
        let signed_in = match authenticate_from_memory(&state, &parts.headers) {
            Some(judged) => judged,
            None => {
                let (st, headers) = (state.clone(), parts.headers.clone());
                blocking(move || authenticate(&st, &headers)).await
            }
        };
        match signed_in {
            Ok(principal) => {
                parts.extensions.insert(principal);
            }
            Err(refused) => return refused.into_response(),
        }
    }
    let limit = if path == ENROL_PATH {
        MAX_ENROL_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    // Charge the body's memory before reading it (a GET has none to charge).
    let declared = http_body::Body::size_hint(&body).exact();
    let kib = declared
        .unwrap_or(limit as u64 + 1)
        .min(limit as u64 + 1)
        .div_ceil(1024) as u32;
    let _budget = if kib == 0 {
        None
    } else {
        match tokio::time::timeout(
            state.permit_wait,
            state.body_budget_kib.clone().acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(charge)) => Some(charge),
            _ => return busy(),
        }
    };
    let body = match read_body(body, limit, state.body_timeout).await {
        Ok(body) => body,
        // A client too slow to send its body, or sending far too much, is not worth keeping
        // the connection for.
        Err(refused) => return close_after(refused.into_response()),
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    match permit(&state.in_flight, state.permit_wait).await {
        Ok(_permit) => next.run(request).await,
        Err(busy) => busy,
    }
}

/// The whole body, at most `limit` bytes plus one (so handlers still tell "over the limit" from
/// "at it" as before), within `timeout`.
///
/// A body over the limit is not kept, but the rest of it is read and thrown away (up to
/// [`MAX_REQUEST_BYTES`] more, within the same timeout) so the client, still sending, can read
/// the 413 instead of finding the connection reset under it.
async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> ApiResult<axum::body::Bytes> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over {limit} bytes"),
        )
    };
    let read = async move {
        let mut body = body;
        let declared = http_body::Body::size_hint(&body).lower() as usize;
        let mut kept = Vec::with_capacity(declared.min(limit + 1));
        let mut discarded = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("malformed_request", format!("request body unreadable: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if discarded == 0 && kept.len() + data.len() <= limit + 1 {
                kept.extend_from_slice(&data);
                continue;
            }
            discarded += kept.len() + data.len();
            kept = Vec::new();
            if discarded > limit + 1 + MAX_REQUEST_BYTES {
                // Not worth reading on: answer, and let the connection close.
                return Ok(Err(()));
            }
        }
        Ok(if discarded > 0 { Err(()) } else { Ok(kept) })
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {} s", timeout.as_secs()),
        )),
        Ok(Err(unreadable)) => Err(unreadable),
        Ok(Ok(Err(()))) => Err(too_large()),
        Ok(Ok(Ok(kept))) => Ok(kept.into()),
    }
}

/// Ask hyper to close the connection after this answer rather than wait for the rest of the body.
fn close_after(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A permit, or 503 (with `Retry-After`) if none frees up within `wait`. Phones retry later;
/// what they hold stays in their outbox.
async fn permit(
    semaphore: &Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    match tokio::time::timeout(wait, semaphore.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

/// 503 `busy` with `Retry-After`.
fn busy() -> Response {
    (
        [(axum::http::header::RETRY_AFTER, "5")],
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "server busy; try again shortly",
        ),
    )
        .into_response()
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

pub fn now() -> Millis {
    caresync_core::clock::system_now()
}
