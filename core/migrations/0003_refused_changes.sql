-- Visits whose changes the server refused. The server persisted nothing of the message, so the
-- changes stay only here: parked, not re-sent, shown to the carer, never purged (the foreign key
-- refuses to delete a visit that still holds them).

CREATE TABLE refusals (
    visit_id TEXT PRIMARY KEY REFERENCES visits (visit_id),
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    refused_at INTEGER NOT NULL,
    heads TEXT NOT NULL,
    changes INTEGER NOT NULL
);
