-- Recall@1 per listening condition and query length, run over run: where a change comes from.
SELECT
    r.run_id,
    q.condition,
    q.query_seconds,
    q.queries,
    q.recall_at_1,
    q.recall_at_1 - LAG(q.recall_at_1) OVER w AS recall_at_1_delta
FROM runs AS r
JOIN quality_metrics AS q ON q.run_id = r.run_id
WHERE q.condition <> 'all' AND q.query_seconds IS NOT NULL
WINDOW w AS (PARTITION BY q.split, q.protocol, q.query_alignment, q.condition, q.query_seconds
             ORDER BY r.started_at, r.run_id)
ORDER BY q.condition, q.query_seconds, r.started_at, r.run_id
