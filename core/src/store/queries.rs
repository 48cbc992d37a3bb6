//! What the carer's app reads: the day's list and one visit's detail.

use super::identity::read_identity;
use super::visit_rows::{corrupt_row, load_doc, parse_id};
use super::{PhoneStore, Result, StoreError};
use crate::domain::*;
use crate::visit_document::Visit;
use chrono::{NaiveDate, TimeZone};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// One line of the day's list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitSummary {
    pub visit_id: VisitId,
    pub client_id: ClientId,
    pub planned_start: Millis,
    pub planned_end: Millis,
    pub state: CarerVisitState,
    pub pending_changes: u32,
}

/// One visit's detail, as the carer's app shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct VisitDetail {
    pub visit: Visit,
    pub state: CarerVisitState,
    pub pending_changes: u32,
}

impl PhoneStore {
    /// The visits whose planned start falls on `day` in the agency's time zone, in start order.
    pub fn visits_on(&self, day: NaiveDate) -> Result<Vec<VisitSummary>> {
        let (from, to) = local_day_bounds(self.tz, day);
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT visit_id, client_id, planned_start, planned_end, my_state, pending_changes
             FROM visits WHERE planned_start >= ?1 AND planned_start < ?2 ORDER BY planned_start, visit_id",
        )?;
        let rows = stmt.query_map(params![from, to], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (visit, client, planned_start, planned_end, state, pending_changes) = row?;
            out.push(VisitSummary {
                visit_id: parse_id(&visit)?,
                client_id: parse_id(&client)?,
                planned_start,
                planned_end,
                state: state
                    .parse()
                    .map_err(|e: UnknownValue| corrupt_row(e.to_string()))?,
                pending_changes,
            });
        }
        Ok(out)
    }

    pub fn visit(&self, visit_id: VisitId) -> Result<VisitDetail> {
        let conn = self.lock()?;
        let carer = read_identity(&conn)?.map(|(id, _)| id.carer_id);
        let (doc, pending) = load_doc(&conn, visit_id)?;
        let visit = doc.read().map_err(|source| StoreError::Document {
            visit: visit_id,
            source,
        })?;
        let state = carer
            .map(|c| visit.carer_state(c))
            .unwrap_or(CarerVisitState::Upcoming);
        Ok(VisitDetail {
            visit,
            state,
            pending_changes: pending,
        })
    }

    pub fn visit_ids(&self) -> Result<Vec<VisitId>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT visit_id FROM visits ORDER BY visit_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        ids.map(|id| parse_id(&id?)).collect()
    }

    /// Raw saved bytes of a visit (for tests and debugging).
    pub fn visit_bytes(&self, visit_id: VisitId) -> Result<Vec<u8>> {
        let conn = self.lock()?;
        conn.query_row(
            "SELECT doc FROM visits WHERE visit_id = ?1",
            [visit_id.to_string()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::UnknownVisit(visit_id))
    }
}

/// UTC bounds of a local day; a day with a clock change is 23 or 25 hours long.
pub fn local_day_bounds(tz: chrono_tz::Tz, day: NaiveDate) -> (Millis, Millis) {
    let start = |d: NaiveDate| -> Millis {
        let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        match tz.from_local_datetime(&midnight) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
            // Midnight skipped by a clock change: the day starts at the first instant that exists.
            chrono::LocalResult::None => tz
                .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
                .map_or(midnight.and_utc().timestamp_millis(), |t| t.timestamp_millis()),
        }
    };
    let next = day.succ_opt().unwrap_or(day);
    (start(day), start(next))
}
