-- An accepted request stays in the execution list as `pending` until the projector has
-- seen its execution; the gateway's upkeep task then marks it projected. The partial index
-- holds only the few requests in flight, so listing them next to the read model is cheap.
ALTER TABLE execution_requests ADD COLUMN IF NOT EXISTS projected boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS execution_requests_in_flight
    ON execution_requests (workspace_id, id DESC) WHERE NOT projected;
-- Projected requests older than the idempotency window are pruned by age.
CREATE INDEX IF NOT EXISTS execution_requests_requested_at
    ON execution_requests (requested_at) WHERE projected;
