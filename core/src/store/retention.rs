//! What a phone lets go of: ended visits past the retention window, and visits the server no longer
//! lists for this carer. Nothing unsynced or refused is ever removed.

use super::visit_rows::parse_id;
use super::{PhoneStore, Result};
use crate::domain::*;
use rusqlite::{params, TransactionBehavior};

impl PhoneStore {
    /// Remove visits that ended before `cutoff` and whose changes the server has all acknowledged.
    /// Returns how many were purged. Nothing unsynced or refused is ever purged.
    pub fn purge_ended_before(&self, cutoff: Millis) -> Result<usize> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM visits WHERE planned_end < ?1 AND pending_changes = 0
                 AND visit_id NOT IN (SELECT visit_id FROM refusals)",
            params![cutoff],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Purge with a retention window measured back from the device's now.
    pub fn purge_older_than(&self, window_ms: Millis) -> Result<usize> {
        self.purge_ended_before(self.clock.now() - window_ms)
    }

    /// Drop visits the server no longer lists for this carer (reassigned, cancelled out of the
    /// window) — only those with nothing unsynced. A phone keeps only what its carer needs.
    pub(crate) fn remove_out_of_scope(&self, keep: &std::collections::HashSet<VisitId>) -> Result<usize> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT visit_id FROM visits
                 WHERE pending_changes = 0 AND visit_id NOT IN (SELECT visit_id FROM refusals)",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for id in ids {
            if !keep.contains(&parse_id::<VisitId>(&id)?) {
                removed += tx.execute("DELETE FROM visits WHERE visit_id = ?1", [&id])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }
}
