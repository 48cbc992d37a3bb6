-- The first schema: people, tokens, devices, change chunks, sync states and the projected rows
-- (visits, assignments, clock events, amendments) with the reference data.

CREATE TABLE people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('carer', 'supervisor', 'office')),
    team_id TEXT,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE enrolment_codes (
    code_hash TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    enrolled_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_sync_at INTEGER
);
CREATE TABLE doc_chunks (
    visit_id TEXT NOT NULL,
    chunk_hash TEXT NOT NULL,
    bytes BLOB NOT NULL,
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    UNIQUE (visit_id, chunk_hash)
);
CREATE INDEX doc_chunks_by_visit ON doc_chunks (visit_id, seq);
CREATE TABLE sync_states (
    device_id TEXT NOT NULL,
    visit_id TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (device_id, visit_id)
);
CREATE TABLE visits (
    visit_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    carers TEXT NOT NULL,
    planned_start INTEGER NOT NULL,
    planned_end INTEGER NOT NULL,
    status TEXT NOT NULL,
    chargeable INTEGER,
    heads TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX visits_by_start ON visits (planned_start);
CREATE TABLE assignments (
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    carer_id TEXT NOT NULL,
    current INTEGER NOT NULL,
    PRIMARY KEY (visit_id, carer_id)
);
CREATE INDEX assignments_by_carer ON assignments (carer_id, current);
CREATE TABLE clock_events (
    event_id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    carer_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_time INTEGER NOT NULL,
    clock_offset_ms INTEGER,
    offset_measured_at INTEGER,
    trusted_time INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    reason TEXT,
    lat REAL,
    lon REAL,
    accuracy_m REAL,
    flags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX clock_events_by_visit ON clock_events (visit_id);
CREATE TABLE amendments (
    amendment_id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    author_id TEXT NOT NULL,
    carer_id TEXT NOT NULL,
    time TEXT NOT NULL,
    corrected_time INTEGER NOT NULL,
    reason TEXT NOT NULL,
    written_at INTEGER NOT NULL
);
CREATE INDEX amendments_by_visit ON amendments (visit_id);
CREATE TABLE teams (
    team_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    lat REAL,
    lon REAL,
    accuracy_m REAL,
    tag_ids TEXT NOT NULL DEFAULT ''
);
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    commissioner TEXT NOT NULL,
    model TEXT NOT NULL CHECK (model IN ('spot', 'framework')),
    rules TEXT NOT NULL
);
