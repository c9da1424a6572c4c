"""psycopg 3 with prepare_threshold=0 (every statement server-prepared) through tidepool.

Several connections interleave so that transactions land on different backends of a small pool.
Prints "OK <count>" on success; any mismatch raises.
"""
import os
import sys

import psycopg

dsn = os.environ["TIDEPOOL_DSN"]
conns = [psycopg.connect(dsn, prepare_threshold=0, autocommit=True) for _ in range(3)]
checked = 0
for round_ in range(40):
    for i, conn in enumerate(conns):
        row = conn.execute("SELECT %s::int * 2, %s::text", (round_ + i, f"c{i}")).fetchone()
        assert row == ((round_ + i) * 2, f"c{i}"), row
        with conn.transaction():
            conn.execute("SELECT %s::int", (i,)).fetchone()
            row = conn.execute("SELECT count(*) FROM generate_series(1, %s)", (round_,)).fetchone()
            assert row[0] == round_, row
        checked += 2
# A schema change under a prepared statement (libpq describes the portal at every execution):
# PostgreSQL answers 0A000 "cached plan must not change result type", tidepool prepares the
# statement again and retries, so the client sees only the new rows.
ddl = conns[0]
ddl.execute("DROP TABLE IF EXISTS psycopg_schema_change")
ddl.execute("CREATE TABLE psycopg_schema_change (id int)")
ddl.execute("INSERT INTO psycopg_schema_change VALUES (1)")
for conn in conns:
    for _ in range(2):
        assert conn.execute("SELECT * FROM psycopg_schema_change").fetchall() == [(1,)]
ddl.execute("ALTER TABLE psycopg_schema_change ADD COLUMN extra text DEFAULT 'x'")
for conn in conns:
    for _ in range(2):
        rows = conn.execute("SELECT * FROM psycopg_schema_change").fetchall()
        assert rows == [(1, "x")], rows
# Prepared statements really were used (psycopg names them _pg3_N).
assert any(conn.prepared_max for conn in conns)
print("OK", checked)
sys.exit(0)
