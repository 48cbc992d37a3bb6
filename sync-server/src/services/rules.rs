//! Who may write what (brief, sections 3 and 6), judged on what a message actually did to a copy
//! of the document: never on what it claims.

use crate::store::Principal;
use caresync_core::domain::*;
use caresync_core::visit_document::{Section, Visit, VisitDocument, WriteAudit};

use super::visits::VisitServiceError;

pub enum Judgement {
    /// Accepted; these events came from a carer who was assigned when they wrote them but has
    /// been reassigned since: kept, and flagged for the supervisor.
    Allowed {
        reassigned_events: Vec<EventId>,
    },
    Refused {
        code: &'static str,
        reason: String,
    },
}

fn refused(code: &'static str, reason: impl Into<String>) -> Result<Judgement, VisitServiceError> {
    Ok(Judgement::Refused {
        code,
        reason: reason.into(),
    })
}

/// Judge the changes a carer's enrolled phone sent. `copy` already holds them; `visit` is `copy`
/// read (once, by the caller, who hands the same value on to the projection).
pub fn judge_device_changes(
    who: &Principal,
    device: DeviceId,
    audit: &WriteAudit,
    copy: &mut VisitDocument,
    visit: &Visit,
) -> Result<Judgement, VisitServiceError> {
    let me = who.person.id;
    if who.person.role != Role::Carer {
        return refused("forbidden_change", "only carers' phones sync visit documents");
    }
    if let Some(v) = audit.violations.first() {
        return refused("forbidden_change", v.clone());
    }
    for section in &audit.touched {
        if !matches!(section, Section::Events | Section::Notes | Section::TaskOutcomes) {
            return refused(
                "forbidden_change",
                format!("a carer's phone may not write {}", section_name(*section)),
            );
        }
    }
    for e in &audit.new_events {
        if e.carer_id != me || e.device_id != device {
            return refused(
                "forbidden_change",
                "a clock event must be in the name of this carer and device",
            );
        }
        if e.method == ClockMethod::Manual && e.reason.is_none() {
            return refused("invalid_entry", "a manual clock needs a reason code");
        }
        if e.location.is_some_and(|l| !l.is_valid()) {
            return refused("invalid_entry", "location out of range");
        }
    }
    for n in &audit.new_notes {
        if n.author_id != me || n.author_role != Role::Carer {
            return refused("forbidden_change", "a note must be in the name of this carer");
        }
        let chars = n.text.chars().count();
        if n.text.trim().is_empty() || chars > MAX_NOTE_CHARS {
            return refused(
                "invalid_entry",
                format!("a note must have 1 to {MAX_NOTE_CHARS} characters"),
            );
        }
    }
    for o in &audit.new_task_outcomes {
        if o.carer_id != me {
            return refused(
                "forbidden_change",
                "a task outcome must be in the name of this carer",
            );
        }
    }
    if visit.schedule.carers.contains(&me) {
        return Ok(Judgement::Allowed {
            reassigned_events: vec![],
        });
    }
    // Reassigned since? Each change must have been written while this carer was assigned, as
    // shown by the schedule at the change's own dependencies.
    for hash in &audit.change_hashes {
        let deps = copy.change_deps(hash).unwrap_or_default();
        let schedule = copy
            .schedule_at(&deps)
            .map_err(|source| VisitServiceError::Document {
                visit: visit.visit_id,
                source,
            })?;
        if !schedule.is_some_and(|s| s.carers.contains(&me)) {
            return refused(
                "not_assigned",
                "this visit was not assigned to this carer when the change was written",
            );
        }
    }
    Ok(Judgement::Allowed {
        reassigned_events: audit.new_events.iter().map(|e| e.id).collect(),
    })
}

fn section_name(s: Section) -> &'static str {
    match s {
        Section::Root => "the document's root",
        Section::Schedule => "the schedule",
        Section::Events => "clock events",
        Section::Notes => "notes",
        Section::TaskOutcomes => "task outcomes",
        Section::Amendments => "amendments",
    }
}
