//! Reference data the office keeps: teams, clients (location and door tags), contracts. Each
//! write checks its values here; names are stored trimmed.

use super::{validation, Refused};
use crate::store::{Client, Contract, ServerStore, StoreError, Team};
use caresync_core::domain::*;

fn check_name(name: &str) -> Result<(), Refused> {
    Ok(validation::name("the name", name)?)
}

pub fn create_team(store: &dyn ServerStore, name: &str) -> Result<Team, Refused> {
    check_name(name)?;
    let team = Team {
        id: TeamId::new(),
        name: name.trim().to_string(),
    };
    store.create_team(&team)?;
    Ok(team)
}

/// A client as asked for, checked and with its name trimmed.
fn checked_client(raw: Client) -> Result<Client, Refused> {
    check_name(&raw.name)?;
    if raw.location.is_some_and(|l| !l.is_valid()) {
        return Err(Refused::invalid("invalid", "location out of range"));
    }
    validation::tags(&raw.tag_ids)?;
    if raw
        .tag_ids
        .iter()
        .any(|t| t.trim().is_empty() || t.contains(',') || t.len() > 100)
    {
        return Err(Refused::invalid(
            "invalid",
            "tag ids are 1 to 100 characters without commas",
        ));
    }
    Ok(Client {
        name: raw.name.trim().to_string(),
        ..raw
    })
}

/// A new client; 409 `already_exists` if its id is taken.
pub fn create_client(store: &dyn ServerStore, raw: Client) -> Result<Client, Refused> {
    if store.client(raw.id)?.is_some() {
        return Err(Refused::conflict(
            "already_exists",
            format!("client {} exists", raw.id),
        ));
    }
    let client = checked_client(raw)?;
    store.upsert_client(&client)?;
    Ok(client)
}

/// The client exists (checked before an update's body is read).
pub fn require_client(store: &dyn ServerStore, id: ClientId) -> Result<(), Refused> {
    store
        .client(id)?
        .map(|_| ())
        .ok_or_else(|| Refused::NotFound(format!("no client {id}")))
}

/// Replace a client's details.
pub fn update_client(store: &dyn ServerStore, raw: Client) -> Result<Client, Refused> {
    let client = checked_client(raw)?;
    store.upsert_client(&client)?;
    Ok(client)
}

/// A contract as asked for: names, model, and rules whose omitted fields take the defaults.
pub struct ContractDraft {
    pub id: ContractId,
    pub name: String,
    pub commissioner: String,
    pub model: CommissioningModel,
    pub rules: Option<serde_json::Value>,
}

fn checked_contract(draft: ContractDraft) -> Result<Contract, Refused> {
    check_name(&draft.name)?;
    check_name(&draft.commissioner)?;
    let rules = super::reports::parse_rules(draft.rules.unwrap_or(serde_json::json!({})))
        .map_err(|e| Refused::invalid("invalid_rules", e))?;
    Ok(Contract {
        id: draft.id,
        name: draft.name.trim().to_string(),
        commissioner: draft.commissioner.trim().to_string(),
        model: draft.model,
        rules,
    })
}

/// A new contract; 409 `already_exists` if its id is taken.
pub fn create_contract(store: &dyn ServerStore, draft: ContractDraft) -> Result<Contract, Refused> {
    if store.contract(draft.id)?.is_some() {
        return Err(Refused::conflict(
            "already_exists",
            format!("contract {} exists", draft.id),
        ));
    }
    let contract = checked_contract(draft)?;
    store.upsert_contract(&contract)?;
    Ok(contract)
}

/// One contract (reference data: every supervisor may read it).
pub fn contract(store: &dyn ServerStore, id: ContractId) -> Result<Contract, Refused> {
    store
        .contract(id)?
        .ok_or_else(|| Refused::NotFound(format!("no contract {id}")))
}

/// Replace a contract's details and rules.
pub fn update_contract(store: &dyn ServerStore, draft: ContractDraft) -> Result<Contract, Refused> {
    let contract = checked_contract(draft)?;
    store.upsert_contract(&contract)?;
    Ok(contract)
}

pub fn contracts(store: &dyn ServerStore) -> Result<Vec<Contract>, StoreError> {
    store.contracts()
}
