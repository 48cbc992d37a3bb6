//! The dashboard: server-rendered pages for supervisors and the office, on the same router as the
//! API (mounted at `/`). Templates are compiled into the binary (askama), charts are SVG drawn on
//! the server (plotters), and every asset is embedded, so it works with no internet.
//!
//! A page parses its request, asks [`session`] who is signed in, asks [`scope`] what that person
//! may see (the API's own check), reads figures from `services::reports`, and renders.

mod assets;
mod carer;
mod charts;
mod format;
mod oversight;
mod people;
mod reports;
pub mod scope;
pub mod session;
mod signin;
mod today;
mod visit;

use crate::http::AppState;
use crate::services::visits::VisitServiceError;
use crate::store::StoreError;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// Every path the dashboard serves: pages, not API operations, so not in the OpenAPI document. A
/// test that checks the document against the router's routes excludes exactly these.
pub const PAGE_PATHS: &[&str] = &[
    "/",
    "/signin",
    "/signout",
    "/visits/{id}",
    "/visits/{id}/amend",
    "/visits/{id}/note",
    "/visits/{id}/reschedule",
    "/visits/{id}/reassign",
    "/visits/{id}/cancel",
    "/carers/{id}",
    "/punctuality",
    "/punctuality.csv",
    "/kpi",
    "/reconciliation",
    "/continuity",
    "/alerts",
    "/alerts/{id}/acknowledge",
    "/alerts/{id}/resolve",
    "/oversight",
    "/oversight.csv",
    "/escalations",
    "/escalations/{id}/raise",
    "/commissioner-contacts",
    "/people",
    "/people/{id}/enrolment",
    "/people/{id}/deactivate",
    "/devices/{id}/revoke",
    "/assets/{name}",
];

/// The dashboard's routes (see [`PAGE_PATHS`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(today::board))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/visits/{id}", get(visit::page_route))
        .route("/visits/{id}/amend", post(visit::amend))
        .route("/visits/{id}/note", post(visit::note))
        .route("/visits/{id}/reschedule", post(visit::reschedule))
        .route("/visits/{id}/reassign", post(visit::reassign))
        .route("/visits/{id}/cancel", post(visit::cancel))
        .route("/carers/{id}", get(carer::page_route))
        .route("/punctuality", get(reports::punctuality))
        .route("/punctuality.csv", get(reports::punctuality_csv))
        .route("/kpi", get(reports::kpi))
        .route("/reconciliation", get(reports::reconciliation))
        .route("/continuity", get(reports::continuity))
        .route("/alerts", get(oversight::alerts_page))
        .route("/alerts/{id}/acknowledge", post(oversight::acknowledge))
        .route("/alerts/{id}/resolve", post(oversight::resolve))
        .route("/oversight", get(oversight::figures))
        .route("/oversight.csv", get(oversight::figures_csv))
        .route("/escalations", get(oversight::escalations_page))
        .route("/escalations/{id}/raise", post(oversight::raise))
        .route("/commissioner-contacts", post(oversight::add_contact))
        .route("/people", get(people::page_route))
        .route("/people/{id}/enrolment", post(people::enrolment))
        .route("/people/{id}/deactivate", post(people::deactivate))
        .route("/devices/{id}/revoke", post(people::revoke))
        .route("/assets/{name}", get(assets::asset))
}

/// Why a page could not be shown, as a person reads it.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in, or the session ended: back to the sign-in page.
    SignIn,
    /// Unknown, or outside the viewer's team: the same answer, so nothing leaks.
    NotFound,
    Forbidden(&'static str),
    /// The form's CSRF token is missing or not this session's.
    Csrf,
    BadRequest(String),
    /// Someone else changed it first (an alert already acknowledged, an escalation already raised).
    Conflict(String),
    Internal(String),
}

pub type WebResult<T> = Result<T, WebError>;

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<VisitServiceError> for WebError {
    fn from(e: VisitServiceError) -> Self {
        match e {
            VisitServiceError::UnknownVisit(_) => WebError::NotFound,
            VisitServiceError::Invalid(m) => WebError::BadRequest(m),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<crate::http::ApiError> for WebError {
    fn from(e: crate::http::ApiError) -> Self {
        match e.status {
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => WebError::NotFound,
            StatusCode::UNAUTHORIZED => WebError::SignIn,
            StatusCode::BAD_REQUEST => WebError::BadRequest(e.problem.message),
            _ => WebError::Internal(e.problem.message),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            WebError::SignIn => {
                return axum::response::Redirect::to("/signin").into_response();
            }
            WebError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here that you can see. Go back to Today and pick from the list."
                    .to_string(),
            ),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.to_string()),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form is from another sign-in. Go back, reload the page and try again.".to_string(),
            ),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Please check the form", m),
            WebError::Conflict(m) => (StatusCode::CONFLICT, "Already done", m),
            WebError::Internal(e) => {
                // Errors carry ids and causes, never note text.
                tracing::error!(error = %e, "dashboard page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not show this page; the details are in its log.".to_string(),
                )
            }
        };
        let body = ErrorPage { title, message }
            .render()
            .unwrap_or_else(|_| title.to_string());
        (status, Html(body)).into_response()
    }
}

/// Render a template as a page that is never cached (it holds personal data).
fn page(t: &impl Template) -> WebResult<Response> {
    let html = t.render()?;
    Ok((
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::X_FRAME_OPTIONS, "DENY"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        Html(html),
    )
        .into_response())
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> WebResult<T> + Send + 'static) -> WebResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
}

/// What the layout shows around every page: who is signed in, the form token, the current tab.
pub struct Chrome {
    pub name: String,
    pub role: &'static str,
    pub is_office: bool,
    pub csrf: String,
    pub tab: &'static str,
    pub team: String,
}
