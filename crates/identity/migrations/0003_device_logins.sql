-- Device logins (CLI, SSH keyboard-interactive): the device polls with its secret code, the user
-- confirms the short user code in a browser.
CREATE TABLE device_logins (
    device_code_hash BYTEA PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_name      TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    user_id          UUID REFERENCES users (id) ON DELETE CASCADE,
    denied           BOOLEAN NOT NULL DEFAULT false
);
ALTER TABLE device_logins ADD COLUMN polled_at TIMESTAMPTZ;
