-- API tokens expire. Tokens issued before expiry existed get 90 days from the upgrade (the
-- default `--token-ttl-days`), not forever; indexes for shutting a person's account and for a
-- supervisor's view of clients.

ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
UPDATE api_tokens SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 7776000000
    WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_by_person ON api_tokens (person_id);
CREATE INDEX devices_by_person ON devices (person_id);
CREATE INDEX enrolment_codes_by_person ON enrolment_codes (person_id);
CREATE INDEX visits_by_client ON visits (client_id);
