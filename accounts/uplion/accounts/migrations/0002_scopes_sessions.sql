-- Credential scopes, who disabled a token, and server-side sessions (issue #13).
--
-- api_tokens.scope: 'inference' keys are for the inference API only; 'admin' tokens for the admin
-- API only. The admin tokens `bootstrap-admin` printed before this migration were the operators'
-- admin-API credential, so they become admin-scoped; every other existing token is an inference key.
ALTER TABLE api_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'inference' CHECK (scope IN ('inference', 'admin'));
UPDATE api_tokens SET scope = 'admin'
WHERE token_id IN (SELECT target FROM audit_log WHERE actor_user_id = 'bootstrap' AND action = 'token.create');

-- Who disabled a token: 'owner' (its user may enable it again) or 'admin' (only an admin may).
-- Tokens disabled before this migration count as disabled by an admin.
ALTER TABLE api_tokens ADD COLUMN disabled_by text CHECK (disabled_by IN ('owner', 'admin'));
UPDATE api_tokens SET disabled_by = 'admin' WHERE disabled;

-- One row per login; a session token is valid only while its row is unrevoked and unexpired, so
-- Logout and a password change end sessions at once. Session tokens issued before this migration
-- name no row and stop working (log in again).
CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    client_address text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);
