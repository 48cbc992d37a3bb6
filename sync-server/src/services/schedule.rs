//! The office's schedule: what a new visit, or a change to one, must name before the visit
//! service writes it. Each check says no with a [`Refused`] naming the field.

use super::visits::{VisitService, VisitServiceError};
use super::{validation, Refused};
use crate::store::{EventRow, ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::visit_document::{ChangeLabel, Schedule, Visit};

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

/// An office edit to a visit's schedule, checked when it is made ([`ScheduleEdit::reschedule`]
/// and the rest) and applied to the schedule as it stands when written ([`edit`]).
pub enum ScheduleEdit {
    Reschedule { start: Millis, end: Millis },
    Reassign(Vec<PersonId>),
    Cancel { reason: String, chargeable: bool },
    MoveContract(ContractId),
}

impl ScheduleEdit {
    /// New planned times: the end after the start, both within range.
    pub fn reschedule(
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, Refused> {
        if end <= start {
            return Err(Refused::invalid(
                "invalid",
                "planned end must be after planned start",
            ));
        }
        let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
        validation::visit_times(start, end)?;
        Ok(ScheduleEdit::Reschedule { start, end })
    }

    /// New carers ([`check_carers`]).
    pub fn reassign(store: &dyn ServerStore, carers: Vec<PersonId>) -> Result<Self, Refused> {
        check_carers(store, &carers)?;
        Ok(ScheduleEdit::Reassign(carers))
    }

    /// A cancellation with a reason of 1 to 500 characters.
    pub fn cancel(reason: String, chargeable: bool) -> Result<Self, Refused> {
        if reason.trim().is_empty() || reason.len() > 500 {
            return Err(Refused::invalid(
                "invalid",
                "a cancellation needs a reason of 1 to 500 characters",
            ));
        }
        Ok(ScheduleEdit::Cancel { reason, chargeable })
    }

    /// Another contract that exists ([`check_contract`]).
    pub fn move_contract(store: &dyn ServerStore, contract: ContractId) -> Result<Self, Refused> {
        check_contract(store, contract)?;
        Ok(ScheduleEdit::MoveContract(contract))
    }

    /// The label the change carries in the visit's timeline.
    fn what(&self) -> &'static str {
        match self {
            ScheduleEdit::Reschedule { .. } => "rescheduled",
            ScheduleEdit::Reassign(_) => "reassigned",
            ScheduleEdit::Cancel { .. } => "cancelled",
            ScheduleEdit::MoveContract(_) => "moved to another contract",
        }
    }

    /// Apply to the schedule as it stands; a cancelled visit cannot be cancelled again, nor a
    /// visit moved to the contract it is on.
    fn apply(self, s: &mut Schedule) -> Result<(), Refused> {
        match self {
            ScheduleEdit::Reschedule { start, end } => {
                s.planned_start = start;
                s.planned_end = end;
            }
            ScheduleEdit::Reassign(carers) => s.carers = carers,
            ScheduleEdit::Cancel { reason, chargeable } => {
                if s.is_cancelled() {
                    return Err(Refused::conflict(
                        "already_cancelled",
                        "the visit is already cancelled",
                    ));
                }
                s.status = VisitStatus::Cancelled;
                s.cancel_reason = Some(reason);
                s.chargeable = Some(chargeable);
            }
            ScheduleEdit::MoveContract(contract) => {
                if s.contract_id == contract {
                    return Err(Refused::conflict(
                        "same_contract",
                        "the visit is already on that contract",
                    ));
                }
                s.contract_id = contract;
            }
        }
        Ok(())
    }
}

/// Write an office edit to a visit's schedule through the visit service's one commit path; the
/// visit as it now stands.
pub fn edit(
    visits: &VisitService,
    by: PersonId,
    visit: VisitId,
    at: Millis,
    edit: ScheduleEdit,
) -> Result<Visit, Refused> {
    let label = ChangeLabel {
        author_id: by,
        at,
        what: edit.what().into(),
    };
    let mut outcome = Ok(());
    let written = visits.edit(visit, at, |doc, current| {
        let mut schedule = current.schedule.clone();
        if let Err(e) = edit.apply(&mut schedule) {
            outcome = Err(e);
            return Err(VisitServiceError::Invalid("rejected".into()));
        }
        doc.update_schedule_by(&schedule, &label)
            .map(|_| ())
            .map_err(|source| VisitServiceError::Document { visit, source })
    });
    outcome?;
    Ok(written?)
}
