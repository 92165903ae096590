-- Sessions: who is connected to which workspace, from where, since when, until when.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    username text NOT NULL,
    workspace_id uuid NOT NULL,
    workspace_owner text NOT NULL,
    workspace_name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('ssh', 'console')),
    client_ip inet NOT NULL,
    client_port integer NOT NULL CHECK (client_port BETWEEN 0 AND 65535),
    client_version text NOT NULL,
    admin_access boolean NOT NULL,
    -- The service (mTLS identity) that holds the session: only it may change it.
    holder text NOT NULL,
    started_at timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    ended_at timestamptz,
    end_reason text,
    bytes_in bigint NOT NULL DEFAULT 0,
    bytes_out bigint NOT NULL DEFAULT 0,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

CREATE INDEX sessions_newest ON sessions (started_at DESC, id DESC);
CREATE INDEX sessions_by_user ON sessions (username, started_at DESC);
CREATE INDEX sessions_by_workspace ON sessions (workspace_id, started_at DESC);
CREATE INDEX sessions_live ON sessions (heartbeat_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;

-- What happened in a session, in order. `seq` is the holder's number (re-sent events are
-- stored once); events the service adds itself (terminate) have none.
CREATE TABLE timeline (
    id bigserial PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq bigint,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    channel integer NOT NULL,
    data jsonb NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE INDEX timeline_by_session ON timeline (session_id, at, id);

-- One asciicast v2 file per PTY or exec channel, stored as zstd chunks.
CREATE TABLE recordings (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    channel integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('pty', 'exec')),
    header text NOT NULL,
    -- Every byte of the file before this offset is in a stored chunk.
    stored_bytes bigint NOT NULL DEFAULT 0,
    duration double precision NOT NULL DEFAULT 0,
    complete boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX recordings_by_session ON recordings (session_id, created_at);

-- The index: chunk `seq` holds bytes [start_offset, end_offset) of the file, whole lines, with
-- events from first_time to last_time (seconds; NULL when it holds only the header).
CREATE TABLE chunks (
    recording_id uuid NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    start_offset bigint NOT NULL,
    end_offset bigint NOT NULL CHECK (end_offset > start_offset),
    first_time double precision,
    last_time double precision,
    compressed_bytes integer NOT NULL,
    object_key text NOT NULL,
    PRIMARY KEY (recording_id, seq),
    UNIQUE (recording_id, start_offset)
);
