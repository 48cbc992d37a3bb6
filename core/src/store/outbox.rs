//! The outbox: local changes the server has not acknowledged yet.

use super::visit_rows::parse_id;
use super::{PhoneStore, Result};
use crate::domain::*;
use serde::{Deserialize, Serialize};

/// Local changes the server has not acknowledged yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub visit_id: VisitId,
    pub pending_changes: u32,
}

impl PhoneStore {
    /// (refused: not re-sent until [`PhoneStore::retry_refused`]).
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT visit_id, pending_changes FROM visits
             WHERE pending_changes > 0 AND visit_id NOT IN (SELECT visit_id FROM refusals) ORDER BY visit_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        rows.map(|row| {
            let (id, pending_changes) = row?;
            Ok(OutboxEntry {
                visit_id: parse_id(&id)?,
                pending_changes,
            })
        })
        .collect()
    }

    /// Local changes waiting to be sent; refused ones are not waiting (see [`PhoneStore::refused_changes`]).
    pub fn pending_count(&self) -> Result<u32> {
        let conn = self.lock()?;
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(pending_changes), 0) FROM visits WHERE visit_id NOT IN (SELECT visit_id FROM refusals)",
            [],
            |r| r.get(0),
        )?)
    }
}
