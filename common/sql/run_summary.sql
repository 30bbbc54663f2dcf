-- One line per run for the report's picture: pooled recall@1 and the worst p95 of the run's
-- end-to-end (audio_search) measurements.
SELECT
    r.run_id,
    r.status,
    (SELECT MAX(q.recall_at_1) FROM quality_metrics AS q
      WHERE q.run_id = r.run_id AND q.condition = 'all' AND q.query_seconds IS NULL) AS recall_at_1,
    (SELECT MAX(b.p95_ms) FROM benchmark_results AS b
      WHERE b.run_id = r.run_id AND b.model = 'audio_search') AS audio_search_p95_ms
FROM runs AS r
ORDER BY r.started_at, r.run_id
