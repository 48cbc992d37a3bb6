-- Per-visit facts and contract rules history (see the embedded store's 0005_visit_facts.sql).
-- The columns after `valid_to` are `store::facts::UNIT_COLS`, in that order. Existing visits
-- are judged after this file by Rust (the backfill).

CREATE TABLE IF NOT EXISTS visit_facts (
    fact_id BIGSERIAL PRIMARY KEY,
    visit_id TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    planned_start BIGINT NOT NULL,
    planned_end BIGINT NOT NULL,
    carers TEXT NOT NULL,
    chargeable BIGINT NOT NULL,
    authorised_ms BIGINT NOT NULL,
    delivered_ms BIGINT NOT NULL,
    billable_minutes BIGINT NOT NULL,
    valid_from BIGINT NOT NULL,
    valid_to BIGINT,
    cancelled BIGINT NOT NULL,
    attended BIGINT NOT NULL,
    clock_in BIGINT,
    clock_out BIGINT,
    on_time BIGINT NOT NULL,
    late BIGINT NOT NULL,
    early BIGINT NOT NULL,
    start_offset_ms BIGINT,
    duration_ms BIGINT,
    short BIGINT NOT NULL,
    overrun BIGINT NOT NULL,
    electronic BIGINT NOT NULL,
    location_checked BIGINT NOT NULL,
    location_verified BIGINT NOT NULL,
    partially_attended BIGINT NOT NULL,
    overdue_after BIGINT,
    missed_after BIGINT,
    open_after BIGINT,
    flagged_events BIGINT NOT NULL,
    unverified_time_events BIGINT NOT NULL,
    clock_skew_events BIGINT NOT NULL,
    future_time_events BIGINT NOT NULL,
    fingerprint BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS visit_facts_by_start ON visit_facts (planned_start, valid_from);
CREATE INDEX IF NOT EXISTS visit_facts_by_visit ON visit_facts (visit_id, valid_to);
CREATE TABLE IF NOT EXISTS carer_visit_facts (
    fact_id BIGINT NOT NULL REFERENCES visit_facts (fact_id) ON DELETE CASCADE,
    carer_id TEXT NOT NULL,
    assigned BIGINT NOT NULL,
    rank BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    attended BIGINT NOT NULL,
    clock_in BIGINT,
    clock_out BIGINT,
    on_time BIGINT NOT NULL,
    late BIGINT NOT NULL,
    early BIGINT NOT NULL,
    start_offset_ms BIGINT,
    duration_ms BIGINT,
    short BIGINT NOT NULL,
    overrun BIGINT NOT NULL,
    electronic BIGINT NOT NULL,
    location_checked BIGINT NOT NULL,
    location_verified BIGINT NOT NULL,
    partially_attended BIGINT NOT NULL,
    overdue_after BIGINT,
    missed_after BIGINT,
    open_after BIGINT,
    flagged_events BIGINT NOT NULL,
    unverified_time_events BIGINT NOT NULL,
    clock_skew_events BIGINT NOT NULL,
    future_time_events BIGINT NOT NULL,
    PRIMARY KEY (fact_id, carer_id)
);
CREATE TABLE IF NOT EXISTS contract_rules (
    contract_id TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    rules TEXT NOT NULL,
    PRIMARY KEY (contract_id, valid_from)
);
-- Every contract's rules as they stand, from the start of time.
INSERT INTO contract_rules (contract_id, valid_from, rules) SELECT contract_id, 0, rules FROM contracts
    ON CONFLICT DO NOTHING;
