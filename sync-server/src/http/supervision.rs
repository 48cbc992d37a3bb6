//! What supervisors (and the office) do: amend actual times, add notes, read timelines.
//! A supervisor sees and acts on visits with at least one carer in their team.

use super::authed::{Authed, OfficeOrSupervisor, Operations};
use super::office::{json_body, parse_id};
use super::{blocking, now, ApiError, ApiResult, AppState};
use crate::services::timeline::{self, VisitTimeline};
use crate::services::{scope, supervision};
use crate::store::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use caresync_core::domain::*;
use caresync_core::visit_document::{Amendment, Note, Visit};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .op("post", "/api/v1/visits/{id}/amendments", amend)
        .op("post", "/api/v1/visits/{id}/notes", add_note)
        .op("get", "/api/v1/visits/{id}/timeline", visit_timeline)
        .op("get", "/api/v1/carers/{id}/timeline", carer_timeline)
}

/// The visit's document if the caller may see it; outside their scope it is "not found", the
/// same as an id that does not exist (`services::scope`).
pub(super) fn visit_in_scope(st: &AppState, who: &Principal, visit: VisitId) -> ApiResult<Visit> {
    scope::visit(st.store.as_ref(), who, visit)?
        .ok_or_else(|| ApiError::not_found(format!("no visit {visit}")))?;
    Ok(st.visits.read(visit)?)
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct NewAmendment {
    carer_id: PersonId,
    time: AmendedTime,
    corrected_time: DateTime<Utc>,
    reason: ReasonCode,
    comment: Option<String>,
}

async fn amend(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
    body: Result<Json<NewAmendment>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Amendment>)> {
    blocking(move || {
        let visit_id: VisitId = parse_id(&id)?;
        // Scope before the body: a malformed body must not tell another team's visit exists.
        let current = visit_in_scope(&st, &who, visit_id)?;
        let a = json_body(body)?;
        let draft = supervision::AmendmentDraft {
            carer_id: a.carer_id,
            time: a.time,
            corrected_time: a.corrected_time.timestamp_millis(),
            reason: a.reason,
            comment: a.comment,
        };
        let amendment = supervision::amend(&st.visits, &who, &current, draft, now())?;
        Ok((StatusCode::CREATED, Json(amendment)))
    })
    .await
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct NewNote {
    category: NoteCategory,
    text: String,
}

async fn add_note(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Note>)> {
    blocking(move || {
        let visit_id: VisitId = parse_id(&id)?;
        visit_in_scope(&st, &who, visit_id)?;
        let n = json_body(body)?;
        let note = supervision::add_note(&st.visits, &who, visit_id, n.category, n.text, now())?;
        Ok((StatusCode::CREATED, Json(note)))
    })
    .await
}

async fn visit_timeline(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<VisitTimeline>> {
    blocking(move || {
        let visit = visit_in_scope(&st, &who, parse_id(&id)?)?;
        Ok(Json(timeline::of_visit(st.store.as_ref(), &st.visits, &visit)?))
    })
    .await
}

#[derive(Deserialize)]
pub struct DayQuery {
    /// Local date in the agency's time zone, `YYYY-MM-DD`.
    date: NaiveDate,
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct CarerDay {
    carer_id: PersonId,
    date: NaiveDate,
    visits: Vec<VisitTimeline>,
}

async fn carer_timeline(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
    query: Result<Query<DayQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<CarerDay>> {
    blocking(move || {
        let carer: PersonId = parse_id(&id)?;
        scope::person(st.store.as_ref(), &who, carer)?
            .ok_or_else(|| ApiError::not_found(format!("no person {carer}")))?;
        let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let (from, to) = caresync_core::store::local_day_bounds(st.tz, q.date);
        let visits = timeline::carer_day(st.store.as_ref(), &st.visits, carer, from, to)?;
        Ok(Json(CarerDay {
            carer_id: carer,
            date: q.date,
            visits,
        }))
    })
    .await
}
