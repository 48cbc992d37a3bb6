//! Reference data the office keeps: teams, clients (with their location and door tags), contracts.

use super::authed::{Authed, Office, OfficeOrSupervisor};
use super::office::{json_body, parse_id};
use super::{blocking, ApiError, ApiResult, AppState};
use crate::services::scope;
use crate::store::{Client, Contract, Team};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use caresync_core::domain::*;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/teams", post(create_team).get(list_teams))
        .route("/api/v1/clients", post(create_client).get(list_clients))
        .route("/api/v1/clients/{id}", get(get_client).put(put_client))
        .route("/api/v1/contracts", post(create_contract).get(list_contracts))
        .route("/api/v1/contracts/{id}", get(get_contract).put(put_contract))
}

/// 1 to 200 characters, no control or bidi-override characters (`services::validation`).
fn check_name(name: &str) -> ApiResult<()> {
    Ok(crate::services::validation::name("the name", name)?)
}

#[derive(Deserialize)]
pub struct NewTeam {
    name: String,
}

async fn create_team(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<NewTeam>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    blocking(move || {
        let t = json_body(body)?;
        check_name(&t.name)?;
        let team = Team {
            id: TeamId::new(),
            name: t.name.trim().to_string(),
        };
        st.store.create_team(&team)?;
        Ok((StatusCode::CREATED, Json(team)))
    })
    .await
}

async fn list_teams(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Team>>> {
    blocking(move || Ok(Json(scope::teams(st.store.as_ref(), &who)?))).await
}

#[derive(Deserialize)]
pub struct ClientBody {
    id: Option<ClientId>,
    name: String,
    location: Option<Location>,
    #[serde(default)]
    tag_ids: Vec<String>,
}

fn client_from(body: ClientBody, id: ClientId) -> ApiResult<Client> {
    check_name(&body.name)?;
    if body.location.is_some_and(|l| !l.is_valid()) {
        return Err(ApiError::bad_request("invalid", "location out of range"));
    }
    crate::services::validation::tags(&body.tag_ids)?;
    if body
        .tag_ids
        .iter()
        .any(|t| t.trim().is_empty() || t.contains(',') || t.len() > 100)
    {
        return Err(ApiError::bad_request(
            "invalid",
            "tag ids are 1 to 100 characters without commas",
        ));
    }
    Ok(Client {
        id,
        name: body.name.trim().to_string(),
        location: body.location,
        tag_ids: body.tag_ids,
    })
}

async fn create_client(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<ClientBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Client>)> {
    blocking(move || {
        let body = json_body(body)?;
        let id = body.id.unwrap_or_default();
        if st.store.client(id)?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("client {id} exists"),
            ));
        }
        let client = client_from(body, id)?;
        st.store.upsert_client(&client)?;
        Ok((StatusCode::CREATED, Json(client)))
    })
    .await
}

async fn put_client(
    State(st): State<AppState>,
    _: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<ClientBody>, JsonRejection>,
) -> ApiResult<Json<Client>> {
    blocking(move || {
        let id: ClientId = parse_id(&id)?;
        st.store
            .client(id)?
            .ok_or_else(|| ApiError::not_found(format!("no client {id}")))?;
        let client = client_from(json_body(body)?, id)?;
        st.store.upsert_client(&client)?;
        Ok(Json(client))
    })
    .await
}

async fn get_client(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<Client>> {
    blocking(move || {
        let id: ClientId = parse_id(&id)?;
        Ok(Json(
            scope::client(st.store.as_ref(), &who, id)?
                .ok_or_else(|| ApiError::not_found(format!("no client {id}")))?,
        ))
    })
    .await
}

async fn list_clients(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Client>>> {
    blocking(move || Ok(Json(scope::clients(st.store.as_ref(), &who)?))).await
}

#[derive(Deserialize)]
pub struct ContractBody {
    id: Option<ContractId>,
    name: String,
    commissioner: String,
    model: CommissioningModel,
    /// Thresholds, KPI targets and billing rule; omitted fields take the brief's defaults.
    #[serde(default)]
    rules: Option<serde_json::Value>,
}

fn contract_from(body: ContractBody, id: ContractId) -> ApiResult<Contract> {
    check_name(&body.name)?;
    check_name(&body.commissioner)?;
    let rules = crate::services::reports::parse_rules(body.rules.unwrap_or(serde_json::json!({})))
        .map_err(|e| ApiError::bad_request("invalid_rules", e))?;
    Ok(Contract {
        id,
        name: body.name.trim().to_string(),
        commissioner: body.commissioner.trim().to_string(),
        model: body.model,
        rules,
    })
}

async fn create_contract(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<ContractBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Contract>)> {
    blocking(move || {
        let body = json_body(body)?;
        let id = body.id.unwrap_or_default();
        if st.store.contract(id)?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("contract {id} exists"),
            ));
        }
        let contract = contract_from(body, id)?;
        st.store.upsert_contract(&contract)?;
        Ok((StatusCode::CREATED, Json(contract)))
    })
    .await
}

async fn put_contract(
    State(st): State<AppState>,
    _: Authed<Office>,
    Path(id): Path<String>,
    body: Result<Json<ContractBody>, JsonRejection>,
) -> ApiResult<Json<Contract>> {
    blocking(move || {
        let id: ContractId = parse_id(&id)?;
        st.store
            .contract(id)?
            .ok_or_else(|| ApiError::not_found(format!("no contract {id}")))?;
        let contract = contract_from(json_body(body)?, id)?;
        st.store.upsert_contract(&contract)?;
        Ok(Json(contract))
    })
    .await
}

async fn get_contract(
    State(st): State<AppState>,
    _: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
) -> ApiResult<Json<Contract>> {
    blocking(move || {
        let id: ContractId = parse_id(&id)?;
        Ok(Json(st.store.contract(id)?.ok_or_else(|| {
            ApiError::not_found(format!("no contract {id}"))
        })?))
    })
    .await
}

async fn list_contracts(
    State(st): State<AppState>,
    _: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Contract>>> {
    blocking(move || Ok(Json(st.store.contracts()?))).await
}
