-- Three indexes every commit wrote and nothing needs any more (a count of the WAL's frames by
-- b-tree under the load generator, docs/performance.md "Seventh round": together about a sixth of
-- the pages a clock event writes).
--
-- Events and amendments no longer carry their visit's planned start (0002): reports read the
-- facts (0005), and the few queries of a period's events find them through the visit, as on
-- PostgreSQL. A visit's chunks are found through the unique index on (visit_id, chunk_hash) and
-- put in order of `seq` (a visit holds at most a few dozen).

DROP INDEX IF EXISTS clock_events_by_planned_start;
DROP INDEX IF EXISTS amendments_by_planned_start;
ALTER TABLE clock_events DROP COLUMN planned_start;
ALTER TABLE amendments DROP COLUMN planned_start;
DROP INDEX IF EXISTS doc_chunks_by_visit;
