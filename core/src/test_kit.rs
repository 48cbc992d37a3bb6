//! Fixtures shared by the tests of every crate (core's own, the server's, the end-to-end
//! journeys), so a visit is built one way everywhere. Not part of the API.

use crate::domain::*;
use crate::visit_document::{Schedule, Task};

/// A scheduled half-hour visit for `carers` starting at `start`, one task ("Breakfast"), with a
/// new client and contract.
pub fn schedule(carers: Vec<PersonId>, start: Millis) -> Schedule {
    Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers,
        planned_start: start,
        planned_end: start + 30 * MINUTE_MS,
        tasks: vec![task("Breakfast")],
        status: VisitStatus::Scheduled,
        cancel_reason: None,
        chargeable: None,
    }
}

/// A task with a new id.
pub fn task(title: &str) -> Task {
    Task {
        id: TaskId::new(),
        title: title.into(),
    }
}
