-- Catalog size and build time of every index build, with the growth since the previous build of the same type.
SELECT
    r.run_id,
    i.index_type,
    i.n_tracks,
    i.n_tracks - LAG(i.n_tracks) OVER w AS tracks_added,
    i.n_vectors,
    i.build_seconds,
    i.build_seconds - LAG(i.build_seconds) OVER w AS build_seconds_delta,
    SUBSTR(i.embedder_sha256, 1, 12) AS embedder
FROM runs AS r
JOIN index_builds AS i ON i.run_id = r.run_id
WINDOW w AS (PARTITION BY i.index_type ORDER BY r.started_at, r.run_id, i.built_at)
ORDER BY i.index_type, r.started_at, r.run_id, i.built_at
