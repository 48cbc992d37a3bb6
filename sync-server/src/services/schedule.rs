//! The office's schedule: what a new visit, or a change to one, must name before the visit
//! service writes it. Each check says no with a [`Refused`] naming the field.

use super::{validation, Refused};
use crate::store::{EventRow, ServerStore, StoreError};
use caresync_core::domain::*;

/// A visit the office asks for, as far as its checks need it.
pub struct Planned<'a> {
    pub client_id: ClientId,
    pub contract_id: ContractId,
    pub carers: &'a [PersonId],
    pub planned_start: Millis,
    pub planned_end: Millis,
    pub tasks: &'a [String],
}

/// Entry `i` of a bulk create: carers who are carers, a client and a contract that exist,
/// times in order and in range, tasks within bounds. The message says which entry.
pub fn check_new_visit(store: &dyn ServerStore, i: usize, v: &Planned) -> Result<(), Refused> {
    for carer in v.carers {
        match store.person(*carer)? {
            Some(p) if p.role == Role::Carer => {}
            _ => {
                return Err(Refused::invalid(
                    "invalid",
                    format!("visit {i}: {carer} is not a carer"),
                ))
            }
        }
    }
    if store.client(v.client_id)?.is_none() {
        return Err(Refused::invalid(
            "unknown_client",
            format!("visit {i}: no client {}", v.client_id),
        ));
    }
    if store.contract(v.contract_id)?.is_none() {
        return Err(Refused::invalid(
            "unknown_contract",
            format!("visit {i}: no contract {}", v.contract_id),
        ));
    }
    if v.planned_end <= v.planned_start {
        return Err(Refused::invalid(
            "invalid",
            format!("visit {i}: planned end must be after planned start"),
        ));
    }
    validation::new_visit(v.planned_start, v.planned_end, v.carers, v.tasks)
        .map_err(|e| Refused::invalid(e.code, format!("visit {i}: {}", e.message)))
}

/// A reassignment: one carer, or two different carers for a double-up, each a carer.
pub fn check_carers(store: &dyn ServerStore, carers: &[PersonId]) -> Result<(), Refused> {
    if carers.is_empty() || carers.len() > 2 || (carers.len() == 2 && carers[0] == carers[1]) {
        return Err(Refused::invalid(
            "invalid",
            "a visit has one carer, or two different carers for a double-up",
        ));
    }
    for carer in carers {
        if !matches!(store.person(*carer)?, Some(p) if p.role == Role::Carer) {
            return Err(Refused::invalid("invalid", format!("{carer} is not a carer")));
        }
    }
    Ok(())
}

/// A contract a visit is moved to, or a contact is recorded against, must exist.
pub fn check_contract(store: &dyn ServerStore, contract: ContractId) -> Result<(), Refused> {
    if store.contract(contract)?.is_none() {
        return Err(Refused::invalid("invalid", format!("no contract {contract}")));
    }
    Ok(())
}

/// A visit's clock events as the server received them (trusted and received times, flags).
pub fn events(store: &dyn ServerStore, visit: VisitId) -> Result<Vec<EventRow>, StoreError> {
    store.events_for_visit(visit)
}
