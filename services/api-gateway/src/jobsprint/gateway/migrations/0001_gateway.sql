-- Tables the gateway owns: tenants, tokens, workflow definitions, accepted requests.

CREATE TABLE IF NOT EXISTS workspaces (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_tokens (
    id           text PRIMARY KEY,
    workspace_id text   NOT NULL REFERENCES workspaces (id),
    token_hash   bytea  NOT NULL UNIQUE,              -- sha256 of the token; never the token
    scopes       text[] NOT NULL,
    name         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE IF NOT EXISTS workflows (
    id              text PRIMARY KEY,                 -- wf_<time-ordered>
    workspace_id    text NOT NULL REFERENCES workspaces (id),
    name            text NOT NULL,
    description     text,
    current_version int  NOT NULL,
    trigger_type    text NOT NULL,
    hook_token      text UNIQUE,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX IF NOT EXISTS workflows_ws_id ON workflows (workspace_id, id DESC);

CREATE TABLE IF NOT EXISTS workflow_versions (
    workflow_id text  NOT NULL REFERENCES workflows (id),
    version     int   NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- Every accepted execute/retry, written before its command is produced: answers
-- GET for an execution the projector has not seen yet, and holds idempotency keys.
CREATE TABLE IF NOT EXISTS execution_requests (
    id                    text PRIMARY KEY,
    workspace_id          text NOT NULL,
    workflow_id           text NOT NULL,
    workflow_name         text NOT NULL,
    workflow_version      int  NOT NULL,
    triggered_by          text NOT NULL,
    input                 jsonb,
    original_execution_id text,
    idempotency_key       text,
    requested_at          timestamptz NOT NULL,
    published_at          timestamptz,
    UNIQUE (workspace_id, idempotency_key)
);
