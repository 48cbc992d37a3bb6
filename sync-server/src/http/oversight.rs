//! Alerts as records, for supervisors and the office: list, read with history, acknowledge,
//! resolve; and the oversight figures per team and month. Scoping is the visits' scoping
//! (`services::scope`): an alert is in a supervisor's scope when its visit is.

use super::authed::{Authed, Office, OfficeOrSupervisor, Operations};
use super::office::{json_body, parse_id};
use super::{blocking, now, ApiError, ApiResult, AppState};
use crate::services::alerts::{self, LifecycleError, OversightRow};
use crate::services::escalations::{self, EscalationView, RaiseError};
use crate::services::{schedule, scope};
use crate::store::alerts::{AlertEntry, AlertQuery, AlertRecord, CommissionerContact, ResolutionAction};
use crate::store::Principal;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use caresync_core::domain::*;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .op("get", "/api/v1/oversight/alerts", list)
        .op("get", "/api/v1/oversight/alerts/{id}", one)
        .op("post", "/api/v1/oversight/alerts/{id}/acknowledge", acknowledge)
        .op("post", "/api/v1/oversight/alerts/{id}/resolve", resolve)
        .op("get", "/api/v1/oversight/figures", |s, h, q| {
            figures(s, h, q, false)
        })
        .op("get", "/api/v1/oversight/figures.csv", |s, h, q| {
            figures(s, h, q, true)
        })
        .op("get", "/api/v1/oversight/kpi-projection", kpi_projection)
        .op("get", "/api/v1/oversight/escalations", list_escalations)
        .op("post", "/api/v1/oversight/escalations/raise", raise_escalation)
        .op("get", "/api/v1/oversight/commissioner-contacts", list_contacts)
        .op("post", "/api/v1/oversight/commissioner-contacts", add_contact)
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Final(_) | LifecycleError::AlreadyAcknowledged => {
                ApiError::new(StatusCode::CONFLICT, "alert_closed", e.to_string())
            }
            LifecycleError::BadNote => ApiError::bad_request("invalid", e.to_string()),
            LifecycleError::Unknown(id) => ApiError::not_found(format!("no alert {id}")),
            LifecycleError::Store(s) => s.into(),
        }
    }
}

/// The alert if it exists and its visit is in the caller's scope; otherwise 404.
fn alert_in_scope(st: &AppState, who: &Principal, id: AlertId) -> ApiResult<AlertRecord> {
    scope::alert(st.store.as_ref(), who, id)?.ok_or_else(|| ApiError::not_found(format!("no alert {id}")))
}

#[derive(Deserialize)]
pub struct ListParams {
    /// `open` (default: raised or acknowledged) or `all`.
    state: Option<String>,
    /// Raised on or after this local day.
    from: Option<NaiveDate>,
    /// Raised before this local day.
    to: Option<NaiveDate>,
}

