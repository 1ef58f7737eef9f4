-- Fencing and step history (shop-saga).
--
-- lease_epoch: incremented by every claim; every write a worker makes for a run is guarded by
-- `id = $1 AND lease_epoch = <its epoch>`, and steps lock the row with it (Fence::hold), so a
-- worker that lost its lease records nothing.
ALTER TABLE saga_runs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;

-- Every recorded step write is an UPDATE of one row: leave room on the page for HOT updates.
ALTER TABLE saga_runs SET (fillfactor = 70);

-- Stuck runs, for store::stuck and the operator.
CREATE INDEX saga_runs_stuck ON saga_runs (kind, updated_at) WHERE status = 'stuck';

-- One row per attempt of an action or compensation, written in the same statement as the
-- progress write it belongs to (so it is fenced too); `lease_lost` rows record an attempt whose
-- worker found it no longer held the run (they change nothing else).
CREATE TABLE saga_steps (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('action', 'compensation')),
    outcome     text        NOT NULL
        CHECK (outcome IN ('ok', 'transient', 'failed', 'timeout', 'lease_lost')),
    error       text,
    attempt     integer     NOT NULL,
    epoch       bigint      NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);

CREATE INDEX saga_steps_run ON saga_steps (run_id, seq);
