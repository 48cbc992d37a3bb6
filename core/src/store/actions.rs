//! What the carer does: clock in and out, write notes, record task outcomes. Each is one durable
//! transaction through the store's one write path.

use super::identity::{read_offset, DeviceIdentity, OFFSET_FRESH_FOR_MS};
use super::visit_rows::IfAbsent;
use super::{PhoneStore, Result, StoreError};
use crate::clock::ClockOffset;
use crate::domain::*;
use crate::visit_document::*;

/// What the carer tapped to clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockRequest {
    pub method: ClockMethod,
    pub location: Option<Location>,
    pub reason: Option<ReasonCode>,
    pub tag_id: Option<String>,
}

impl ClockRequest {
    pub fn app() -> Self {
        Self {
            method: ClockMethod::App,
            location: None,
            reason: None,
            tag_id: None,
        }
    }

    pub fn manual(reason: ReasonCode) -> Self {
        Self {
            method: ClockMethod::Manual,
            location: None,
            reason: Some(reason),
            tag_id: None,
        }
    }
}

impl PhoneStore {
    pub fn clock_in(&self, visit_id: VisitId, req: &ClockRequest) -> Result<ClockEvent> {
        self.clock(visit_id, ClockKind::ClockIn, req)
    }

    pub fn clock_out(&self, visit_id: VisitId, req: &ClockRequest) -> Result<ClockEvent> {
        self.clock(visit_id, ClockKind::ClockOut, req)
    }

    fn clock(&self, visit_id: VisitId, kind: ClockKind, req: &ClockRequest) -> Result<ClockEvent> {
        if req.method == ClockMethod::Manual && req.reason.is_none() {
            return Err(StoreError::ManualNeedsReason);
        }
        if req.location.is_some_and(|l| !l.is_valid()) {
            return Err(StoreError::InvalidLocation);
        }
        let now = self.clock.now();
        self.carer_writes(visit_id, |me, offset, doc, visit| {
            if !visit.schedule.carers.contains(&me.carer_id) {
                return Err(StoreError::NotAssigned(visit_id));
            }
            if visit.schedule.is_cancelled() {
                return Err(StoreError::VisitCancelled(visit_id));
            }
            let mine = |kind| {
                visit
                    .events
                    .iter()
                    .any(|e| e.carer_id == me.carer_id && e.kind == kind)
            };
            let clocked_in = mine(ClockKind::ClockIn);
            let clocked_out = mine(ClockKind::ClockOut);
            match kind {
                ClockKind::ClockIn if clocked_in => return Err(StoreError::AlreadyClockedIn(visit_id)),
                ClockKind::ClockOut if !clocked_in => return Err(StoreError::NotClockedIn(visit_id)),
                ClockKind::ClockOut if clocked_out => return Err(StoreError::AlreadyClockedOut(visit_id)),
                _ => {}
            }
            let event = ClockEvent {
                id: EventId::new(),
                kind,
                carer_id: me.carer_id,
                device_id: me.device_id,
                device_time: now,
                clock_offset_ms: offset.map(|o| o.offset_ms),
                offset_measured_at: offset.map(|o| o.measured_at),
                method: req.method,
                reason: req.reason,
                location: req.location,
                tag_id: req.tag_id.clone(),
            };
            doc.append_event(&event).map_err(|source| StoreError::Document {
                visit: visit_id,
                source,
            })?;
            visit.events.push(event.clone());
            Ok(event)
        })
    }

    pub fn add_note(&self, visit_id: VisitId, category: NoteCategory, text: &str) -> Result<Note> {
        let chars = text.chars().count();
        if text.trim().is_empty() {
            return Err(StoreError::EmptyNote);
        }
        if chars > MAX_NOTE_CHARS {
            return Err(StoreError::NoteTooLong(chars));
        }
        let now = self.clock.now();
        self.carer_writes(visit_id, |me, offset, doc, visit| {
            if !visit.schedule.carers.contains(&me.carer_id) {
                return Err(StoreError::NotAssigned(visit_id));
            }
            let note = Note {
                id: NoteId::new(),
                author_id: me.carer_id,
                author_role: Role::Carer,
                written_at: now + offset.map_or(0, |o| o.offset_ms),
                category,
                text: text.to_string(),
            };
            doc.append_note(&note).map_err(|source| StoreError::Document {
                visit: visit_id,
                source,
            })?;
            Ok(note)
        })
    }

    pub fn record_task_outcome(
        &self,
        visit_id: VisitId,
        task_id: TaskId,
        result: TaskResult,
        note: Option<&str>,
    ) -> Result<TaskOutcome> {
        if let Some(n) = note {
            let chars = n.chars().count();
            if chars > MAX_NOTE_CHARS {
                return Err(StoreError::NoteTooLong(chars));
            }
        }
        let now = self.clock.now();
        self.carer_writes(visit_id, |me, offset, doc, visit| {
            if !visit.schedule.carers.contains(&me.carer_id) {
                return Err(StoreError::NotAssigned(visit_id));
            }
            if visit.schedule.is_cancelled() {
                return Err(StoreError::VisitCancelled(visit_id));
            }
            if !visit.schedule.tasks.iter().any(|t| t.id == task_id) {
                return Err(StoreError::UnknownTask {
                    visit: visit_id,
                    task: task_id,
                });
            }
            let outcome = TaskOutcome {
                id: OutcomeId::new(),
                task_id,
                carer_id: me.carer_id,
                result,
                note: note.filter(|n| !n.trim().is_empty()).map(str::to_string),
                recorded_at: now + offset.map_or(0, |o| o.offset_ms),
            };
            doc.append_task_outcome(&outcome)
                .map_err(|source| StoreError::Document {
                    visit: visit_id,
                    source,
                })?;
            Ok(outcome)
        })
    }

    /// A carer's write: check against the visit as it stands, append one entry, save. Reads only
    /// the schedule and the clock events (never the notes, outcomes or amendments) and updates
    /// the derived rows in place, so a write costs the same on a visit with a long history.
    fn carer_writes<T>(
        &self,
        visit_id: VisitId,
        f: impl FnOnce(&DeviceIdentity, Option<ClockOffset>, &mut VisitDocument, &mut CarerView) -> Result<T>,
    ) -> Result<T> {
        self.write_visit(visit_id, IfAbsent::Refuse, |w| {
            let offset = read_offset(w.tx)?.filter(|o| w.now - o.measured_at <= OFFSET_FRESH_FOR_MS);
            let mut view = CarerView {
                schedule: w.doc.read_schedule().map_err(|e| w.document_error(e))?,
                events: w.doc.read_events().map_err(|e| w.document_error(e))?,
            };
            let known_events = view.events.len();
            let out = f(&w.me, offset, &mut w.doc, &mut view)?;
            w.save_local_change(&view.schedule, &view.events, known_events)?;
            Ok(out)
        })
    }
}

/// What a carer's write is checked against: the schedule and the clock events. A clock action
/// adds its new event here too.
struct CarerView {
    schedule: Schedule,
    events: Vec<ClockEvent>,
}
