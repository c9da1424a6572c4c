"""asyncpg (which prepares every statement) through tidepool, with explicit prepared statements
reused across transactions and several connections sharing a small pool.

Prints "OK <count>" on success; any mismatch raises.
"""
import asyncio
import os

import asyncpg


async def main():
    dsn = os.environ["TIDEPOOL_DSN"]
    # asyncpg's own statement cache stays on: it is what makes it prepare everything.
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    stmts = [await c.prepare("SELECT $1::int + $2::int") for c in conns]
    checked = 0
    for round_ in range(40):
        for i, (conn, stmt) in enumerate(zip(conns, stmts)):
            assert await stmt.fetchval(round_, i) == round_ + i
            async with conn.transaction():
                assert await conn.fetchval("SELECT $1::text || 'x'", f"r{round_}") == f"r{round_}x"
                rows = await conn.fetch("SELECT generate_series(1, $1::int) AS n", i + 1)
                assert [r["n"] for r in rows] == list(range(1, i + 2))
            checked += 3
    results = await asyncio.gather(*(c.fetchval("SELECT $1::int", k) for k, c in enumerate(conns)))
    assert results == [0, 1, 2], results
    for c in conns:
        await c.close()
    print("OK", checked)


asyncio.run(main())
