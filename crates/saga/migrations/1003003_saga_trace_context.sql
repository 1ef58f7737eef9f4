-- The W3C trace context (traceparent, tracestate, baggage) of the request that started the run
-- (shop-saga): every step's span is a child of it, also when another worker or a restarted
-- process resumes the run. NULL when tracing was off.
ALTER TABLE saga_runs ADD COLUMN trace_context jsonb;
