-- Throughput and tail latency per model, configuration and concurrency, with the change from the
-- previous run that measured the same thing.
SELECT
    r.run_id,
    b.source,
    b.model,
    b.config,
    b.protocol,
    b.concurrency,
    b.throughput_rps,
    b.throughput_rps - LAG(b.throughput_rps) OVER w AS throughput_delta,
    b.p50_ms,
    b.p95_ms,
    b.p95_ms - LAG(b.p95_ms) OVER w AS p95_delta_ms
FROM runs AS r
JOIN benchmark_results AS b ON b.run_id = r.run_id
WINDOW w AS (PARTITION BY b.source, b.model, b.config, b.protocol, b.concurrency ORDER BY r.started_at, r.run_id)
ORDER BY b.source, b.model, b.config, b.protocol, b.concurrency, r.started_at, r.run_id
