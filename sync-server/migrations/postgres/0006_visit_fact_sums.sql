-- Per-contract slot sums of the standing visit-level facts (see the embedded store's
-- 0007_visit_fact_sums.sql). The columns after the key are `store::facts::SUM_COLS`.

CREATE TABLE IF NOT EXISTS visit_fact_sums (
    slot BIGINT NOT NULL,
    contract_id TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    missed_bound BIGINT,
    open_bound BIGINT,
    visits BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    attended BIGINT NOT NULL,
    on_time BIGINT NOT NULL,
    late BIGINT NOT NULL,
    early BIGINT NOT NULL,
    unattended BIGINT NOT NULL,
    short BIGINT NOT NULL,
    overrun BIGINT NOT NULL,
    unclosed BIGINT NOT NULL,
    partially_attended BIGINT NOT NULL,
    electronic BIGINT NOT NULL,
    location_checked BIGINT NOT NULL,
    location_verified BIGINT NOT NULL,
    flagged_events BIGINT NOT NULL,
    unverified_time_events BIGINT NOT NULL,
    clock_skew_events BIGINT NOT NULL,
    future_time_events BIGINT NOT NULL,
    PRIMARY KEY (slot, contract_id)
);
-- The sums of the facts already there: every version counts towards `changed_at` (it started
-- and perhaps stopped standing then), only the standing ones towards the sums and bounds.
INSERT INTO visit_fact_sums (slot, contract_id, changed_at, missed_bound, open_bound, visits, cancelled,
        attended, on_time, late, early, unattended, short, overrun, unclosed, partially_attended,
        electronic, location_checked, location_verified, flagged_events, unverified_time_events,
        clock_skew_events, future_time_events)
SELECT (f.planned_start - (((f.planned_start % 900000) + 900000) % 900000)) / 900000, f.contract_id,
    MAX(CASE WHEN f.valid_to IS NULL OR f.valid_to < f.valid_from THEN f.valid_from ELSE f.valid_to END),
    MAX(CASE WHEN f.valid_to IS NULL THEN f.missed_after END),
    MAX(CASE WHEN f.valid_to IS NULL THEN f.open_after END),
    SUM(CASE WHEN f.valid_to IS NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.cancelled ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.attended ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.on_time ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.late ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.early ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL AND f.missed_after IS NOT NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.short ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.overrun ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL AND f.open_after IS NOT NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.partially_attended ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.electronic ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.location_checked ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.location_verified ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.flagged_events ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.unverified_time_events ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.clock_skew_events ELSE 0 END),
    SUM(CASE WHEN f.valid_to IS NULL THEN f.future_time_events ELSE 0 END)
FROM visit_facts f
GROUP BY (f.planned_start - (((f.planned_start % 900000) + 900000) % 900000)) / 900000, f.contract_id;
