-- The executions read model, built only by the projector from the events topic.
-- Tables live in the schema the projector is configured with (search_path), so
-- `projector rebuild` can build an identical copy beside the live one.

CREATE TABLE IF NOT EXISTS executions (
    id                    text PRIMARY KEY,          -- exec_<time-ordered>
    workspace_id          text        NOT NULL,
    workflow_id           text        NOT NULL,
    workflow_name         text        NOT NULL,
    workflow_version      int         NOT NULL,
    status                text        NOT NULL,      -- pending|running|success|error|cancelled
    triggered_by          text        NOT NULL,      -- api|webhook|retry
    input                 jsonb,
    output                jsonb,
    error                 jsonb,                     -- {"code","message","stepId"}
    original_execution_id text,
    from_step             text,
    timeout_s             double precision NOT NULL,
    created_at            timestamptz NOT NULL,      -- ExecutionRequested time
    started_at            timestamptz,
    finished_at           timestamptz,
    cancelled_at          timestamptz,
    duration_ms           int,
    last_seq              int         NOT NULL       -- highest event seq applied
);
-- Every list filter walks an index in id (= creation time) order, newest first.
CREATE INDEX IF NOT EXISTS executions_ws_id ON executions (workspace_id, id DESC);
CREATE INDEX IF NOT EXISTS executions_ws_wf_id ON executions (workspace_id, workflow_id, id DESC);
CREATE INDEX IF NOT EXISTS executions_ws_status_id ON executions (workspace_id, status, id DESC);
CREATE INDEX IF NOT EXISTS executions_ws_wf_status_id
    ON executions (workspace_id, workflow_id, status, id DESC);

CREATE TABLE IF NOT EXISTS execution_steps (
    execution_id  text NOT NULL,
    step_id       text NOT NULL,
    started_seq   int  NOT NULL,                     -- seq of its first StepStarted: run order
    position      int  NOT NULL,                     -- index in the workflow definition
    step_name     text NOT NULL,
    step_type     text NOT NULL,
    status        text NOT NULL,                     -- running|success|error|cancelled
    attempts      int  NOT NULL,
    input         jsonb,
    output        jsonb,
    error         jsonb,
    reused_from   text,
    started_at    timestamptz,
    finished_at   timestamptz,
    duration_ms   int,
    PRIMARY KEY (execution_id, step_id)
);

CREATE TABLE IF NOT EXISTS execution_logs (
    execution_id text        NOT NULL,
    seq          int         NOT NULL,               -- event seq: log order
    time         timestamptz NOT NULL,
    level        text        NOT NULL,
    message      text        NOT NULL,
    step_id      text,
    data         jsonb,
    PRIMARY KEY (execution_id, seq)
);

-- Kafka positions, written in the same transaction as the rows they produced.
CREATE TABLE IF NOT EXISTS projector_checkpoints (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
