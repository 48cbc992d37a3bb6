//! The phone's store: one SQLite file holding each visit's Automerge bytes and the rows derived
//! from them, written together in one transaction. Everything a carer does works offline.

use crate::clock::{ClockOffset, DeviceClock, SystemClock};
use crate::domain::*;
use crate::sqlite::{self, Durability, Migration, OpenError};
use crate::visit_document::*;
use automerge::sync::State as SyncState;
use automerge::ActorId;
use chrono::{NaiveDate, TimeZone};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// An offset older than this no longer vouches for an event's time (brief, section 4).
pub const OFFSET_FRESH_FOR_MS: Millis = DAY_MS;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no visit {0} on this phone")]
    UnknownVisit(VisitId),
    #[error("visit {0} is not assigned to this carer")]
    NotAssigned(VisitId),
    #[error("visit {0} was cancelled")]
    VisitCancelled(VisitId),
    #[error("already clocked in to visit {0}")]
    AlreadyClockedIn(VisitId),
    #[error("not clocked in to visit {0}")]
    NotClockedIn(VisitId),
    #[error("already clocked out of visit {0}")]
    AlreadyClockedOut(VisitId),
    #[error("a manual clock needs a reason code")]
    ManualNeedsReason,
    #[error("location is out of range")]
    InvalidLocation,
    #[error("a note cannot be empty")]
    EmptyNote,
    #[error("a note can be at most {MAX_NOTE_CHARS} characters; this one has {0}")]
    NoteTooLong(usize),
    #[error("visit {visit} has no task {task}")]
    UnknownTask { visit: VisitId, task: TaskId },
    #[error("this phone is not enrolled")]
    NotEnrolled,
    #[error("visit {visit}: {source}")]
    Document { visit: VisitId, source: DocumentError },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's lock was poisoned by a panic in another thread")]
    Poisoned,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who this phone is, once enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub device_id: DeviceId,
    pub carer_id: PersonId,
    pub server_url: String,
    pub token: String,
}

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

/// Local changes the server has not acknowledged yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub visit_id: VisitId,
    pub pending_changes: u32,
}

/// Schema steps; index `i` moves the file from version `i` to `i + 1`. Public so a test can build a
/// file at an older version and migrate it (`core/tests/migration.rs`).
#[doc(hidden)]
pub const MIGRATIONS: &[Migration] = &[schema_v1, schema_v2, schema_v3];

fn schema_v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE device (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             device_id TEXT NOT NULL,
             carer_id TEXT NOT NULL,
             actor BLOB NOT NULL,
             server_url TEXT NOT NULL,
             token TEXT NOT NULL
         );
         CREATE TABLE clock (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             offset_ms INTEGER NOT NULL,
             measured_at INTEGER NOT NULL
         );
         CREATE TABLE visits (
             visit_id TEXT PRIMARY KEY,
             doc BLOB NOT NULL,
             client_id TEXT NOT NULL,
             contract_id TEXT NOT NULL,
             planned_start INTEGER NOT NULL,
             planned_end INTEGER NOT NULL,
             status TEXT NOT NULL,
             my_state TEXT NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE INDEX visits_by_start ON visits (planned_start);
         CREATE TABLE clock_events (
             event_id TEXT PRIMARY KEY,
             visit_id TEXT NOT NULL REFERENCES visits (visit_id) ON DELETE CASCADE,
             kind TEXT NOT NULL,
             carer_id TEXT NOT NULL,
             device_time INTEGER NOT NULL,
             trusted_time INTEGER NOT NULL,
             method TEXT NOT NULL
         );
         CREATE INDEX clock_events_by_visit ON clock_events (visit_id);",
    )
}

