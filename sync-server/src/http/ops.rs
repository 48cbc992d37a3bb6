//! Health and Prometheus metrics.

use super::AppState;
use axum::extract::State;
use axum::Json;

/// The answer to `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    status: &'static str,
    /// The server's version.
    version: &'static str,
}

pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

pub async fn metrics(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .telemetry
            .render(state.visits.cached_documents(), state.store.group_commits()),
    )
}
