//! `[databases]` → `[databases.NAME]`, their servers → `[[nodes]]` and `[clusters.NAME]`,
//! `[users]` and the console users → `[[users]]`, `[peers]` → `[peers.instances]`.
//!
//! The servers of the first database become the global `[[nodes]]` (the cluster `default`);
//! each other set of servers becomes a `[clusters.NAME]` table named after the first database
//! that uses it, and the databases on it say `cluster = "NAME"`. A `host=a,b` list is one
//! cluster of two nodes: tidepool finds the primary by health checks.

use super::ini::{connection_string, Entry};
use super::settings::{list, Settings};
use super::Draft;
use toml::{Table, Value};

/// One cluster's servers, in the order PgBouncer would try them.
type Servers = Vec<(String, u16)>;

/// The clusters found so far: the first is the default one (`[[nodes]]`).
#[derive(Default)]
struct Clusters(Vec<(String, Servers)>);

impl Clusters {
    /// The cluster serving `servers` (`None`: the default one), made for `database` if new.
    fn find_or_add(&mut self, servers: Servers, database: &str) -> Option<String> {
        let same = |a: &Servers, b: &Servers| {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.sort();
            b.sort();
            a == b
        };
        if let Some(i) = self.0.iter().position(|(_, s)| same(s, &servers)) {
            return (i > 0).then(|| self.0[i].0.clone());
        }
        if self.0.is_empty() {
            self.0.push((crate::config::DEFAULT_CLUSTER.into(), servers));
            return None;
        }
        // Named after the database; `*` and names already taken get another.
        let base = if database == crate::config::WILDCARD_DATABASE {
            "autodb"
        } else {
            database
        };
        let taken = |name: &str| self.0.iter().any(|(n, _)| n == name);
        let name = std::iter::once(base.to_string())
            .chain((2..).map(|i| format!("{base}_{i}")))
            .find(|n| !taken(n))
            .expect("an unbounded supply of names");
        self.0.push((name.clone(), servers));
        Some(name)
    }

    /// `[[nodes]]` for the first, `[clusters.NAME] nodes = [...]` for the others.
    fn write(self, draft: &mut Draft) {
        let node = |(host, port): (String, u16)| {
            let mut node = Table::new();
            node.insert("host".into(), Value::from(host));
            node.insert("port".into(), Value::Integer(i64::from(port)));
            node
        };
        for (i, (name, servers)) in self.0.into_iter().enumerate() {
            if i == 0 {
                for server in servers {
                    draft.push("nodes", node(server));
                }
                continue;
            }
            let nodes = servers.into_iter().map(|s| Value::Table(node(s))).collect();
            let mut cluster = Table::new();
            cluster.insert("nodes".into(), Value::Array(nodes));
            draft.set("clusters", &name, Value::Table(cluster));
        }
    }
}

/// Maps the three sections; `settings` is what `[pgbouncer]` said.
pub fn map(draft: &mut Draft, entries: &[Entry], settings: &Settings) {
    let mut clusters = Clusters::default();
    for entry in entries.iter().filter(|e| e.section == "databases") {
        database(draft, entry, &mut clusters);
    }
    clusters.write(draft);
    let mut users: Vec<String> = Vec::new();
    for entry in entries.iter().filter(|e| e.section == "users") {
        if let Some(user) = user(draft, entry) {
            users.push(entry.key.clone());
            draft.push("users", user);
        }
    }
    // tidepool wants each console user listed; secrets then come from auth_file/auth_query.
    for name in &settings.console_users {
        if !users.contains(name) {
            users.push(name.clone());
            let mut user = Table::new();
            user.insert("name".into(), Value::from(name.as_str()));
            draft.push("users", user);
        }
    }
    if !settings.external_secrets && !users.is_empty() {
        draft.unmapped.push(super::Unmapped {
            key: "pgbouncer.auth_file".into(),
            line: 0,
            reason: "not set: add each user's password to its [[users]] entry".into(),
        });
    }
    for entry in entries.iter().filter(|e| e.section == "peers") {
        peer(draft, entry);
    }
}

