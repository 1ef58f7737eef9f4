-- Baseline. IF NOT EXISTS only so that databases whose table was created by the unversioned
-- DDL this crate used to run adopt this version without error; later migrations are plain.
-- Saga runs: one row per saga instance, updated after every step (shop-saga).
CREATE TABLE IF NOT EXISTS saga_runs (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    data            jsonb       NOT NULL,
    -- running: `step` is the next step to run.
    -- compensating: `step` is the next completed step to compensate (counting down; -1 = done).
    -- completed / compensated: finished. stuck: a compensation failed for good; needs an operator.
    status          text        NOT NULL
        CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'stuck')),
    step            integer     NOT NULL DEFAULT 0,
    attempts        integer     NOT NULL DEFAULT 0,   -- failed attempts of the current step
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    failure         text,                              -- why the saga compensated
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS saga_runs_due ON saga_runs (kind, next_attempt_at)
    WHERE status IN ('running', 'compensating');
