-- Billing's tables. Prices change over time: the price in force when a request started is charged.
CREATE TABLE model_prices (
    model text NOT NULL,
    effective_from timestamptz NOT NULL,
    prompt_micro_credits_per_1k bigint NOT NULL CHECK (prompt_micro_credits_per_1k >= 0),
    completion_micro_credits_per_1k bigint NOT NULL CHECK (completion_micro_credits_per_1k >= 0),
    PRIMARY KEY (model, effective_from)
);

-- One row per usage event, keyed by its id: applying an event twice changes nothing.
CREATE TABLE usage_events (
    event_id text PRIMARY KEY,
    user_id text NOT NULL,
    token_id text NOT NULL,
    model text NOT NULL,
    kind smallint NOT NULL,
    outcome smallint NOT NULL,
    streamed boolean NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_micro_credits bigint NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    billed_at timestamptz NOT NULL DEFAULT now()
);

-- Per user, token, model and UTC day; updated only by events not seen before.
CREATE TABLE usage_daily (
    day date NOT NULL,
    user_id text NOT NULL,
    token_id text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_micro_credits bigint NOT NULL,
    PRIMARY KEY (day, user_id, token_id, model)
);

-- Running spend per user and per token (the accounts schema adds the limits it is checked against).
CREATE TABLE spend (
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'token')),
    subject_id text NOT NULL,
    used_micro_credits bigint NOT NULL,
    used_tokens bigint NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);
