-- OpenID Connect logins in progress: one row per BeginLogin, consumed by CompleteLogin, so that
-- any replica can finish a login that another began.
CREATE TABLE login_attempts (
    state         TEXT PRIMARY KEY,
    nonce         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_attempts_by_expiry ON login_attempts (expires_at);
