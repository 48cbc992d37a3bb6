//! The office and supervisor API (JSON under /api/v1): people, enrolment, devices, visits.

use super::authed::{Authed, Office, OfficeOrSelf, OfficeOrSupervisor, Operations};
use super::{blocking, now, ApiError, ApiResult, AppState};
use crate::services::schedule::ScheduleEdit;
use crate::services::{people, schedule, scope, Refused};
use crate::store::{Device, EventRow, Person, Principal};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use caresync_core::domain::*;
use caresync_core::visit_document::{Schedule, Task, Visit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .op("post", "/api/v1/people", create_person)
        .op("get", "/api/v1/people", list_people)
        .op("post", "/api/v1/people/{id}/enrolment-codes", issue_code)
        .op("post", "/api/v1/people/{id}/deactivate", deactivate_person)
        .op("post", "/api/v1/people/{id}/token", rotate_token)
        .op("post", "/api/v1/people/{id}/tokens/revoke", revoke_tokens)
        .op("get", "/api/v1/devices", list_devices)
        .op("post", "/api/v1/devices/{id}/revoke", revoke_device)
        .op("post", "/api/v1/visits", create_visits)
        .op("get", "/api/v1/visits/{id}", get_visit)
        .op("post", "/api/v1/visits/{id}/reschedule", reschedule)
        .op("post", "/api/v1/visits/{id}/reassign", reassign)
        .op("post", "/api/v1/visits/{id}/cancel", cancel)
        .op("post", "/api/v1/visits/{id}/contract", move_contract)
}

pub(super) fn parse_id<T: std::str::FromStr>(s: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("{s:?} is not a valid id")))
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<T> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::new(e.status(), "malformed_request", e.body_text()))
}

