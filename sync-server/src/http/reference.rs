//! Reference data the office keeps: teams, clients (with their location and door tags), contracts.

use super::authed::{Authed, Office, OfficeOrSupervisor, Operations};
use super::office::{json_body, parse_id};
use super::{blocking, ApiError, ApiResult, AppState};
use crate::services::{reference, scope};
use crate::store::{Client, Contract, Team};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use caresync_core::domain::*;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .op("post", "/api/v1/teams", create_team)
        .op("get", "/api/v1/teams", list_teams)
        .op("post", "/api/v1/clients", create_client)
        .op("get", "/api/v1/clients", list_clients)
        .op("get", "/api/v1/clients/{id}", get_client)
        .op("put", "/api/v1/clients/{id}", put_client)
        .op("post", "/api/v1/contracts", create_contract)
        .op("get", "/api/v1/contracts", list_contracts)
        .op("get", "/api/v1/contracts/{id}", get_contract)
        .op("put", "/api/v1/contracts/{id}", put_contract)
}

#[derive(utoipa::ToSchema, Deserialize)]
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
        let team = reference::create_team(st.store.as_ref(), &t.name)?;
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

#[derive(utoipa::ToSchema, Deserialize)]
pub struct ClientBody {
    id: Option<ClientId>,
    name: String,
    location: Option<Location>,
    #[serde(default)]
    tag_ids: Vec<String>,
}

async fn create_client(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<ClientBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Client>)> {
    blocking(move || {
        let body = json_body(body)?;
        let id = body.id.unwrap_or_default();
        let client = reference::create_client(st.store.as_ref(), body.into_client(id))?;
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
        reference::require_client(st.store.as_ref(), id)?;
        let client = reference::update_client(st.store.as_ref(), json_body(body)?.into_client(id))?;
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

impl ClientBody {
    fn into_client(self, id: ClientId) -> Client {
        Client {
            id,
            name: self.name,
            location: self.location,
            tag_ids: self.tag_ids,
        }
    }
}

#[derive(utoipa::ToSchema, Deserialize)]
pub struct ContractBody {
    id: Option<ContractId>,
    name: String,
    commissioner: String,
    model: CommissioningModel,
    /// Thresholds, KPI targets and billing rule; omitted fields take the brief's defaults.
    #[serde(default)]
    #[schema(value_type = Option<caresync_core::metrics::ContractRules>)]
    rules: Option<serde_json::Value>,
}

impl ContractBody {
    fn into_draft(self, id: ContractId) -> reference::ContractDraft {
        reference::ContractDraft {
            id,
            name: self.name,
            commissioner: self.commissioner,
            model: self.model,
            rules: self.rules,
        }
    }
}

async fn create_contract(
    State(st): State<AppState>,
    _: Authed<Office>,
    body: Result<Json<ContractBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Contract>)> {
    blocking(move || {
        let body = json_body(body)?;
        let id = body.id.unwrap_or_default();
        let contract = reference::create_contract(st.store.as_ref(), body.into_draft(id))?;
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
        reference::contract(st.store.as_ref(), id)?;
        let contract = reference::update_contract(st.store.as_ref(), json_body(body)?.into_draft(id))?;
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
        Ok(Json(reference::contract(st.store.as_ref(), id)?))
    })
    .await
}

async fn list_contracts(
    State(st): State<AppState>,
    _: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Contract>>> {
    blocking(move || Ok(Json(reference::contracts(st.store.as_ref())?))).await
}
