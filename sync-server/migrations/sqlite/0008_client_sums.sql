-- Per-client sums for the weekly reconciliation and continuity (`store::client_sums`), kept by
-- the commit path in the transaction that writes the facts, so a month's reconciliation or
-- continuity reads its sums instead of every visit's rows. Days and weeks are local to one fixed
-- zone (`client_sums::SUMS_ZONE`, Europe/London), computed in Rust; a report in another zone
-- sums the rows. Each period is kept per ISO week (`days` = 7, `start_day` its Monday) and per
-- day (`days` = 1), as local day numbers (days since 1970-01-01). A report uses the sums only if
-- no row it reads changed after its `as_of`. The rows of the facts already there are summed
-- after this file, by the step's Rust (`fill_client_sums`), which knows the zone.
-- WITHOUT ROWID: the rows live in their key's b-tree, which a report reads as a range.

CREATE TABLE IF NOT EXISTS reconciliation_sums (
    days INTEGER NOT NULL,
    start_day INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    visits INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    authorised_ms INTEGER NOT NULL,
    delivered_ms INTEGER NOT NULL,
    billable_minutes INTEGER NOT NULL,
    PRIMARY KEY (days, start_day, client_id, contract_id)
) WITHOUT ROWID;

-- Visits not cancelled, and how many of the period's carers (below) came to or were assigned to
-- at least one of them.
CREATE TABLE IF NOT EXISTS continuity_sums (
    days INTEGER NOT NULL,
    start_day INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    visits INTEGER NOT NULL,
    carers_came INTEGER NOT NULL,
    carers_assigned INTEGER NOT NULL,
    PRIMARY KEY (days, start_day, client_id)
) WITHOUT ROWID;

-- Per carer: visits not cancelled they came to, and were assigned to.
CREATE TABLE IF NOT EXISTS continuity_carer_sums (
    days INTEGER NOT NULL,
    start_day INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    carer_id TEXT NOT NULL,
    came INTEGER NOT NULL,
    assigned INTEGER NOT NULL,
    PRIMARY KEY (days, start_day, client_id, carer_id)
) WITHOUT ROWID;
