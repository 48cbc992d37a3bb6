-- A visit's chunks are found through the unique index on (visit_id, chunk_hash) and put in order
-- of `seq` (a visit holds at most a few dozen): one index fewer for every commit to write.

DROP INDEX IF EXISTS doc_chunks_by_visit;
