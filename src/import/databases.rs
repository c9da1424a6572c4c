//! `[databases]` → `[databases.NAME]` and `[[nodes]]`, `[users]` and the console users →
//! `[[users]]`, `[peers]` → `[peers.instances]`.
//!
//! tidepool serves every database from one set of `[[nodes]]` (roles discovered by health
//! checks), so the servers of the first database become the nodes; a database pointing
//! elsewhere is listed as not mapped.

use super::ini::{connection_string, Entry};
use super::settings::{list, Settings};
use super::Draft;
use toml::{Table, Value};

/// Maps the three sections; `settings` is what `[pgbouncer]` said.
pub fn map(draft: &mut Draft, entries: &[Entry], settings: &Settings) {
    let mut nodes: Option<(Vec<(String, u16)>, String)> = None;
    for entry in entries.iter().filter(|e| e.section == "databases") {
        if let Some(servers) = database(draft, entry, nodes.as_ref().map(|n| &n.0)) {
            nodes.get_or_insert((servers, entry.key.clone()));
        }
    }
    for (host, port) in nodes.map(|n| n.0).unwrap_or_default() {
        let mut node = Table::new();
        node.insert("host".into(), Value::from(host));
        node.insert("port".into(), Value::Integer(i64::from(port)));
        draft.push("nodes", node);
    }
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

/// One `[databases]` line; returns its servers when they may become the nodes (they are the
/// first, or the same as `nodes`).
fn database(
    draft: &mut Draft,
    entry: &Entry,
    nodes: Option<&Vec<(String, u16)>>,
) -> Option<Vec<(String, u16)>> {
    if entry.key == "*" {
        draft.skip(entry, "no `*` (fallback) database yet: list each database");
        return None;
    }
    let pairs = match connection_string(&entry.value) {
        Ok(pairs) => pairs,
        Err(reason) => {
            draft.skip(entry, reason);
            return None;
        }
    };
    let mut db = Table::new();
    let (mut hosts, mut port) = (Vec::new(), 5432u16);
    let mut left_out = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "host" => hosts = list(&value),
            "port" => port = value.parse().unwrap_or(5432),
            "dbname" if value != entry.key => {
                db.insert("dbname".into(), Value::from(value));
            }
            "dbname" => {}
            "pool_size" => match value.parse::<i64>() {
                Ok(n) => {
                    db.insert("pool_size".into(), Value::Integer(n));
                }
                Err(_) => left_out.push(format!("pool_size={value} (not a number)")),
            },
            "pool_mode" if value == "session" || value == "transaction" => {
                db.insert("pool_mode".into(), Value::from(value));
            }
            "user" | "password" => left_out.push(format!(
                "{key} (a forced server login: tidepool logs in as the client's user, or its [[users]] backend_user)"
            )),
            other => left_out.push(format!("{other}={value}")),
        }
    }
    if hosts.is_empty() {
        hosts.push("127.0.0.1".into());
        left_out.push("no host (PgBouncer's Unix socket): 127.0.0.1 written".into());
    }
    if hosts.iter().any(|h| h.starts_with('/')) {
        left_out.push("a Unix-socket host: tidepool connects over TCP".into());
        hosts.retain(|h| !h.starts_with('/'));
        if hosts.is_empty() {
            hosts.push("127.0.0.1".into());
        }
    }
    let servers: Vec<(String, u16)> = hosts.into_iter().map(|h| (h, port)).collect();
    if nodes.is_some_and(|n| n != &servers) {
        draft.skip(
            entry,
            "points at other servers than the first database: tidepool serves every database from the same [[nodes]] (one cluster) for now",
        );
        return None;
    }
    if !left_out.is_empty() {
        draft.skip(entry, format!("kept, without: {}", left_out.join("; ")));
    }
    draft.set("databases", &entry.key, Value::Table(db));
    Some(servers)
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
        match (key.as_str(), value.parse::<i64>()) {
            ("pool_size", Ok(n)) => {
                user.insert("pool_size".into(), Value::Integer(n));
            }
            _ => left_out.push(format!("{key}={value}")),
        }
    }
    if !left_out.is_empty() {
        draft.skip(
            entry,
            format!("kept, without (no per-user setting yet): {}", left_out.join("; ")),
        );
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
