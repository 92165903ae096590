-- The decision log: every decision authz made, with the input minus secrets.
CREATE TABLE decisions (
    id         UUID PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    domain     TEXT NOT NULL,
    input      JSONB NOT NULL,
    allow      BOOLEAN NOT NULL,
    reasons    TEXT[] NOT NULL,
    revision   TEXT NOT NULL,
    latency_us BIGINT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (at);
