SELECT DISTINCT pg_catalog.lower(COALESCE(m[1], m[2])) FROM pg_catalog.pg_proc p,
    pg_catalog.regexp_matches(p.prosrc, '[''"]([a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*)[''"]|set\s+(?:local\s+|session\s+)?([a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*)', 'gi') m(m)
WHERE p.oid >= 16384 AND p.prolang NOT IN (12, 13) AND COALESCE(m[1], m[2]) IS NOT NULL
LIMIT 1000