/// v2: the outbox (unacknowledged local changes) and per-visit sync state with the server.
fn schema_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE visits ADD COLUMN pending_changes INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE visits ADD COLUMN sync_state BLOB;
         ALTER TABLE visits ADD COLUMN heads TEXT NOT NULL DEFAULT '';
         CREATE INDEX visits_pending ON visits (pending_changes) WHERE pending_changes > 0;
         CREATE TABLE sync_meta (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             last_sync_at INTEGER
         );
         -- A v1 file cannot tell what the server has seen: assume nothing, so nothing is purged
         -- before the next sync recounts.
         UPDATE visits SET pending_changes = 1;",
    )
}

/// v3: visits whose changes the server refused. The server persisted nothing of the message, so
/// the changes stay only here: parked, not re-sent, shown to the carer, never purged (the foreign
/// key refuses to delete a visit that still holds them).
fn schema_v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE refusals (
             visit_id TEXT PRIMARY KEY REFERENCES visits (visit_id),
             code TEXT NOT NULL,
             message TEXT NOT NULL,
             refused_at INTEGER NOT NULL,
             heads TEXT NOT NULL,
             changes INTEGER NOT NULL
         );",
    )
}

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
    /// The phone's heads (sorted hex, comma-joined) when the refused message was sent.
    pub heads: String,
    /// Changes the server lacked then: every one of them is kept here.
    pub changes: u32,
}

/// The phone's durable store. Cheap to share between threads (`Arc<PhoneStore>`): every operation
/// is one transaction under one lock, so a sync and a clock-in never overwrite each other.
pub struct PhoneStore {
    conn: Mutex<Connection>,
    clock: Arc<dyn DeviceClock>,
    tz: chrono_tz::Tz,
}

impl std::fmt::Debug for PhoneStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneStore")
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

