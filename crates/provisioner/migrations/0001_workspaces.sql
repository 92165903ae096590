-- Workspaces: what the owner wants (desired) and what the runtime has (observed).
CREATE TABLE workspaces (
    id uuid PRIMARY KEY,
    owner text NOT NULL,
    name text NOT NULL,
    -- The blueprint as the owner wrote it, and the WorkspaceSpec it compiled to.
    blueprint_source text NOT NULL,
    spec jsonb NOT NULL,
    -- Image reference, a digest once known.
    image text NOT NULL,
    runtime text NOT NULL CHECK (runtime IN ('local', 'kubernetes')),
    desired text NOT NULL CHECK (desired IN ('running', 'stopped', 'deleted')),
    observed text NOT NULL CHECK (observed IN ('pending', 'starting', 'running', 'stopping', 'stopped', 'deleting', 'deleted', 'failed')),
    reason text NOT NULL DEFAULT '',
    -- How to reach its k8shelld while it runs (`unix:/path` or `host:port`).
    endpoint text NOT NULL DEFAULT '',
    -- 0: never idles out.
    idle_timeout_seconds bigint NOT NULL CHECK (idle_timeout_seconds >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now()
);

-- A name is unique per owner among the workspaces that exist; a deleted one frees its name.
CREATE UNIQUE INDEX workspaces_name ON workspaces (owner, name) WHERE observed <> 'deleted';
CREATE INDEX workspaces_unsettled ON workspaces (updated_at)
    WHERE observed <> 'deleted';

-- Every change of observed state, in order (kept after the workspace is deleted: audit).
CREATE TABLE transitions (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text NOT NULL
);

CREATE INDEX transitions_by_workspace ON transitions (workspace_id, id);
