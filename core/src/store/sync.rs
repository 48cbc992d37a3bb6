//! The store's side of sync: messages generated from and received into a visit's document, sync
//! states, heads for the manifest, and documents imported outside sync.

use super::visit_rows::{corrupt_row, load_doc, load_sync_state, parse_id, IfAbsent, VisitWrite};
use super::{PhoneStore, Result, StoreError};
use crate::domain::*;
use crate::heads::Heads;
use crate::protocol::v2;
use crate::visit_document::*;
use automerge::sync::State as SyncState;
use automerge::ChangeHash;
use std::collections::HashMap;

impl PhoneStore {
    /// For the sync client: the sync state persisted with the server (shared heads only).
    pub(crate) fn persisted_sync_state(&self, visit_id: VisitId) -> Result<Option<SyncState>> {
        let conn = self.lock()?;
        load_sync_state(&conn, visit_id)
    }

    /// For the sync client: a message for a parked visit that asks for the server's news and
    /// carries none of the phone's own: generated from the document as the server last
    /// acknowledged it (the state's shared heads).
    pub(crate) fn generate_pull_message(
        &self,
        visit_id: VisitId,
        state: &mut SyncState,
    ) -> Result<Option<automerge::sync::Message>> {
        let conn = self.lock()?;
        let (mut doc, _) = load_doc(&conn, visit_id)?;
        drop(conn);
        let mut acknowledged =
            doc.automerge()
                .fork_at(&state.shared_heads)
                .map_err(|e| StoreError::Document {
                    visit: visit_id,
                    source: e.into(),
                })?;
        use automerge::sync::SyncDoc;
        let message = acknowledged.sync().generate_sync_message(state);
        Ok(message)
    }

    /// For the sync client: the next message for one visit (an empty replica if the phone has none).
    pub(crate) fn generate_message(
        &self,
        visit_id: VisitId,
        state: &mut SyncState,
    ) -> Result<Option<automerge::sync::Message>> {
        let conn = self.lock()?;
        let mut doc = match load_doc(&conn, visit_id) {
            Ok((doc, _)) => doc,
            Err(StoreError::UnknownVisit(_)) => VisitDocument::empty(),
            Err(e) => return Err(e),
        };
        drop(conn);
        use automerge::sync::SyncDoc;
        let message = doc.automerge().sync().generate_sync_message(state);
        Ok(message)
    }

    /// For the sync client: apply the server's message to the *current* document (so a clock-in
    /// made while the request was in flight is kept) and persist document, rows and sync state.
    pub(crate) fn receive_message(
        &self,
        visit_id: VisitId,
        state: &mut SyncState,
        message: automerge::sync::Message,
    ) -> Result<()> {
        self.write_visit(visit_id, IfAbsent::StartEmpty, |w| {
            use automerge::sync::SyncDoc;
            w.doc
                .automerge()
                .sync()
                .receive_sync_message(state, message)
                .map_err(|e| StoreError::Document {
                    visit: visit_id,
                    source: e.into(),
                })?;
            save_merged(w, Some(state))
        })
    }

    /// For the sync client (protocol 2): what to push for one visit, and the heads it claims. The
    /// changes since the heads the phone last shared with the server, with the phone's heads when
    /// the changes do not imply them; for a parked visit no change and the shared heads (it asks
    /// for the server's news only); for a visit the phone does not hold, nothing at all.
    pub(crate) fn push_for(&self, visit_id: VisitId, parked: bool) -> Result<(v2::Push, Heads)> {
        let conn = self.lock()?;
        let shared = load_sync_state(&conn, visit_id)?
            .map(|s| s.shared_heads)
            .unwrap_or_default();
        let empty = v2::Push {
            visit_id,
            ..Default::default()
        };
        if parked {
            let shared = Heads::from(shared);
            let push = v2::Push {
                heads: Some(shared.clone()),
                ..empty
            };
            return Ok((push, shared));
        }
        let mut doc = match load_doc(&conn, visit_id) {
            Ok((doc, _)) => doc,
            Err(StoreError::UnknownVisit(_)) => return Ok((empty, Heads::default())),
            Err(e) => return Err(e),
        };
        drop(conn);
        let am = doc.automerge();
        let unknown = am.get_missing_deps(&shared);
        let shared: Vec<ChangeHash> = shared.into_iter().filter(|h| !unknown.contains(h)).collect();
        let changes = am.get_changes(&shared);
        let heads = Heads::from(am.get_heads());
        let implied = v2::implied_heads(&changes);
        let push = v2::Push {
            visit_id,
            changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
            // Left out when the server can work them out: the heads of the changes, or none.
            heads: (heads != implied).then(|| heads.clone()),
        };
        Ok((push, heads))
    }

