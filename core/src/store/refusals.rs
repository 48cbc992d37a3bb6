//! Visits whose changes the server refused: parked, kept, shown, never purged (docs/protocol.md).

use super::visit_rows::{corrupt_row, load_doc, load_sync_state, parse_id};
use super::{PhoneStore, Result, StoreError};
use crate::domain::*;
use crate::heads::Heads;
use rusqlite::{params, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// A visit parked because the server refused its changes (docs/protocol.md, "Refused changes").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedChanges {
    pub visit_id: VisitId,
    /// The server's stable code (`forbidden_change`, `not_assigned`, `invalid_entry`,
    /// `malformed_message`, `message_too_large`, `unknown_visit`).
    pub code: String,
    pub message: String,
    /// Device time of the refusal.
    pub refused_at: Millis,
    /// The phone's heads when the refused message was sent.
    pub heads: Heads,
    /// Changes the server lacked then: every one of them is kept here.
    pub changes: u32,
}

impl PhoneStore {
    /// Visits whose changes the server refused, oldest refusal first: kept, not re-sent, for the
    /// app to show with the reason.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChanges>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT visit_id, code, message, refused_at, heads, changes FROM refusals ORDER BY refused_at, visit_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<_, String>(4)?,
                r.get(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, code, message, refused_at, heads, changes) = row?;
            Ok(RefusedChanges {
                visit_id: parse_id(&id)?,
                code,
                message,
                refused_at,
                heads: Heads::parse_text(&heads).map_err(|e| corrupt_row(e.to_string()))?,
                changes,
            })
        })
        .collect()
    }

    /// Un-park a refused visit so the next sync sends its changes again (after the office fixed
    /// what the server objected to, say). Returns whether the visit was parked.
    pub fn retry_refused(&self, visit_id: VisitId) -> Result<bool> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM refusals WHERE visit_id = ?1", [visit_id.to_string()])? > 0)
    }

    /// Park a visit the server refused: record why and what the refused message covered. Only a
    /// visit holding changes the server lacks is parked (a refused message that carried none
    /// refused nothing of the carer's). A visit already parked keeps its first refusal. Returns
    /// whether the visit is parked now.
    pub(crate) fn record_refusal(&self, visit_id: VisitId, code: &str, message: &str) -> Result<bool> {
        let now = self.clock.now();
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut doc = match load_doc(&tx, visit_id) {
            Ok((doc, _)) => doc,
            Err(StoreError::UnknownVisit(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let shared = load_sync_state(&tx, visit_id)?
            .map(|s| s.shared_heads)
            .unwrap_or_default();
        let unshared = doc.automerge().get_changes(&shared).len() as u32;
        if unshared == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO refusals (visit_id, code, message, refused_at, heads, changes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (visit_id) DO NOTHING",
            params![
                visit_id.to_string(),
                code,
                message,
                now,
                Heads::from(doc.heads()).to_text(),
                unshared
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// For the sync client: the visits parked by a refusal.
    pub(crate) fn parked_visits(&self) -> Result<std::collections::HashSet<VisitId>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT visit_id FROM refusals")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        ids.map(|id| parse_id(&id?)).collect()
    }
}
