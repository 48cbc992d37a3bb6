-- The outbox (unacknowledged local changes) and per-visit sync state with the server.

ALTER TABLE visits ADD COLUMN pending_changes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE visits ADD COLUMN sync_state BLOB;
ALTER TABLE visits ADD COLUMN heads TEXT NOT NULL DEFAULT '';
CREATE INDEX visits_pending ON visits (pending_changes) WHERE pending_changes > 0;
CREATE TABLE sync_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_sync_at INTEGER
);
-- A v1 file cannot tell what the server has seen: assume nothing, so nothing is purged
-- before the next sync recounts.
UPDATE visits SET pending_changes = 1;
