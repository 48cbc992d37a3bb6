-- Per-contract sums of the standing visit-level facts per quarter hour of planned start (a
-- "slot"; `store::facts::SLOT_MS`), kept by the commit path in the transaction that writes the
-- facts, so a month's punctuality by contract reads a few thousand rows instead of every visit.
-- A report uses a slot's sums only where they are settled at its `as_of` (`changed_at` and both
-- bounds before it); the other slots are summed from their rows. The columns after the key are
-- `store::facts::SUM_COLS`, in that order. No time zone is stored: every zone in use changes
-- its offset on a quarter hour, so a slot lies in one local day of whichever zone a report uses.
-- WITHOUT ROWID: the rows live in their key's b-tree, one page written per commit instead of two.

CREATE TABLE IF NOT EXISTS visit_fact_sums (
    slot INTEGER NOT NULL,
    contract_id TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    missed_bound INTEGER,
    open_bound INTEGER,
    visits INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    attended INTEGER NOT NULL,
    on_time INTEGER NOT NULL,
    late INTEGER NOT NULL,
    early INTEGER NOT NULL,
    unattended INTEGER NOT NULL,
    short INTEGER NOT NULL,
    overrun INTEGER NOT NULL,
    unclosed INTEGER NOT NULL,
    partially_attended INTEGER NOT NULL,
    electronic INTEGER NOT NULL,
    location_checked INTEGER NOT NULL,
    location_verified INTEGER NOT NULL,
    flagged_events INTEGER NOT NULL,
    unverified_time_events INTEGER NOT NULL,
    clock_skew_events INTEGER NOT NULL,
    future_time_events INTEGER NOT NULL,
    PRIMARY KEY (slot, contract_id)
) WITHOUT ROWID;
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
