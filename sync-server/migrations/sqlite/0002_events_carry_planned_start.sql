-- Each clock event and amendment carries its visit's planned start, kept equal on every commit,
-- so a report reads a period's events as one index range instead of one join probe per visit.

ALTER TABLE clock_events ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
UPDATE clock_events SET planned_start = COALESCE(
    (SELECT v.planned_start FROM visits v WHERE v.visit_id = clock_events.visit_id), 0);
CREATE INDEX clock_events_by_planned_start ON clock_events (planned_start);
ALTER TABLE amendments ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
UPDATE amendments SET planned_start = COALESCE(
    (SELECT v.planned_start FROM visits v WHERE v.visit_id = amendments.visit_id), 0);
CREATE INDEX amendments_by_planned_start ON amendments (planned_start);
