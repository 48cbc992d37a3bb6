-- Alerts as records with an append-only history, escalations, commissioner contacts and named
-- leases (`store::alerts`).

CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    carer_id TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    team_id TEXT,
    raised_at INTEGER NOT NULL,
    ack_due_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'resolved', 'closed')),
    acknowledged_at INTEGER,
    acknowledged_by TEXT,
    escalated_at INTEGER,
    resolved_at INTEGER,
    resolved_by TEXT,
    action TEXT,
    note TEXT,
    closed_at INTEGER,
    close_reason TEXT,
    version INTEGER NOT NULL,
    UNIQUE (visit_id, kind, carer_id, subject)
);
CREATE INDEX IF NOT EXISTS alerts_by_raised ON alerts (raised_at);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state, ack_due_at);
CREATE TABLE IF NOT EXISTS alert_history (
    alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    step TEXT NOT NULL,
    by_person TEXT,
    action TEXT,
    note TEXT,
    close_reason TEXT,
    detail TEXT NOT NULL,
    PRIMARY KEY (alert_id, seq)
);
CREATE TABLE IF NOT EXISTS escalations (
    escalation_id TEXT PRIMARY KEY,
    contract_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    week_start TEXT NOT NULL,
    authorised_minutes INTEGER NOT NULL,
    delivered_minutes INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    due_on TEXT NOT NULL,
    raised_at INTEGER,
    raised_on TEXT,
    raised_by TEXT,
    contact_id TEXT,
    UNIQUE (contract_id, client_id, week_start)
);
CREATE TABLE IF NOT EXISTS commissioner_contacts (
    contact_id TEXT PRIMARY KEY,
    contract_id TEXT NOT NULL,
    contact_on TEXT NOT NULL,
    summary TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    escalation_id TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
