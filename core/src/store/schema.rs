//! The store's schema: numbered migrations stepped by `PRAGMA user_version` (see `crate::sqlite`).
//! Never edit a released step; add the next one.

use crate::sqlite::Migration;
use rusqlite::Transaction;

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
