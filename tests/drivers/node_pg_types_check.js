// node-postgres named statements when a column's type changes under them (issue 15, item 6).
// Each client prepares `SELECT * FROM item6_t` by name on its connection; a column's type then
// changes, and a new client prepares it too. Prints one line per execution: the rows, or the SQLSTATE of the error, so that the
// test compares the output through tidepool with a direct connection's.
const { Client } = require('pg');

async function run(c, name) {
  try {
    const r = await c.query({ name, text: 'SELECT * FROM item6_t ORDER BY id' });
    return JSON.stringify(r.rows);
  } catch (e) {
    return `error ${e.code}`;
  }
}

async function main() {
  const dsn = process.env.TIDEPOOL_DSN;
  const admin = new Client({ connectionString: dsn });
  await admin.connect();
  await admin.query('DROP TABLE IF EXISTS item6_t');
  await admin.query("CREATE TABLE item6_t (id int, v int)");
  await admin.query('INSERT INTO item6_t VALUES (1, 10)');
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const c = new Client({ connectionString: dsn });
    await c.connect();
    clients.push(c);
  }
  const out = [];
  for (const c of clients) out.push(await run(c, 'all-rows'));
  await admin.query("ALTER TABLE item6_t ALTER COLUMN v TYPE text");
  // A new client's first execution: Parse + Bind + Describe + Execute + Sync of a text whose
  // statement tidepool's backends hold from before the change.
  const fresh = new Client({ connectionString: dsn });
  await fresh.connect();
  out.push(await run(fresh, 'all-rows'));
  await fresh.end();
  for (let round = 0; round < 2; round++) {
    for (const c of clients) out.push(await run(c, 'all-rows'));
  }
  await admin.query('ALTER TABLE item6_t ADD COLUMN w int DEFAULT 5');
  for (const c of clients) out.push(await run(c, 'all-rows'));
  await Promise.all([admin, ...clients].map((c) => c.end()));
  console.log(out.join('\n'));
  console.log('OK', out.length);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
