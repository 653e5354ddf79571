-- What is left of a deleted execution. A replay of the events topic (redelivery, a reset
-- checkpoint) must neither resurrect a deleted execution nor dead-letter its later events:
-- events of an execution listed here are skipped.
CREATE TABLE IF NOT EXISTS projector_deleted_executions (
    execution_id text        PRIMARY KEY,
    last_seq     int         NOT NULL,               -- seq of its ExecutionDeleted
    deleted_at   timestamptz NOT NULL
);
