//! HTTP: routes, shared state, and the problem body every error answers with.

mod office;
pub mod openapi;
mod ops;
mod oversight;
mod reference;
mod reports;
mod sign_in;
mod supervision;
mod sync;

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
    /// Requests being handled at once; the rest wait with their bodies unread, so request
    /// memory is bounded by [`MAX_IN_FLIGHT`] × the body limit whatever the number of phones.
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
    /// Alert deadlines and the sweep's pace (`services::alerts`).
    pub oversight: Arc<crate::services::alerts::OversightSettings>,
}

/// See [`AppState::reports_in_flight`].
pub const MAX_REPORTS_IN_FLIGHT: usize = 2;
/// The default of [`AppState::permit_wait`].
pub const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// More than the two cores and the one SQLite writer can use; each holds at most one body.
pub const MAX_IN_FLIGHT: usize = 32;

impl AppState {
    pub fn new(store: Arc<dyn ServerStore>) -> Self {
        Self {
            visits: Arc::new(VisitService::new(store.clone(), 10_000)),
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
        .route(SYNC_PATH, post(sync::sync))
        .route(ENROL_PATH, post(sync::enrol))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(openapi::openapi))
        .merge(office::routes())
        .merge(reference::routes())
        .merge(supervision::routes())
        .merge(reports::routes())
        .merge(oversight::routes())
        // One byte over the limit is enough to tell "too large" from "exactly at the limit".
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES + 1))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_in_flight,
        ))
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
            other => ApiError::internal(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The caller, from `Authorization: Bearer <token>`; 401 if missing, unknown, revoked or
/// expired, or the person was deactivated (each failure is logged and counted by `sign_in`).
fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    crate::services::people::authenticate(state.store.as_ref(), token, now())?.map_err(sign_in::refused)
}

/// Hold a permit while a request is read and answered (see [`AppState::in_flight`]).
async fn limit_in_flight(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Probes must answer even when every permit is taken, or a busy instance looks dead.
    if matches!(request.uri().path(), "/healthz" | "/metrics") {
        return next.run(request).await;
    }
    match permit(&state.in_flight, state.permit_wait).await {
        Ok(_permit) => next.run(request).await,
        Err(busy) => busy,
    }
}

/// A permit, or 503 (with `Retry-After`) if none frees up within `wait`. Phones retry later;
/// what they hold stays in their outbox.
async fn permit(
    semaphore: &Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    match tokio::time::timeout(wait, semaphore.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err((
            [(axum::http::header::RETRY_AFTER, "5")],
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "server busy; try again shortly",
            ),
        )
            .into_response()),
    }
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

pub fn now() -> Millis {
    caresync_core::clock::system_now()
}