impl PhoneStore {
    /// Open with the system clock and the default agency time zone (Europe/London).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Arc::new(SystemClock), chrono_tz::Europe::London)
    }

    pub fn open_with(path: &Path, clock: Arc<dyn DeviceClock>, tz: chrono_tz::Tz) -> Result<Self> {
        let conn = sqlite::open(path, MIGRATIONS, Durability::Full)?;
        Ok(Self {
            conn: Mutex::new(conn),
            clock,
            tz,
        })
    }

    pub fn device_now(&self) -> Millis {
        self.clock.now()
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    // ---- identity and clock -------------------------------------------------------------

    pub fn set_identity(&self, id: &DeviceIdentity) -> Result<()> {
        let conn = self.lock()?;
        let actor = ActorId::random();
        conn.execute(
            "INSERT INTO device (id, device_id, carer_id, actor, server_url, token) VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET device_id = ?1, carer_id = ?2, server_url = ?4, token = ?5",
            params![id.device_id.to_string(), id.carer_id.to_string(), actor.to_bytes(), id.server_url, id.token],
        )?;
        Ok(())
    }

    pub fn identity(&self) -> Result<Option<DeviceIdentity>> {
        let conn = self.lock()?;
        Ok(read_identity(&conn)?.map(|(id, _)| id))
    }

    /// Record a freshly measured offset (server minus device).
    pub fn set_clock_offset(&self, offset: ClockOffset) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO clock (id, offset_ms, measured_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET offset_ms = ?1, measured_at = ?2",
            params![offset.offset_ms, offset.measured_at],
        )?;
        Ok(())
    }

    pub fn clock_offset(&self) -> Result<Option<ClockOffset>> {
        let conn = self.lock()?;
        Ok(read_offset(&conn)?)
    }

    pub fn last_sync_at(&self) -> Result<Option<Millis>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row("SELECT last_sync_at FROM sync_meta WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    // Written by the sync client, which lands in a separate change.
    pub(crate) fn set_last_sync_at(&self, at: Millis) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO sync_meta (id, last_sync_at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET last_sync_at = ?1",
            params![at],
        )?;
        Ok(())
    }

    // ---- reading ------------------------------------------------------------------------

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

    /// Visits holding local changes the server has not acknowledged, less the parked ones
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
                r.get(4)?,
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
                heads,
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
                heads_text(&doc.heads()),
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

    // ---- what the carer does ------------------------------------------------------------

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
        self.write_visit(visit_id, |me, offset, doc, visit| {
            if !visit.schedule.carers.contains(&me.carer_id) {
                return Err(StoreError::NotAssigned(visit_id));
            }
            if visit.schedule.is_cancelled() {
                return Err(StoreError::VisitCancelled(visit_id));
            }
            let clocked_in = visit.clock_in_of(me.carer_id).is_some();
            let clocked_out = visit.clock_out_of(me.carer_id).is_some();
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
        self.write_visit(visit_id, |me, offset, doc, visit| {
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
        self.write_visit(visit_id, |me, offset, doc, visit| {
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

    // ---- internals shared with sync -------------------------------------------------------

    /// Load, check, change and save one visit in one immediate transaction.
    fn write_visit<T>(
        &self,
        visit_id: VisitId,
        f: impl FnOnce(&DeviceIdentity, Option<ClockOffset>, &mut VisitDocument, &Visit) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (me, actor) = read_identity(&tx)?.ok_or(StoreError::NotEnrolled)?;
        let offset = read_offset(&tx)?.filter(|o| now - o.measured_at <= OFFSET_FRESH_FOR_MS);
        let (doc, _) = load_doc(&tx, visit_id)?;
        let mut doc = doc.with_actor(&actor);
        let visit = doc.read().map_err(|source| StoreError::Document {
            visit: visit_id,
            source,
        })?;
        let out = f(&me, offset, &mut doc, &visit)?;
        let state = load_sync_state(&tx, visit_id)?;
        save_visit(
            &tx,
            visit_id,
            &mut doc,
            &actor,
            Some(me.carer_id),
            state.as_ref(),
            now,
        )?;
        tx.commit()?;
        Ok(out)
    }

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
        self.merge_into(visit_id, |doc| {
            use automerge::sync::SyncDoc;
            doc.automerge()
                .sync()
                .receive_sync_message(state, message)
                .map_err(|e| StoreError::Document {
                    visit: visit_id,
                    source: e.into(),
                })?;
            Ok(Some(state.clone()))
        })
    }

    fn merge_into(
        &self,
        visit_id: VisitId,
        f: impl FnOnce(&mut VisitDocument) -> Result<Option<SyncState>>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (me, actor) = read_identity(&tx)?.ok_or(StoreError::NotEnrolled)?;
        let existing = match load_doc(&tx, visit_id) {
            Ok((doc, _)) => Some(doc),
            Err(StoreError::UnknownVisit(_)) => None,
            Err(e) => return Err(e),
        };
        let had_doc = existing.is_some();
        let mut doc = existing.unwrap_or_else(VisitDocument::empty).with_actor(&actor);
        let state = match f(&mut doc)? {
            Some(s) => Some(s),
            None => load_sync_state(&tx, visit_id)?,
        };
        // A replica still missing changes it depends on may not be readable yet; keep waiting.
        if had_doc || doc.read().is_ok() {
            save_visit(
                &tx,
                visit_id,
                &mut doc,
                &actor,
                Some(me.carer_id),
                state.as_ref(),
                now,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Heads of each visit the phone holds, as stored with its rows; for a parked visit, the heads
    /// the server acknowledged (its refused changes are not news the server should expect).
    pub(crate) fn visit_heads(&self) -> Result<std::collections::HashMap<VisitId, String>> {
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
                return Ok((visit_id, heads_text(&shared)));
            }
            Ok((visit_id, heads))
        })
        .collect()
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
        self.merge_into(visit_id, |doc| {
            doc.merge(&mut incoming).map_err(|source| StoreError::Document {
                visit: visit_id,
                source,
            })?;
            Ok(None)
        })?;
        Ok(visit_id)
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

/// Heads as sorted hex joined by commas: comparable with the server's manifest without loading documents.
pub(crate) fn heads_text(heads: &[automerge::ChangeHash]) -> String {
    let mut hex: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    hex.sort();
    hex.join(",")
}

fn parse_id<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| corrupt_row(format!("bad id {s:?}")))
}

fn corrupt_row(msg: String) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        msg.into(),
    ))
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

fn read_identity(conn: &Connection) -> rusqlite::Result<Option<(DeviceIdentity, ActorId)>> {
    conn.query_row(
        "SELECT device_id, carer_id, actor, server_url, token FROM device WHERE id = 1",
        [],
        |r| {
            let parse = |i: usize, s: String| {
                s.parse::<uuid::Uuid>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
                })
            };
            let device_id = DeviceId(parse(0, r.get(0)?)?);
            let carer_id = PersonId(parse(1, r.get(1)?)?);
            let actor: Vec<u8> = r.get(2)?;
            Ok((
                DeviceIdentity {
                    device_id,
                    carer_id,
                    server_url: r.get(3)?,
                    token: r.get(4)?,
                },
                ActorId::from(actor),
            ))
        },
    )
    .optional()
}

