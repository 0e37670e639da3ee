-- Accounts: users, API tokens (hashed), quota top-ups and the audit log. Every change to a user or
-- token takes a new `version` from one sequence; the Redis copies the edge reads carry it, so an
-- older copy never overwrites a newer one.
CREATE SEQUENCE accounts_version;

CREATE TABLE users (
    user_id text PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    password_hash text,
    role smallint NOT NULL CHECK (role IN (1, 2)),
    tier text NOT NULL DEFAULT 'default',
    disabled boolean NOT NULL DEFAULT false,
    quota_limit_micro_credits bigint CHECK (quota_limit_micro_credits >= 0),
    quota_limit_tokens bigint CHECK (quota_limit_tokens >= 0),
    rate_limits jsonb NOT NULL DEFAULT '{}'::jsonb,
    version bigint NOT NULL DEFAULT nextval('accounts_version'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    token_id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL UNIQUE,
    disabled boolean NOT NULL DEFAULT false,
    expires_at timestamptz,
    allowed_models text[] NOT NULL DEFAULT '{}',
    quota_limit_micro_credits bigint CHECK (quota_limit_micro_credits >= 0),
    quota_limit_tokens bigint CHECK (quota_limit_tokens >= 0),
    rate_limits jsonb NOT NULL DEFAULT '{}'::jsonb,
    version bigint NOT NULL DEFAULT nextval('accounts_version'),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- A retried top-up (same idempotency key) applies once.
CREATE TABLE quota_topups (
    idempotency_key text PRIMARY KEY,
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'token')),
    subject_id text NOT NULL,
    micro_credits bigint NOT NULL,
    tokens bigint NOT NULL,
    actor_user_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    entry_id bigserial PRIMARY KEY,
    actor_user_id text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    at timestamptz NOT NULL DEFAULT now()
);
