// node-postgres named queries (prepared once per connection by name) through tidepool, with
// several clients sharing a small pool. Prints "OK <count>" on success; exits 1 on a mismatch.
const { Client } = require('pg');

async function main() {
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const c = new Client({ connectionString: process.env.TIDEPOOL_DSN });
    await c.connect();
    clients.push(c);
  }
  let checked = 0;
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < clients.length; i++) {
      const c = clients[i];
      const r = await c.query({ name: 'double-it', text: 'SELECT $1::int * 2 AS v', values: [round + i] });
      if (r.rows[0].v !== (round + i) * 2) throw new Error(`double-it: ${JSON.stringify(r.rows)}`);
      await c.query('BEGIN');
      const t = await c.query({ name: 'tag-it', text: "SELECT $1::text || '-tag' AS v", values: [`c${i}`] });
      if (t.rows[0].v !== `c${i}-tag`) throw new Error(`tag-it: ${JSON.stringify(t.rows)}`);
      await c.query('COMMIT');
      checked += 2;
    }
  }
  await Promise.all(clients.map((c) => c.end()));
  console.log('OK', checked);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
