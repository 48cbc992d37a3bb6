-- The phone's first schema: the enrolled device, the clock offset, visits (document bytes and
-- derived rows) and their clock events.

CREATE TABLE device (
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
CREATE INDEX clock_events_by_visit ON clock_events (visit_id);
