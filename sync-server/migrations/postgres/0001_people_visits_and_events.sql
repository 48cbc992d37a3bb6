-- The first schema: people, tokens, devices, change chunks, sync states and the projected rows
-- (visits, assignments, clock events, amendments) with the reference data.

CREATE TABLE people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('carer', 'supervisor', 'office')),
    team_id TEXT,
    active BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE enrolment_codes (
    code_hash TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_sync_at BIGINT
);
CREATE TABLE doc_chunks (
    visit_id TEXT NOT NULL,
    chunk_hash TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    seq BIGSERIAL PRIMARY KEY,
    UNIQUE (visit_id, chunk_hash)
);
CREATE INDEX doc_chunks_by_visit ON doc_chunks (visit_id, seq);
CREATE TABLE sync_states (
    device_id TEXT NOT NULL,
    visit_id TEXT NOT NULL,
    state BYTEA NOT NULL,
    PRIMARY KEY (device_id, visit_id)
);
CREATE TABLE visits (
    visit_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    carers TEXT NOT NULL,
    planned_start BIGINT NOT NULL,
    planned_end BIGINT NOT NULL,
    status TEXT NOT NULL,
    chargeable BOOLEAN,
    heads TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX visits_by_start ON visits (planned_start);
CREATE TABLE assignments (
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    carer_id TEXT NOT NULL,
    current BOOLEAN NOT NULL,
    PRIMARY KEY (visit_id, carer_id)
);
CREATE INDEX assignments_by_carer ON assignments (carer_id, current);
CREATE TABLE clock_events (
    event_id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    carer_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_time BIGINT NOT NULL,
    clock_offset_ms BIGINT,
    offset_measured_at BIGINT,
    trusted_time BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    reason TEXT,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    accuracy_m DOUBLE PRECISION,
    flags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX clock_events_by_visit ON clock_events (visit_id);
CREATE TABLE amendments (
    amendment_id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits (visit_id),
    author_id TEXT NOT NULL,
    carer_id TEXT NOT NULL,
    time TEXT NOT NULL,
    corrected_time BIGINT NOT NULL,
    reason TEXT NOT NULL,
    written_at BIGINT NOT NULL
);
CREATE INDEX amendments_by_visit ON amendments (visit_id);
CREATE TABLE teams (
    team_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    accuracy_m DOUBLE PRECISION,
    tag_ids TEXT NOT NULL DEFAULT ''
);
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    commissioner TEXT NOT NULL,
    model TEXT NOT NULL CHECK (model IN ('spot', 'framework')),
    rules TEXT NOT NULL
);
