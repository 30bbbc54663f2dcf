-- Pooled recall@1 and MRR of every run, with the change from the previous run of the same evaluation
-- (same split, protocol and query alignment), oldest run first.
SELECT
    r.run_id,
    r.status,
    q.split,
    q.protocol,
    q.query_alignment,
    q.queries,
    q.recall_at_1,
    q.recall_at_1 - LAG(q.recall_at_1) OVER w AS recall_at_1_delta,
    q.mrr,
    q.mrr - LAG(q.mrr) OVER w AS mrr_delta
FROM runs AS r
JOIN quality_metrics AS q ON q.run_id = r.run_id
WHERE q.condition = 'all' AND q.query_seconds IS NULL
WINDOW w AS (PARTITION BY q.split, q.protocol, q.query_alignment ORDER BY r.started_at, r.run_id)
ORDER BY r.started_at, r.run_id, q.split, q.protocol, q.query_alignment
