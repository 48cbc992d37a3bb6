-- Per-visit facts (judged once at commit, versioned by the server's time) and contract rules with
-- the time they were set, so reports are sums over compact rows, exact for any `as_of`. The
-- columns after `valid_to` are `store::facts::UNIT_COLS`, in that order. Existing visits are
-- judged after this file by Rust (the backfill: the metrics' rules are not SQL).

CREATE TABLE IF NOT EXISTS visit_facts (
    fact_id INTEGER PRIMARY KEY,
    visit_id TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    planned_start INTEGER NOT NULL,
    planned_end INTEGER NOT NULL,
    carers TEXT NOT NULL,
    chargeable INTEGER NOT NULL,
    authorised_ms INTEGER NOT NULL,
    delivered_ms INTEGER NOT NULL,
    billable_minutes INTEGER NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER,
    cancelled INTEGER NOT NULL,
    attended INTEGER NOT NULL,
    clock_in INTEGER,
    clock_out INTEGER,
    on_time INTEGER NOT NULL,
    late INTEGER NOT NULL,
    early INTEGER NOT NULL,
    start_offset_ms INTEGER,
    duration_ms INTEGER,
    short INTEGER NOT NULL,
    overrun INTEGER NOT NULL,
    electronic INTEGER NOT NULL,
    location_checked INTEGER NOT NULL,
    location_verified INTEGER NOT NULL,
    partially_attended INTEGER NOT NULL,
    overdue_after INTEGER,
    missed_after INTEGER,
    open_after INTEGER,
    flagged_events INTEGER NOT NULL,
    unverified_time_events INTEGER NOT NULL,
    clock_skew_events INTEGER NOT NULL,
    future_time_events INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS visit_facts_by_start ON visit_facts (planned_start, valid_from);
CREATE INDEX IF NOT EXISTS visit_facts_by_visit ON visit_facts (visit_id, valid_to);
CREATE TABLE IF NOT EXISTS carer_visit_facts (
    fact_id INTEGER NOT NULL REFERENCES visit_facts (fact_id) ON DELETE CASCADE,
    carer_id TEXT NOT NULL,
    assigned INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    attended INTEGER NOT NULL,
    clock_in INTEGER,
    clock_out INTEGER,
    on_time INTEGER NOT NULL,
    late INTEGER NOT NULL,
    early INTEGER NOT NULL,
    start_offset_ms INTEGER,
    duration_ms INTEGER,
    short INTEGER NOT NULL,
    overrun INTEGER NOT NULL,
    electronic INTEGER NOT NULL,
    location_checked INTEGER NOT NULL,
    location_verified INTEGER NOT NULL,
    partially_attended INTEGER NOT NULL,
    overdue_after INTEGER,
    missed_after INTEGER,
    open_after INTEGER,
    flagged_events INTEGER NOT NULL,
    unverified_time_events INTEGER NOT NULL,
    clock_skew_events INTEGER NOT NULL,
    future_time_events INTEGER NOT NULL,
    PRIMARY KEY (fact_id, carer_id)
);
CREATE TABLE IF NOT EXISTS contract_rules (
    contract_id TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    rules TEXT NOT NULL,
    PRIMARY KEY (contract_id, valid_from)
);
-- Every contract's rules as they stand, from the start of time.
INSERT INTO contract_rules (contract_id, valid_from, rules) SELECT contract_id, 0, rules FROM contracts
    WHERE true ON CONFLICT DO NOTHING;
