-- API tokens expire (tokens from before get 90 days from the upgrade, the default
-- `--token-ttl-days`); indexes for shutting a person's account and a supervisor's clients.

ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
UPDATE api_tokens SET expires_at = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + 7776000000
    WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_by_person ON api_tokens (person_id);
CREATE INDEX devices_by_person ON devices (person_id);
CREATE INDEX enrolment_codes_by_person ON enrolment_codes (person_id);
CREATE INDEX visits_by_client ON visits (client_id);
