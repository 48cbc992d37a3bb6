//! A visit's Automerge bytes and the rows derived from them: loading, the one write transaction
//! every change goes through (a carer's action, a sync message, an import), saving, and the check
//! that rows agree with documents.

use super::identity::read_identity;
use super::{DeviceIdentity, PhoneStore, Result, StoreError};
use crate::domain::*;
use crate::heads::Heads;
use crate::visit_document::*;
use automerge::sync::State as SyncState;
use automerge::ActorId;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::sync::MutexGuard;

/// What the write path does with a visit the phone does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IfAbsent {
    /// A carer's action on a visit the phone does not hold: [`StoreError::UnknownVisit`].
    Refuse,
    /// A sync message or an import: start from an empty replica.
    StartEmpty,
}

/// One visit inside the write transaction: the document, as loaded, for the caller to change, and
/// what the save needs besides.
pub(super) struct VisitWrite<'t> {
    pub tx: &'t Transaction<'t>,
    pub visit_id: VisitId,
    pub me: DeviceIdentity,
    pub actor: ActorId,
    pub now: Millis,
    pub doc: VisitDocument,
    /// False when the phone held no copy (only with [`IfAbsent::StartEmpty`]).
    pub had_doc: bool,
    /// Local changes the server had not acknowledged, as the row says.
    pub pending: u32,
    /// The bytes as stored, and the document's heads then.
    stored: Vec<u8>,
    heads_before: Vec<automerge::ChangeHash>,
    /// The bytes saved, once saved.
    saved: Option<Vec<u8>>,
}

