-- Each transition is published on NATS (`k8shell.workspace.<state>`) from this table, after
-- its commit: the event id is fixed here, so that a publish repeated after a crash is the same
-- event (JetStream and consumers drop the duplicate).
ALTER TABLE transitions
    ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN published_at timestamptz;

CREATE INDEX transitions_unpublished ON transitions (id) WHERE published_at IS NULL;
