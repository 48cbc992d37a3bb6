//! Failed sign-ins and enrolments: refused with 429 once a source has used up its failures,
//! logged (source and reason, never the code or token) and counted (`services::sign_in_limits`).

use super::{now, ApiError, AppState};
use crate::services::people::Refusal;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caresync_core::domain::PersonId;
use caresync_core::protocol::ENROL_PATH;
use std::net::{IpAddr, SocketAddr};

/// What a failed sign-in or enrolment tells the limiter and the log.
#[derive(Clone, Copy, Debug)]
pub struct SignInFailure {
    /// A stable word: `unknown_token`, `expired_token`, `wrong_code`, ...
    pub reason: &'static str,
    /// Whether it counts against the source (guesses do; revoked or expired tokens do not).
    pub counts: bool,
    /// The person the presented code or token belongs to, when known.
    pub person: Option<PersonId>,
}

impl SignInFailure {
    /// A refused token: guesses count against the source; revoked or expired tokens and
    /// deactivated people are logged but not counted.
    pub fn refused(refusal: Refusal) -> Self {
        Self {
            reason: refusal.reason(),
            counts: refusal == Refusal::Unknown,
            person: None,
        }
    }
}

/// The 401 for a refused bearer token, with a message that says what to do.
pub(super) fn refused(refusal: Refusal) -> ApiError {
    let message = match refusal {
        Refusal::Unknown => "unknown token".to_string(),
        Refusal::Revoked => "this token was revoked; ask the office for a new one".to_string(),
        Refusal::Expired { at } => format!(
            "this token expired at {}; ask the office for a new one (caresync-server rotate-token)",
            chrono::DateTime::from_timestamp_millis(at).map_or_else(|| at.to_string(), |t| t.to_rfc3339())
        ),
        Refusal::Deactivated => "this person's account was deactivated".to_string(),
    };
    let mut e = ApiError::unauthorized(&message);
    e.sign_in_failure = Some(SignInFailure::refused(refusal));
    e
}

/// The 401 for an enrolment code that did not enrol.
pub(super) fn wrong_code(owner: Option<PersonId>) -> ApiError {
    let mut e = ApiError::unauthorized("unknown, used or expired enrolment code");
    e.sign_in_failure = Some(SignInFailure {
        reason: if owner.is_some() {
            "spent_or_expired_code"
        } else {
            "wrong_code"
        },
        counts: true,
        person: owner,
    });
    e
}

/// The caller's address when the server was started with connection info (`caresync-server
/// serve` is); without it (an in-process test server) nothing is limited per source.
fn source(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

pub async fn limit_failed_sign_ins(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only the API signs in: probes and the document answer whatever header they carry.
    let path = request.uri().path();
    let signs_in = (path.starts_with("/api/v1/")
        && (request.headers().contains_key(header::AUTHORIZATION) || path == ENROL_PATH))
        // The dashboard's sign-in form takes the same tokens.
        || (path == "/signin" && request.method() == axum::http::Method::POST);
    let source = source(&request);
    if let (true, Some(ip)) = (signs_in, source) {
        if let Err(wait) = state.sign_in_limits.check_source(ip, now()) {
            // Debug, not warn: a script would otherwise write a log line per try. The lock
            // itself was logged at warn when it began.
            tracing::debug!(source = %ip, path = request.uri().path(), "sign-in refused: source locked");
            return (
                [(header::RETRY_AFTER, wait.to_string())],
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!(
                        "too many failed sign-ins or enrolments from this address; try again in {wait} s"
                    ),
                ),
            )
                .into_response();
        }
    }
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if let Some(failure) = response.extensions().get::<SignInFailure>().copied() {
        let shown = source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        let person = failure.person.map(|p| p.to_string()).unwrap_or_default();
        let failures = match (failure.counts, source) {
            (true, Some(ip)) => state.sign_in_limits.source_failed(ip, now()),
            _ => 0,
        };
        tracing::warn!(source = %shown, path = %path, reason = %failure.reason, person = %person, failures, "failed sign-in");
        let policy = state.sign_in_limits.policy();
        if failures == policy.max_per_source {
            tracing::warn!(
                source = %shown,
                minutes = policy.window_ms / 60_000,
                "too many failed attempts from this source: its sign-ins and enrolments are refused until its window ends"
            );
        }
    }
    response
}