/// One `[databases]` line (`*` included): its table, and its servers' cluster.
fn database(draft: &mut Draft, entry: &Entry, clusters: &mut Clusters) {
    let pairs = match connection_string(&entry.value) {
        Ok(pairs) => pairs,
        Err(reason) => {
            draft.skip(entry, reason);
            return;
        }
    };
    let wildcard = entry.key == crate::config::WILDCARD_DATABASE;
    let mut db = Table::new();
    let (mut hosts, mut port) = (Vec::new(), 5432u16);
    let (mut user, mut password) = (None, None);
    let mut left_out = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "host" => hosts = list(&value),
            "port" => match value.parse() {
                Ok(p) if p > 0 => port = p,
                _ => left_out.push(format!("port={value} (not a port number: 5432 written)")),
            },
            "dbname" if wildcard => left_out.push(format!(
                "dbname={value} (`*` forwards the name each client asks for)"
            )),
            "dbname" if value != entry.key => {
                db.insert("dbname".into(), Value::from(value));
            }
            "dbname" => {}
            "pool_size" | "max_db_connections" => match count(&key, &value) {
                Ok(n) => {
                    db.insert(key, n);
                }
                Err(why) => left_out.push(why),
            },
            "pool_mode" if value == "session" || value == "transaction" => {
                db.insert("pool_mode".into(), Value::from(value));
            }
            "user" if !value.is_empty() => user = Some(value),
            "password" => password = Some(value),
            other => left_out.push(format!("{other}={value}")),
        }
    }
    match (user, password) {
        (Some(user), password) => {
            if password.is_none() {
                left_out.push(format!(
                    "user={user} has no password=: tidepool takes it from a [[users]] entry {user:?} (not from auth_file); add `password` to this database or that entry"
                ));
            }
            db.insert("user".into(), Value::from(user));
            if let Some(password) = password {
                db.insert("password".into(), Value::from(password));
            }
        }
        (None, Some(_)) => left_out.push("password without user (it only goes with a forced user=)".into()),
        (None, None) => {}
    }
    if hosts.is_empty() {
        hosts.push("127.0.0.1".into());
        left_out.push("no host (PgBouncer's Unix socket): 127.0.0.1 written".into());
    }
    if hosts.iter().any(|h| h.starts_with('/') || h.starts_with('@')) {
        left_out.push("a Unix-socket host: tidepool connects to PostgreSQL over TCP".into());
        hosts.retain(|h| !h.starts_with('/') && !h.starts_with('@'));
        if hosts.is_empty() {
            hosts.push("127.0.0.1".into());
        }
    }
    let servers: Servers = hosts.into_iter().map(|h| (h, port)).collect();
    if let Some(cluster) = clusters.find_or_add(servers, &entry.key) {
        db.insert("cluster".into(), Value::from(cluster));
    }
    if !left_out.is_empty() {
        draft.skip(entry, format!("kept, without: {}", left_out.join("; ")));
    }
    draft.set("databases", &entry.key, Value::Table(db));
}

/// A per-database or per-user number: `pool_size` must be > 0, a limit may be 0 (none).
fn count(key: &str, value: &str) -> Result<Value, String> {
    match value.parse::<i64>() {
        Ok(n) if n > 0 || (n == 0 && key != "pool_size") => Ok(Value::Integer(n)),
        _ => Err(format!("{key}={value} (not a number tidepool takes)")),
    }
}

/// One `[users]` line: `name = pool_size=… pool_mode=… …`.
fn user(draft: &mut Draft, entry: &Entry) -> Option<Table> {
    let pairs = match connection_string(&entry.value) {
        Ok(pairs) => pairs,
        Err(reason) => {
            draft.skip(entry, reason);
            return None;
        }
    };
    let mut user = Table::new();
    user.insert("name".into(), Value::from(entry.key.as_str()));
    let mut left_out = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "pool_size" | "max_user_connections" => match count(&key, &value) {
                Ok(n) => {
                    user.insert(key, n);
                }
                Err(why) => left_out.push(why),
            },
            _ => left_out.push(format!("{key}={value} (tidepool has no per-user {key})")),
        }
    }
    if !left_out.is_empty() {
        draft.skip(entry, format!("kept, without: {}", left_out.join("; ")));
    }
    Some(user)
}

/// One `[peers]` line: `2 = host=10.0.0.2 port=6432` → `[peers.instances] "2" = "host:port"`.
fn peer(draft: &mut Draft, entry: &Entry) {
    let pairs = connection_string(&entry.value).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    match get("host").filter(|h| !h.starts_with('/')) {
        Some(host) => {
            let port = get("port").unwrap_or_else(|| "6432".into());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let peers = draft
                .root
                .entry("peers".to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(peers) = peers {
                let instances = peers
                    .entry("instances".to_string())
                    .or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(instances) = instances {
                    instances.insert(entry.key.clone(), Value::from(format!("{host}:{port}")));
                }
            }
        }
        None => draft.skip(
            entry,
            "a peer needs a TCP host: tidepool forwards cancels over TCP",
        ),
    }
}