async fn list(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<Vec<AlertRecord>>> {
    blocking(move || {
        let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let open_only = match p.state.as_deref() {
            None | Some("open") => true,
            Some("all") => false,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("state {other:?}: open or all"),
                ))
            }
        };
        let day = |d: NaiveDate| caresync_core::store::local_day_bounds(st.tz, d).0;
        let alerts = scope::alerts(
            st.store.as_ref(),
            &who,
            &AlertQuery {
                open_only,
                raised_from: p.from.map(day),
                raised_to: p.to.map(day),
                visit: None,
            },
        )?;
        Ok(Json(alerts))
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct AlertWithHistory {
    alert: AlertRecord,
    history: Vec<AlertEntry>,
}

async fn one(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertWithHistory>> {
    blocking(move || {
        let alert = alert_in_scope(&st, &who, parse_id(&id)?)?;
        let history = alerts::history(st.store.as_ref(), alert.alert_id)?;
        Ok(Json(AlertWithHistory { alert, history }))
    })
    .await
}

async fn acknowledge(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertRecord>> {
    blocking(move || {
        let alert = alert_in_scope(&st, &who, parse_id(&id)?)?;
        Ok(Json(alerts::acknowledge_by(
            st.store.as_ref(),
            alert.alert_id,
            who.person.id,
            now(),
        )?))
    })
    .await
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct Resolution {
    action: ResolutionAction,
    note: String,
}

async fn resolve(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
    body: Result<Json<Resolution>, JsonRejection>,
) -> ApiResult<Json<AlertRecord>> {
    blocking(move || {
        // Scope before the body: a malformed body must not tell another team's alert exists.
        let alert = alert_in_scope(&st, &who, parse_id(&id)?)?;
        let r = json_body(body)?;
        Ok(Json(alerts::resolve_by(
            st.store.as_ref(),
            alert.alert_id,
            who.person.id,
            now(),
            r.action,
            &r.note,
        )?))
    })
    .await
}

#[derive(Deserialize)]
pub struct FiguresParams {
    /// First local day, `YYYY-MM-DD`.
    from: NaiveDate,
    /// Day after the last (exclusive).
    to: NaiveDate,
}

/// Per team and month. A supervisor gets their own team's rows only.
async fn figures(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    params: Result<Query<FiguresParams>, QueryRejection>,
    csv: bool,
) -> ApiResult<Response> {
    blocking(move || {
        let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let (from, to) = crate::services::reports::day_range(st.tz, p.from, p.to)
            .map_err(|e| ApiError::bad_request("invalid_query", e))?;
        let rows: Vec<OversightRow> = alerts::figures_for(st.store.as_ref(), &who, st.tz, from, to, now())?;
        Ok(if csv {
            (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                alerts::figures_csv(&rows),
            )
                .into_response()
        } else {
            Json(rows).into_response()
        })
    })
    .await
}

impl From<RaiseError> for ApiError {
    fn from(e: RaiseError) -> Self {
        match e {
            RaiseError::Unknown(_) => ApiError::not_found(e.to_string()),
            RaiseError::AlreadyRaised(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_raised", e.to_string())
            }
            RaiseError::BadSummary => ApiError::bad_request("invalid", e.to_string()),
            RaiseError::Store(s) => s.into(),
        }
    }
}

/// Reconciliation escalations with their due day, status and whether raised in time (office).
async fn list_escalations(
    State(st): State<AppState>,
    _: Authed<Office>,
) -> ApiResult<Json<Vec<EscalationView>>> {
    blocking(move || Ok(Json(escalations::list(st.store.as_ref(), st.tz, now())?))).await
}

#[derive(utoipa::ToSchema)]
#[schema(as = RaiseEscalation)]
#[derive(Deserialize)]
pub struct RaiseBody {
    #[schema(format = Uuid)]
    escalation_id: String,
    /// What the commissioner was told (kept as the contact's summary).
    summary: String,
}

async fn raise_escalation(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    body: Result<Json<RaiseBody>, JsonRejection>,
) -> ApiResult<Json<EscalationView>> {
    blocking(move || {
        let b = json_body(body)?;
        Ok(Json(escalations::raise(
            st.store.as_ref(),
            st.tz,
            &b.escalation_id,
            who.person.id,
            &b.summary,
            now(),
        )?))
    })
    .await
}

async fn list_contacts(
    State(st): State<AppState>,
    _: Authed<Office>,
) -> ApiResult<Json<Vec<CommissionerContact>>> {
    blocking(move || Ok(Json(escalations::contacts(st.store.as_ref())?))).await
}

#[derive(utoipa::ToSchema)]
#[schema(as = NewCommissionerContact)]
#[derive(Deserialize)]
pub struct NewContact {
    contract_id: ContractId,
    /// The local day of the contact.
    date: NaiveDate,
    summary: String,
}

async fn add_contact(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    body: Result<Json<NewContact>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CommissionerContact>)> {
    blocking(move || {
        let c = json_body(body)?;
        schedule::check_contract(st.store.as_ref(), c.contract_id)?;
        let contact = escalations::record_contact(
            st.store.as_ref(),
            c.contract_id,
            c.date,
            &c.summary,
            who.person.id,
            now(),
        )?;
        Ok((StatusCode::CREATED, Json(contact)))
    })
    .await
}

/// Each framework contract's month to date and its projection to the month's end (office).
async fn kpi_projection(
    State(st): State<AppState>,
    _: Authed<Office>,
) -> ApiResult<Json<Vec<escalations::ContractProjection>>> {
    blocking(move || {
        Ok(Json(escalations::kpi_projections(
            st.store.as_ref(),
            st.tz,
            now(),
        )?))
    })
    .await
}