impl PhoneStore {
    /// Check that each visit's derived rows agree with its document (used by crash tests).
    pub fn verify_derived_rows(&self) -> Result<Vec<String>> {
        let conn = self.lock()?;
        let mut problems = Vec::new();
        let mut stmt = conn.prepare("SELECT visit_id FROM visits")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            let visit_id: VisitId = parse_id(&id)?;
            let (doc, _) = load_doc(&conn, visit_id)?;
            let visit = doc.read().map_err(|source| StoreError::Document {
                visit: visit_id,
                source,
            })?;
            let mut from_doc: Vec<String> = visit.events.iter().map(|e| e.id.to_string()).collect();
            from_doc.sort();
            let mut rows_stmt = conn
                .prepare_cached("SELECT event_id FROM clock_events WHERE visit_id = ?1 ORDER BY event_id")?;
            let from_rows: Vec<String> = rows_stmt
                .query_map([&id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if from_doc != from_rows {
                problems.push(format!(
                    "visit {id}: document has {} events, rows {}",
                    from_doc.len(),
                    from_rows.len()
                ));
            }
        }
        Ok(problems)
    }

    /// The one write path: open an immediate transaction, load the visit (with this phone's actor),
    /// let `change` change it and save what it must, commit. Nothing is written if `change` fails.
    pub(super) fn write_visit<T>(
        &self,
        visit_id: VisitId,
        if_absent: IfAbsent,
        change: impl FnOnce(&mut VisitWrite<'_>) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (me, actor) = read_identity(&tx)?.ok_or(StoreError::NotEnrolled)?;
        let row: Option<(Vec<u8>, u32, String)> = tx
            .query_row(
                "SELECT doc, pending_changes, heads FROM visits WHERE visit_id = ?1",
                [visit_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (doc, stored, pending, had_doc) = match row {
            Some((bytes, pending, heads)) => {
                let heads = Heads::parse_text(&heads).map_err(|e| corrupt_row(e.to_string()))?;
                let cached = self.docs()?.take(visit_id, &bytes, &heads);
                let doc = match cached {
                    Some(doc) => doc,
                    None => VisitDocument::load(&bytes).map_err(|source| StoreError::Document {
                        visit: visit_id,
                        source,
                    })?,
                };
                (doc, bytes, pending, true)
            }
            None if if_absent == IfAbsent::StartEmpty => (VisitDocument::empty(), Vec::new(), 0, false),
            None => return Err(StoreError::UnknownVisit(visit_id)),
        };
        let mut doc = doc.with_actor(&actor);
        let heads_before = doc.heads();
        let mut write = VisitWrite {
            tx: &tx,
            visit_id,
            doc,
            stored,
            heads_before,
            me,
            actor,
            now,
            had_doc,
            pending,
            saved: None,
        };
        let out = change(&mut write)?;
        let (doc, saved) = (write.doc, write.saved);
        tx.commit()?;
        // Only a committed document is kept, with the bytes it was stored as.
        if let Some(bytes) = saved {
            self.docs()?.put(visit_id, doc, bytes);
        }
        Ok(out)
    }
}

/// How many parsed documents the store keeps: a carer works through a handful of visits a day.
const CACHED_DOCUMENTS: usize = 16;

/// Documents as last committed, so a write need not parse a visit's history again. A document is
/// used only while its row still holds exactly the bytes and heads it was saved with: a row
/// written any other way (a restore, a damaged file) makes the store load from the bytes again.
#[derive(Default)]
pub(super) struct DocumentCache {
    /// Each document with its stored bytes and when it was last put (to evict the oldest).
    docs: HashMap<VisitId, (VisitDocument, Vec<u8>, u64)>,
    puts: u64,
}

impl DocumentCache {
    /// The cached document, taken out (it is put back after a commit), if it is the one stored.
    fn take(&mut self, visit_id: VisitId, stored: &[u8], stored_heads: &Heads) -> Option<VisitDocument> {
        let (mut doc, bytes, _) = self.docs.remove(&visit_id)?;
        (bytes == stored && Heads::from(doc.heads()) == *stored_heads).then_some(doc)
    }

    fn put(&mut self, visit_id: VisitId, doc: VisitDocument, bytes: Vec<u8>) {
        if self.docs.len() >= CACHED_DOCUMENTS && !self.docs.contains_key(&visit_id) {
            let oldest = self
                .docs
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.docs.remove(&oldest);
            }
        }
        self.puts += 1;
        self.docs.insert(visit_id, (doc, bytes, self.puts));
    }
}

impl PhoneStore {
    fn docs(&self) -> Result<MutexGuard<'_, DocumentCache>> {
        self.docs.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl VisitWrite<'_> {
    pub fn document_error(&self, source: DocumentError) -> StoreError {
        StoreError::Document {
            visit: self.visit_id,
            source,
        }
    }

    /// Write the document bytes and every row derived from them, read afresh from the document
    /// (after a merge, anything may have changed). `state` is the sync state to keep.
    pub fn save_all(&mut self, state: Option<&SyncState>) -> Result<()> {
        let visit = self.doc.read().map_err(|e| self.document_error(e))?;
        let shared: Vec<automerge::ChangeHash> = state.map(|s| s.shared_heads.clone()).unwrap_or_default();
        let unshared = self.doc.automerge().get_changes(&shared);
        let pending = unshared.iter().filter(|c| c.actor_id() == &self.actor).count() as u32;
        let nothing_unshared = unshared.is_empty();
        let my_state = visit.carer_state(self.me.carer_id);
        let heads = Heads::from(self.doc.heads());
        let bytes = self.doc.save();
        let id = self.visit_id.to_string();
        self.tx.execute(
            "INSERT INTO visits (visit_id, doc, client_id, contract_id, planned_start, planned_end, status, my_state,
                                 updated_at, pending_changes, sync_state, heads)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (visit_id) DO UPDATE SET doc = ?2, client_id = ?3, contract_id = ?4, planned_start = ?5,
                 planned_end = ?6, status = ?7, my_state = ?8, updated_at = ?9, pending_changes = ?10,
                 sync_state = ?11, heads = ?12",
            params![
                id,
                &bytes,
                visit.schedule.client_id.to_string(),
                visit.schedule.contract_id.to_string(),
                visit.schedule.planned_start,
                visit.schedule.planned_end,
                visit.schedule.status.as_str(),
                my_state.as_str(),
                self.now,
                pending,
                state.map(|s| s.encode()),
                heads.to_text(),
            ],
        )?;
        self.saved = Some(bytes);
        if nothing_unshared {
            // The server holds everything this visit has: whatever it refused is settled.
            self.tx
                .execute("DELETE FROM refusals WHERE visit_id = ?1", [&id])?;
        }
        self.tx
            .execute("DELETE FROM clock_events WHERE visit_id = ?1", [&id])?;
        for e in &visit.events {
            insert_event_row(self.tx, &id, e)?;
        }
        Ok(())
    }
}

impl VisitWrite<'_> {
    /// Save after this phone's own change (one new change, by this phone's actor, to a section
    /// other than the schedule): the document bytes, the carer's state, heads, one more pending
    /// change, and rows for the events after the first `known_events`. The schedule's columns and
    /// the sync state stand as they were.
    pub fn save_local_change(
        &mut self,
        schedule: &Schedule,
        events: &[ClockEvent],
        known_events: usize,
    ) -> Result<()> {
        let my_state = carer_state(schedule, events, self.me.carer_id);
        let heads = Heads::from(self.doc.heads());
        // Append the new change to the stored bytes (Automerge loads a document followed by
        // changes) rather than re-encode the whole history; the next merge saves it compacted.
        let mut bytes = std::mem::take(&mut self.stored);
        bytes.extend(self.doc.automerge().save_after(&self.heads_before));
        let id = self.visit_id.to_string();
        self.tx.execute(
            "UPDATE visits SET doc = ?2, my_state = ?3, updated_at = ?4, pending_changes = ?5, heads = ?6
             WHERE visit_id = ?1",
            params![
                id,
                &bytes,
                my_state.as_str(),
                self.now,
                self.pending + 1,
                heads.to_text()
            ],
        )?;
        self.saved = Some(bytes);
        for e in events.iter().skip(known_events) {
            insert_event_row(self.tx, &id, e)?;
        }
        Ok(())
    }
}

fn insert_event_row(tx: &Transaction<'_>, visit_id: &str, e: &ClockEvent) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO clock_events (event_id, visit_id, kind, carer_id, device_time, trusted_time, method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.id.to_string(),
        visit_id,
        e.kind.as_str(),
        e.carer_id.to_string(),
        e.device_time,
        e.trusted_time(),
        e.method.as_str()
    ])?;
    Ok(())
}

pub(super) fn parse_id<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| corrupt_row(format!("bad id {s:?}")))
}

pub(super) fn corrupt_row(msg: String) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        msg.into(),
    ))
}

pub(super) fn load_doc(conn: &Connection, visit_id: VisitId) -> Result<(VisitDocument, u32)> {
    let row: Option<(Vec<u8>, u32)> = conn
        .query_row(
            "SELECT doc, pending_changes FROM visits WHERE visit_id = ?1",
            [visit_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (bytes, pending) = row.ok_or(StoreError::UnknownVisit(visit_id))?;
    let doc = VisitDocument::load(&bytes).map_err(|source| StoreError::Document {
        visit: visit_id,
        source,
    })?;
    Ok((doc, pending))
}

pub(super) fn load_sync_state(conn: &Connection, visit_id: VisitId) -> Result<Option<SyncState>> {
    let bytes: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT sync_state FROM visits WHERE visit_id = ?1",
            [visit_id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    match bytes.flatten() {
        Some(b) => Ok(SyncState::decode(&b).ok()),
        None => Ok(None),
    }
}