fn millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct NewPerson {
    name: String,
    role: Role,
    team_id: Option<TeamId>,
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct CreatedPerson {
    person: Person,
    /// The API token for office and supervisors, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

async fn create_person(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<NewPerson>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedPerson>)> {
    blocking(move || {
        let p = json_body(body)?;
        let (person, token) = people::create_checked(
            st.store.as_ref(),
            &p.name,
            p.role,
            p.team_id,
            now(),
            st.token_ttl_ms,
        )?;
        Ok((StatusCode::CREATED, Json(CreatedPerson { person, token })))
    })
    .await
}

async fn list_people(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Person>>> {
    blocking(move || Ok(Json(scope::people(st.store.as_ref(), &who)?))).await
}

/// Shut a person's account: from the next request their API tokens and phones are refused and
/// their unused enrolment codes are spent. Their visits, notes and clock events stay.
async fn deactivate_person(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
) -> ApiResult<Json<Person>> {
    blocking(move || {
        let person: PersonId = parse_id(&id)?;
        Ok(Json(people::deactivate_by(
            st.store.as_ref(),
            &who,
            person,
            now(),
        )?))
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct IssuedToken {
    person_id: PersonId,
    /// Shown once; the person's earlier tokens stopped working.
    token: String,
    expires_at: DateTime<Utc>,
}

/// A new API token for an office person or supervisor; their earlier ones stop at once. The
/// office may rotate anyone's; a supervisor (or office person) their own.
async fn rotate_token(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSelf>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    blocking(move || {
        let person_id: PersonId = parse_id(&id)?;
        let issued = people::rotate_token_by(st.store.as_ref(), &who, person_id, now(), st.token_ttl_ms)?;
        Ok((
            StatusCode::CREATED,
            Json(IssuedToken {
                person_id,
                token: issued.token,
                expires_at: DateTime::from_timestamp_millis(issued.expires_at).unwrap_or_default(),
            }),
        ))
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct RevokedTokens {
    revoked: u64,
}

/// Revoke every API token of a person (they keep their account; the office can issue a new
/// token by rotating).
async fn revoke_tokens(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
) -> ApiResult<Json<RevokedTokens>> {
    blocking(move || {
        let person: PersonId = parse_id(&id)?;
        let revoked = people::revoke_tokens_by(st.store.as_ref(), &who, person, now())?;
        Ok(Json(RevokedTokens { revoked }))
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct EnrolmentCode {
    code: String,
    expires_at: DateTime<Utc>,
}

async fn issue_code(
    State(st): State<AppState>,
    _: Authed<Office>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<EnrolmentCode>)> {
    blocking(move || {
        let person_id: PersonId = parse_id(&id)?;
        // Not found says the id as it was given.
        let issued = people::issue_code_for(st.store.as_ref(), person_id, now()).map_err(|e| match e {
            Refused::NotFound(_) => ApiError::not_found(format!("no person {id}")),
            other => other.into(),
        })?;
        let expires_at = DateTime::from_timestamp_millis(issued.expires_at).unwrap_or_default();
        Ok((
            StatusCode::CREATED,
            Json(EnrolmentCode {
                code: issued.code,
                expires_at,
            }),
        ))
    })
    .await
}

async fn list_devices(State(st): State<AppState>, _: Authed<Office>) -> ApiResult<Json<Vec<Device>>> {
    blocking(move || Ok(Json(people::devices(st.store.as_ref())?))).await
}

async fn revoke_device(
    State(st): State<AppState>,
    _: Authed<Office>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        let device: DeviceId = parse_id(&id)?;
        // Not found says the id as it was given.
        people::revoke_device(st.store.as_ref(), device, now()).map_err(|e| match e {
            Refused::NotFound(_) => ApiError::not_found(format!("no device {id}")),
            other => other.into(),
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct NewVisit {
    visit_id: Option<VisitId>,
    client_id: ClientId,
    contract_id: ContractId,
    #[schema(min_items = 1, max_items = 2)]
    carers: Vec<PersonId>,
    planned_start: DateTime<Utc>,
    planned_end: DateTime<Utc>,
    #[serde(default)]
    tasks: Vec<String>,
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct NewVisits {
    visits: Vec<NewVisit>,
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct CreatedVisits {
    visit_ids: Vec<VisitId>,
}

/// Most visits in one bulk create.
const MAX_BULK_VISITS: usize = 5_000;

async fn create_visits(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    body: Result<Json<NewVisits>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedVisits>)> {
    blocking(move || {
        let new = json_body(body)?;
        if new.visits.len() > MAX_BULK_VISITS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_visits",
                format!("at most {MAX_BULK_VISITS} visits per request"),
            ));
        }
        // Check everything first so a bad entry creates nothing.
        for (i, v) in new.visits.iter().enumerate() {
            let planned = schedule::Planned {
                client_id: v.client_id,
                contract_id: v.contract_id,
                carers: &v.carers,
                planned_start: millis(v.planned_start),
                planned_end: millis(v.planned_end),
                tasks: &v.tasks,
            };
            schedule::check_new_visit(st.store.as_ref(), i, &planned)?;
        }
        let at = now();
        let mut ids = Vec::with_capacity(new.visits.len());
        for v in new.visits {
            let id = v.visit_id.unwrap_or_default();
            let schedule = Schedule {
                client_id: v.client_id,
                contract_id: v.contract_id,
                carers: v.carers,
                planned_start: millis(v.planned_start),
                planned_end: millis(v.planned_end),
                tasks: v
                    .tasks
                    .into_iter()
                    .map(|title| Task {
                        id: TaskId::new(),
                        title,
                    })
                    .collect(),
                status: VisitStatus::Scheduled,
                cancel_reason: None,
                chargeable: None,
            };
            st.visits.create(id, &schedule, who.person.id, at)?;
            ids.push(id);
        }
        Ok((StatusCode::CREATED, Json(CreatedVisits { visit_ids: ids })))
    })
    .await
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct VisitView {
    visit: Visit,
    /// Clock events as the server received them, with trusted and received times and flags.
    events: Vec<EventRow>,
    /// The document's Automerge heads (hex), to compare replicas.
    heads: Vec<String>,
}

async fn get_visit(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<VisitView>> {
    blocking(move || {
        let visit_id: VisitId = parse_id(&id)?;
        let visit = super::supervision::visit_in_scope(&st, &who, visit_id)?;
        let events = schedule::events(st.store.as_ref(), visit_id)?;
        let heads = st.visits.heads(visit_id)?.to_hex();
        Ok(Json(VisitView { visit, events, heads }))
    })
    .await
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct Reschedule {
    planned_start: DateTime<Utc>,
    planned_end: DateTime<Utc>,
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct Reassign {
    carers: Vec<PersonId>,
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct MoveContract {
    contract_id: ContractId,
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct Cancel {
    reason: String,
    chargeable: bool,
}

/// Apply a checked office edit to the schedule (the visit id is read after the body, as the
/// checks need nothing of the visit) and answer with the visit as it now stands.
fn edit_schedule(st: &AppState, who: &Principal, id: &str, edit: ScheduleEdit) -> ApiResult<Json<Visit>> {
    let visit_id: VisitId = parse_id(id)?;
    Ok(Json(schedule::edit(
        &st.visits,
        who.person.id,
        visit_id,
        now(),
        edit,
    )?))
}

async fn reschedule(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<Reschedule>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Visit>> {
    blocking(move || {
        let r = json_body(body)?;
        let edit = ScheduleEdit::reschedule(r.planned_start, r.planned_end)?;
        edit_schedule(&st, &who, &id, edit)
    })
    .await
}

async fn reassign(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<Reassign>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Visit>> {
    blocking(move || {
        let r = json_body(body)?;
        let edit = ScheduleEdit::reassign(st.store.as_ref(), r.carers)?;
        edit_schedule(&st, &who, &id, edit)
    })
    .await
}

async fn cancel(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<Cancel>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Visit>> {
    blocking(move || {
        let c = json_body(body)?;
        let edit = ScheduleEdit::cancel(c.reason, c.chargeable)?;
        edit_schedule(&st, &who, &id, edit)
    })
    .await
}

/// Move a visit to another contract (a package that changes commissioner or model mid-month):
/// from now on its figures fall in the new contract's; a report as of earlier keeps the old one.
async fn move_contract(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<MoveContract>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Visit>> {
    blocking(move || {
        let m = json_body(body)?;
        let edit = ScheduleEdit::move_contract(st.store.as_ref(), m.contract_id)?;
        edit_schedule(&st, &who, &id, edit)
    })
    .await
}
