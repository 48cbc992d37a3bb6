-- Per-client sums for the weekly reconciliation and continuity (see the embedded store's
-- 0008_client_sums.sql). The rows of the facts already there are summed after this file, by the
-- step's Rust (`fill_client_sums`), which knows the zone.
-- Each key carries the other columns (INCLUDE), so a report reads its range by an index-only
-- scan in key order, as SQLite reads its WITHOUT ROWID tables: the heap is in commit order, and
-- a seq scan of it read 1.2 million rows for the 300,000 of one month. Index-only scans need
-- the visibility map, which (auto)vacuum keeps; pages changed since are also read from the heap.
-- Ids are UUID (the facts hold them as text, cast on the way in): 16 bytes a key instead of 36
-- characters, and a report's binary COPY gives them as 16 raw bytes, with no text to parse.

CREATE TABLE IF NOT EXISTS reconciliation_sums (
    days BIGINT NOT NULL,
    start_day BIGINT NOT NULL,
    client_id UUID NOT NULL,
    contract_id UUID NOT NULL,
    changed_at BIGINT NOT NULL,
    visits BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    authorised_ms BIGINT NOT NULL,
    delivered_ms BIGINT NOT NULL,
    billable_minutes BIGINT NOT NULL,
    PRIMARY KEY (days, start_day, client_id, contract_id)
        INCLUDE (changed_at, visits, cancelled, authorised_ms, delivered_ms, billable_minutes)
);

CREATE TABLE IF NOT EXISTS continuity_sums (
    days BIGINT NOT NULL,
    start_day BIGINT NOT NULL,
    client_id UUID NOT NULL,
    changed_at BIGINT NOT NULL,
    visits BIGINT NOT NULL,
    carers_came BIGINT NOT NULL,
    carers_assigned BIGINT NOT NULL,
    PRIMARY KEY (days, start_day, client_id) INCLUDE (changed_at, visits, carers_came, carers_assigned)
);

CREATE TABLE IF NOT EXISTS continuity_carer_sums (
    days BIGINT NOT NULL,
    start_day BIGINT NOT NULL,
    client_id UUID NOT NULL,
    carer_id UUID NOT NULL,
    came BIGINT NOT NULL,
    assigned BIGINT NOT NULL,
    PRIMARY KEY (days, start_day, client_id, carer_id) INCLUDE (came, assigned)
);
