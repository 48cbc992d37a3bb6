//! Timelines: what happened to a visit, in order, and a carer's day of them.

use super::visits::{VisitService, VisitServiceError};
use crate::store::{EventRow, ServerStore};
use caresync_core::domain::*;
use caresync_core::visit_document::{Amendment, Note, Visit};
use serde::Serialize;

type Result<T, E = VisitServiceError> = std::result::Result<T, E>;

/// One line of a visit's timeline.
#[derive(utoipa::ToSchema, Serialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimelineEntry {
    Schedule {
        #[schema(value_type = i64, format = "epoch-ms")]
        at: Millis,
        by: PersonId,
        what: String,
        schedule: caresync_core::Schedule,
    },
    Clock {
        #[schema(value_type = i64, format = "epoch-ms")]
        at: Millis,
        event: EventRow,
    },
    Note {
        #[schema(value_type = i64, format = "epoch-ms")]
        at: Millis,
        note: Note,
    },
    TaskOutcome {
        #[schema(value_type = i64, format = "epoch-ms")]
        at: Millis,
        outcome: caresync_core::TaskOutcome,
    },
    Amendment {
        #[schema(value_type = i64, format = "epoch-ms")]
        at: Millis,
        amendment: Amendment,
    },
}

impl TimelineEntry {
    fn at(&self) -> Millis {
        match self {
            TimelineEntry::Schedule { at, .. }
            | TimelineEntry::Clock { at, .. }
            | TimelineEntry::Note { at, .. }
            | TimelineEntry::TaskOutcome { at, .. }
            | TimelineEntry::Amendment { at, .. } => *at,
        }
    }
}

#[derive(utoipa::ToSchema, Serialize)]
pub struct VisitTimeline {
    pub visit_id: VisitId,
    pub schedule: caresync_core::Schedule,
    pub entries: Vec<TimelineEntry>,
}

/// A visit's timeline: schedule changes, clock events (from the projection: it carries received
/// time and flags), notes, task outcomes and amendments, in time order.
pub fn of_visit(store: &dyn ServerStore, visits: &VisitService, visit: &Visit) -> Result<VisitTimeline> {
    let id = visit.visit_id;
    let mut entries = Vec::new();
    for change in visits.schedule_history(id)? {
        entries.push(TimelineEntry::Schedule {
            at: change.label.at,
            by: change.label.author_id,
            what: change.label.what,
            schedule: change.schedule,
        });
    }
    for event in store.events_for_visit(id)? {
        entries.push(TimelineEntry::Clock {
            at: event.trusted_time,
            event,
        });
    }
    for note in &visit.notes {
        entries.push(TimelineEntry::Note {
            at: note.written_at,
            note: note.clone(),
        });
    }
    for outcome in &visit.task_outcomes {
        entries.push(TimelineEntry::TaskOutcome {
            at: outcome.recorded_at,
            outcome: outcome.clone(),
        });
    }
    for amendment in &visit.amendments {
        entries.push(TimelineEntry::Amendment {
            at: amendment.written_at,
            amendment: amendment.clone(),
        });
    }
    entries.sort_by_key(TimelineEntry::at);
    Ok(VisitTimeline {
        visit_id: id,
        schedule: visit.schedule.clone(),
        entries,
    })
}

/// The timelines of the visits planned between `from` and `to` with `carer` on them.
pub fn carer_day(
    store: &dyn ServerStore,
    visits: &VisitService,
    carer: PersonId,
    from: Millis,
    to: Millis,
) -> Result<Vec<VisitTimeline>> {
    let mut day = Vec::new();
    for row in store.visits_planned_between(from, to)? {
        if row.carers.contains(&carer) {
            day.push(of_visit(store, visits, &visits.read(row.visit_id)?)?);
        }
    }
    Ok(day)
}
