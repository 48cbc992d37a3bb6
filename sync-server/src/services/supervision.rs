//! What supervisors and the office write on a visit: amendments of actual times (the original
//! stays) and notes. Both are appended through the visit service's one commit path.

use super::visits::{VisitService, VisitServiceError};
use super::Refused;
use crate::store::Principal;
use caresync_core::domain::*;
use caresync_core::visit_document::{Amendment, Note, Visit};

/// An amendment as asked for.
pub struct AmendmentDraft {
    pub carer_id: PersonId,
    pub time: AmendedTime,
    pub corrected_time: Millis,
    pub reason: ReasonCode,
    pub comment: Option<String>,
}

/// Amend `current` (the visit as the caller may see it): the carer must be on the visit or have
/// clocked on it, and a comment is at most a note's length; a blank comment is dropped.
pub fn amend(
    visits: &VisitService,
    by: &Principal,
    current: &Visit,
    draft: AmendmentDraft,
    at: Millis,
) -> Result<Amendment, Refused> {
    let visit = current.visit_id;
    if !current.schedule.carers.contains(&draft.carer_id)
        && current.events_of(draft.carer_id).next().is_none()
    {
        return Err(Refused::invalid("invalid", "that carer is not on this visit"));
    }
    if draft
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(Refused::invalid("invalid", "comment too long"));
    }
    let amendment = Amendment {
        id: AmendmentId::new(),
        author_id: by.person.id,
        author_role: by.person.role,
        carer_id: draft.carer_id,
        time: draft.time,
        corrected_time: draft.corrected_time,
        reason: draft.reason,
        comment: draft.comment.filter(|c| !c.trim().is_empty()),
        written_at: at,
    };
    visits.edit(visit, at, |doc, _| {
        doc.append_amendment(&amendment)
            .map(|_| ())
            .map_err(|source| VisitServiceError::Document { visit, source })
    })?;
    Ok(amendment)
}

/// A note of 1 to [`MAX_NOTE_CHARS`] characters on a visit.
pub fn add_note(
    visits: &VisitService,
    by: &Principal,
    visit: VisitId,
    category: NoteCategory,
    text: String,
    at: Millis,
) -> Result<Note, Refused> {
    let chars = text.chars().count();
    if text.trim().is_empty() || chars > MAX_NOTE_CHARS {
        return Err(Refused::invalid(
            "invalid",
            format!("a note has 1 to {MAX_NOTE_CHARS} characters"),
        ));
    }
    let note = Note {
        id: NoteId::new(),
        author_id: by.person.id,
        author_role: by.person.role,
        written_at: at,
        category,
        text,
    };
    visits.edit(visit, at, |doc, _| {
        doc.append_note(&note)
            .map(|_| ())
            .map_err(|source| VisitServiceError::Document { visit, source })
    })?;
    Ok(note)
}
