"""psycopg 3 in transaction mode when a type changes under prepared statements (issue 15, item 6).

psycopg sends DEALLOCATE ALL after any ROLLBACK or DROP and prepares its statements again; they
must then see the type's new OID, as on a direct connection, and so must new clients preparing
the same text, on every backend of the pool (tidepool shares one statement per text).
Prints "OK <count>" on success; any mismatch raises.
"""
import os
import sys

import psycopg

dsn = os.environ["TIDEPOOL_DSN"]
SQL = "SELECT %s::text::item6_mood"
checked = 0


def on_every_backend(value, n=2):
    """New clients, each inside a transaction at once (so on different backends), prepare SQL."""
    global checked
    clients = [psycopg.connect(dsn, prepare_threshold=0) for _ in range(n)]
    for c in clients:
        assert c.execute(SQL, (value,)).fetchone() == (value,)
        checked += 1
    for c in clients:
        c.commit()
        c.close()


with psycopg.connect(dsn, prepare_threshold=0) as conn:
    conn.execute("DROP TYPE IF EXISTS item6_mood")
    conn.commit()
    # The steps: created in a savepoint, prepared, rolled back, created again.
    with conn.transaction():
        conn.execute("SAVEPOINT s")
        conn.execute("CREATE TYPE item6_mood AS ENUM ('happy', 'sad')")
        assert conn.execute(SQL, ("happy",)).fetchone() == ("happy",)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("CREATE TYPE item6_mood AS ENUM ('happy', 'sad', 'ok')")
        assert conn.execute(SQL, ("ok",)).fetchone() == ("ok",)
        checked += 2
    conn.commit()
    for round_ in range(3):
        assert conn.execute(SQL, ("sad",)).fetchone() == ("sad",)
        conn.commit()
        on_every_backend("sad")
        # Dropped and created again: a new OID under the same name and text.
        conn.execute("DROP TYPE item6_mood")
        conn.commit()
        conn.execute(f"CREATE TYPE item6_mood AS ENUM ('sad', 'v{round_}')")
        conn.commit()
        on_every_backend(f"v{round_}")
        assert conn.execute(SQL, (f"v{round_}",)).fetchone() == (f"v{round_}",)
        conn.commit()
        checked += 2
    # The type changes under a statement another client still holds (and never deallocates):
    # new clients preparing the same text must see the new type, as they would directly.
    conn.execute("DROP TYPE item6_mood")
    conn.execute("CREATE TYPE item6_mood AS ENUM ('a')")
    conn.commit()
    with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as holder:
        assert holder.execute(SQL, ("a",)).fetchone() == ("a",)
        on_every_backend("a")
        with psycopg.connect(dsn, prepare_threshold=None, autocommit=True) as admin:
            admin.execute("DROP TYPE item6_mood")
            admin.execute("CREATE TYPE item6_mood AS ENUM ('a', 'b')")
        for _ in range(3):
            with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as new:
                assert new.execute(SQL, ("b",)).fetchone() == ("b",)
                checked += 1
    conn.execute("DROP TYPE item6_mood")
    conn.commit()
print("OK", checked)
sys.exit(0)
