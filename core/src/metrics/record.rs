//! The narrow input of the metric definitions: what a figure needs to know about one visit and
//! nothing more. A phone builds it from its document ([`VisitRecord::of`]); the server builds it
//! from its projected rows, with no document and no invented fields.

use crate::domain::*;
use crate::visit_document::{ClockEvent, Visit};
use serde::{Deserialize, Serialize};

/// One visit as the metrics see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitRecord {
    pub visit_id: VisitId,
    pub client_id: ClientId,
    pub contract_id: ContractId,
    /// Assigned carers, in schedule order (one, or two for a double-up).
    pub carers: Vec<PersonId>,
    pub planned_start: Millis,
    pub planned_end: Millis,
    pub cancelled: bool,
    pub chargeable: Option<bool>,
    /// Clock events, in document order.
    pub events: Vec<ClockEvent>,
    /// Corrections of actual times (amendments), in document order.
    pub corrections: Vec<TimeCorrection>,
}

/// An amendment as far as a figure is concerned: whose time, which end, the corrected instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeCorrection {
    pub id: AmendmentId,
    pub carer_id: PersonId,
    pub time: AmendedTime,
    pub corrected_time: Millis,
    pub written_at: Millis,
}

impl VisitRecord {
    /// The record of a visit document.
    pub fn of(visit: &Visit) -> Self {
        let s = &visit.schedule;
        Self {
            visit_id: visit.visit_id,
            client_id: s.client_id,
            contract_id: s.contract_id,
            carers: s.carers.clone(),
            planned_start: s.planned_start,
            planned_end: s.planned_end,
            cancelled: s.is_cancelled(),
            chargeable: s.chargeable,
            events: visit.events.clone(),
            corrections: visit
                .amendments
                .iter()
                .map(|a| TimeCorrection {
                    id: a.id,
                    carer_id: a.carer_id,
                    time: a.time,
                    corrected_time: a.corrected_time,
                    written_at: a.written_at,
                })
                .collect(),
        }
    }

    fn events_of(&self, carer: PersonId) -> impl Iterator<Item = &ClockEvent> {
        self.events.iter().filter(move |e| e.carer_id == carer)
    }

    /// The carer's earliest clock-in by trusted time.
    pub fn clock_in_of(&self, carer: PersonId) -> Option<&ClockEvent> {
        self.events_of(carer)
            .filter(|e| e.kind == ClockKind::ClockIn)
            .min_by_key(|e| e.trusted_time())
    }

    /// The carer's latest clock-out by trusted time.
    pub fn clock_out_of(&self, carer: PersonId) -> Option<&ClockEvent> {
        self.events_of(carer)
            .filter(|e| e.kind == ClockKind::ClockOut)
            .max_by_key(|e| e.trusted_time())
    }

    /// The latest correction (by `written_at`; on a tie, the later in the list) of a carer's time.
    pub fn latest_correction(&self, carer: PersonId, time: AmendedTime) -> Option<&TimeCorrection> {
        self.corrections
            .iter()
            .filter(|a| a.carer_id == carer && a.time == time)
            .max_by_key(|a| a.written_at)
    }
}