    /// For the sync client (protocol 2): take the server's answer to a push: apply the changes the
    /// phone lacked to the *current* document and record `shared` as the heads both sides hold.
    pub(crate) fn take_pull(
        &self,
        visit_id: VisitId,
        changes: Vec<automerge::Change>,
        shared: &Heads,
    ) -> Result<()> {
        self.write_visit(visit_id, IfAbsent::StartEmpty, |w| {
            v2::apply_changes(w.doc.automerge(), changes).map_err(|e| StoreError::Document {
                visit: visit_id,
                source: DocumentError::Malformed(e),
            })?;
            let mut state = load_sync_state(w.tx, visit_id)?.unwrap_or_default();
            state.shared_heads = shared.to_vec();
            save_merged(w, Some(&state))
        })
    }

    /// For the sync client (protocol 2): the server lacks changes the phone believed it held
    /// (`missing_changes`): forget the shared heads, so the next push carries the whole visit.
    pub(crate) fn forget_shared(&self, visit_id: VisitId) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "UPDATE visits SET sync_state = NULL WHERE visit_id = ?1",
            [visit_id.to_string()],
        )?;
        Ok(())
    }

    /// Heads of each visit the phone holds, as stored with its rows; for a parked visit, the heads
    /// the server acknowledged (its refused changes are not news the server should expect).
    pub(crate) fn visit_heads(&self) -> Result<HashMap<VisitId, Heads>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT v.visit_id, v.heads, r.visit_id IS NOT NULL FROM visits v
             LEFT JOIN refusals r ON r.visit_id = v.visit_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (id, heads, parked) = row?;
            let visit_id = parse_id(&id)?;
            if parked {
                let shared = load_sync_state(&conn, visit_id)?
                    .map(|s| s.shared_heads)
                    .unwrap_or_default();
                return Ok((visit_id, Heads::from(shared)));
            }
            let heads = Heads::parse_text(&heads).map_err(|e| corrupt_row(e.to_string()))?;
            Ok((visit_id, heads))
        })
        .collect()
    }

    /// Store a document received outside sync (tests, seeding). Merges with any local copy.
    pub fn import_visit(&self, bytes: &[u8]) -> Result<VisitId> {
        let mut incoming = VisitDocument::load(bytes).map_err(|source| StoreError::Document {
            visit: VisitId(uuid::Uuid::nil()),
            source,
        })?;
        let visit_id = incoming.visit_id().map_err(|source| StoreError::Document {
            visit: VisitId(uuid::Uuid::nil()),
            source,
        })?;
        self.write_visit(visit_id, IfAbsent::StartEmpty, |w| {
            w.doc.merge(&mut incoming).map_err(|e| w.document_error(e))?;
            let state = load_sync_state(w.tx, visit_id)?;
            save_merged(w, state.as_ref())
        })?;
        Ok(visit_id)
    }
}

/// Save a visit after merging changes into it, keeping `state` as its sync state. A replica still
/// missing changes it depends on may not be readable yet: it is not saved, and waits.
fn save_merged(w: &mut VisitWrite<'_>, state: Option<&SyncState>) -> Result<()> {
    if w.had_doc || w.doc.read().is_ok() {
        w.save_all(state)?;
    }
    Ok(())
}
