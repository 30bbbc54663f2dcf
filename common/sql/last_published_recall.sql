-- The quality gate's reference: pooled recall@1 of the most recently published run (other than the run
-- being gated) under the same evaluation. Comments here carry no bind parameters: SQLAlchemy would bind them.
SELECT r.run_id, q.recall_at_1, r.published_version
FROM runs AS r
JOIN quality_metrics AS q ON q.run_id = r.run_id
WHERE r.status = 'published'
  AND r.run_id <> :run_id
  AND q.condition = 'all' AND q.query_seconds IS NULL
  AND q.split = :split AND q.protocol = :protocol AND q.query_alignment = :query_alignment
ORDER BY r.published_at DESC, r.run_id DESC
LIMIT 1