fn read_offset(conn: &Connection) -> rusqlite::Result<Option<ClockOffset>> {
    conn.query_row("SELECT offset_ms, measured_at FROM clock WHERE id = 1", [], |r| {
        Ok(ClockOffset {
            offset_ms: r.get(0)?,
            measured_at: r.get(1)?,
        })
    })
    .optional()
}

fn load_doc(conn: &Connection, visit_id: VisitId) -> Result<(VisitDocument, u32)> {
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

fn load_sync_state(conn: &Connection, visit_id: VisitId) -> Result<Option<SyncState>> {
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

/// Write the document bytes and every row derived from them; called inside a transaction.
fn save_visit(
    tx: &Transaction<'_>,
    visit_id: VisitId,
    doc: &mut VisitDocument,
    actor: &ActorId,
    carer: Option<PersonId>,
    state: Option<&SyncState>,
    now: Millis,
) -> Result<()> {
    let visit = doc.read().map_err(|source| StoreError::Document {
        visit: visit_id,
        source,
    })?;
    let shared: Vec<automerge::ChangeHash> = state.map(|s| s.shared_heads.clone()).unwrap_or_default();
    let unshared = doc.automerge().get_changes(&shared);
    let pending = unshared.iter().filter(|c| c.actor_id() == actor).count() as u32;
    let nothing_unshared = unshared.is_empty();
    let my_state = carer.map_or(CarerVisitState::Upcoming, |c| visit.carer_state(c));
    let heads = heads_text(&doc.heads());
    let bytes = doc.save();
    let id = visit_id.to_string();
    tx.execute(
        "INSERT INTO visits (visit_id, doc, client_id, contract_id, planned_start, planned_end, status, my_state,
                             updated_at, pending_changes, sync_state, heads)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (visit_id) DO UPDATE SET doc = ?2, client_id = ?3, contract_id = ?4, planned_start = ?5,
             planned_end = ?6, status = ?7, my_state = ?8, updated_at = ?9, pending_changes = ?10, sync_state = ?11,
             heads = ?12",
        params![
            id,
            bytes,
            visit.schedule.client_id.to_string(),
            visit.schedule.contract_id.to_string(),
            visit.schedule.planned_start,
            visit.schedule.planned_end,
            visit.schedule.status.as_str(),
            my_state.as_str(),
            now,
            pending,
            state.map(|s| s.encode()),
            heads,
        ],
    )?;
    if nothing_unshared {
        // The server holds everything this visit has: whatever it refused is settled.
        tx.execute("DELETE FROM refusals WHERE visit_id = ?1", [&id])?;
    }
    tx.execute("DELETE FROM clock_events WHERE visit_id = ?1", [&id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO clock_events (event_id, visit_id, kind, carer_id, device_time, trusted_time, method)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in &visit.events {
        insert.execute(params![
            e.id.to_string(),
            id,
            e.kind.as_str(),
            e.carer_id.to_string(),
            e.device_time,
            e.trusted_time(),
            e.method.as_str()
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
