//! `[pgbouncer]` → `[proxy]`, `[pool]`, `[auth]`, `[tls]`, `[peers]`: each PgBouncer setting
//! tidepool has, under its tidepool name and unit; every other one is listed with the reason.

use super::ini::Entry;
use super::Draft;
use toml::{Table, Value};

/// What the database and user mapping needs from `[pgbouncer]`.
#[derive(Debug, Default)]
pub struct Settings {
    /// Console users: each needs a `[[users]]` entry in tidepool.
    pub console_users: Vec<String>,
    /// Whether client secrets come from outside the config (auth_file, auth_query).
    pub external_secrets: bool,
}

/// Settings that map one to one: PgBouncer name, tidepool section and key, kind of value.
const DIRECT: &[(&str, &str, &str, Kind)] = &[
    ("max_client_conn", "proxy", "max_client_conn", Kind::Count),
    (
        "client_login_timeout",
        "proxy",
        "client_login_timeout",
        Kind::Seconds,
    ),
    (
        "client_idle_timeout",
        "proxy",
        "client_idle_timeout",
        Kind::Seconds,
    ),
    (
        "idle_transaction_timeout",
        "proxy",
        "idle_transaction_timeout",
        Kind::Seconds,
    ),
    ("max_packet_size", "proxy", "max_message_size", Kind::Bytes),
    ("stats_period", "proxy", "stats_period", Kind::Seconds),
    ("log_connections", "proxy", "log_connections", Kind::Flag),
    ("log_disconnections", "proxy", "log_disconnections", Kind::Flag),
    ("default_pool_size", "pool", "default_pool_size", Kind::Count),
    ("min_pool_size", "pool", "min_pool_size", Kind::Count),
    ("reserve_pool_size", "pool", "reserve_pool_size", Kind::Count),
    (
        "reserve_pool_timeout",
        "pool",
        "reserve_pool_timeout",
        Kind::Seconds,
    ),
    ("query_wait_timeout", "pool", "query_wait_timeout", Kind::Seconds),
    (
        "server_connect_timeout",
        "pool",
        "server_connect_timeout",
        Kind::Seconds,
    ),
    (
        "server_idle_timeout",
        "pool",
        "server_idle_timeout",
        Kind::Seconds,
    ),
    ("server_lifetime", "pool", "server_lifetime", Kind::Seconds),
    ("server_reset_query", "pool", "server_reset_query", Kind::Text),
    ("server_check_query", "pool", "server_check_query", Kind::Text),
    ("server_check_delay", "pool", "server_check_delay", Kind::Seconds),
    (
        "max_prepared_statements",
        "pool",
        "max_prepared_statements",
        Kind::Count,
    ),
    ("auth_user", "auth", "auth_user", Kind::Text),
    ("auth_query", "auth", "auth_query", Kind::Text),
    ("auth_dbname", "auth", "auth_dbname", Kind::Text),
    ("auth_file", "auth", "auth_file", Kind::Path),
    ("auth_hba_file", "auth", "auth_hba_file", Kind::Path),
    ("client_tls_cert_file", "tls", "client_tls_cert_file", Kind::Path),
    ("client_tls_key_file", "tls", "client_tls_key_file", Kind::Path),
    ("client_tls_ca_file", "tls", "client_tls_ca_file", Kind::Path),
    ("server_tls_ca_file", "tls", "server_tls_ca_file", Kind::Path),
    ("peer_id", "peers", "instance_id", Kind::Count),
    ("query_timeout", "proxy", "query_timeout", Kind::Seconds),
    (
        "transaction_timeout",
        "proxy",
        "transaction_timeout",
        Kind::Seconds,
    ),
    ("tcp_keepalive", "proxy", "tcp_keepalive", Kind::Flag),
    ("tcp_keepidle", "proxy", "tcp_keepidle", Kind::Seconds),
    ("tcp_keepintvl", "proxy", "tcp_keepintvl", Kind::Seconds),
    ("tcp_keepcnt", "proxy", "tcp_keepcnt", Kind::Count),
    // PgBouncer takes this one in milliseconds.
    ("tcp_user_timeout", "proxy", "tcp_user_timeout", Kind::Millis),
    ("unix_socket_mode", "proxy", "unix_socket_mode", Kind::Mode),
    ("server_login_retry", "pool", "server_login_retry", Kind::Seconds),
    ("max_db_connections", "pool", "max_db_connections", Kind::Count),
    (
        "max_user_connections",
        "pool",
        "max_user_connections",
        Kind::Count,
    ),
    (
        "autodb_idle_timeout",
        "pool",
        "autodb_idle_timeout",
        Kind::Seconds,
    ),
];

/// Settings with no tidepool key, and why. Anything neither here nor above is listed as
/// "no tidepool equivalent".
const WHY_NOT: &[(&str, &str)] = &[
    (
        "logfile",
        "tidepool logs to stderr (journald, docker logs); see proxy.log_format",
    ),
    (
        "syslog",
        "tidepool logs to stderr; let journald forward to syslog",
    ),
    ("syslog_ident", "tidepool logs to stderr"),
    ("syslog_facility", "tidepool logs to stderr"),
    (
        "pidfile",
        "tidepool does not daemonize: run it under systemd (deploy/tidepool.service) or a container",
    ),
    (
        "user",
        "tidepool does not switch users: start it as the user it should run as",
    ),
    (
        "unix_socket_group",
        "tidepool does not change the socket's group: run it with that group (systemd Group=) or make unix_socket_dir setgid",
    ),
    ("so_reuseport", "always on in tidepool"),
    (
        "server_round_robin",
        "tidepool balances reads over [[nodes]] by weight",
    ),
    (
        "ignore_startup_parameters",
        "not needed: tidepool accepts every startup parameter and applies it to the backend",
    ),
    (
        "track_extra_parameters",
        "not needed: tidepool follows every setting a client changes",
    ),
    (
        "server_reset_query_always",
        "tidepool resets session-mode backends only (server_reset_query)",
    ),
    (
        "client_tls_protocols",
        "rustls offers TLS 1.2 and 1.3, and nothing older",
    ),
    (
        "client_tls_ciphers",
        "rustls chooses among its safe cipher suites",
    ),
    (
        "client_tls13_ciphers",
        "rustls chooses among its safe cipher suites",
    ),
    ("client_tls_ecdhcurve", "rustls chooses the key exchange"),
    (
        "client_tls_dheparams",
        "rustls has no finite-field Diffie-Hellman",
    ),
    (
        "server_tls_protocols",
        "rustls offers TLS 1.2 and 1.3, and nothing older",
    ),
    (
        "server_tls_ciphers",
        "rustls chooses among its safe cipher suites",
    ),
    (
        "server_tls13_ciphers",
        "rustls chooses among its safe cipher suites",
    ),
    (
        "server_tls_cert_file",
        "no client certificate toward PostgreSQL yet",
    ),
    (
        "server_tls_key_file",
        "no client certificate toward PostgreSQL yet",
    ),
    ("dns_max_ttl", "no DNS cache: names are resolved at each connect"),
    (
        "dns_nxdomain_ttl",
        "no DNS cache: names are resolved at each connect",
    ),
    (
        "dns_zone_check_period",
        "no DNS cache: names are resolved at each connect",
    ),
    ("resolv_conf", "the system resolver is used"),
    (
        "listen_backlog",
        "tidepool's backlog is 1024 (capped by net.core.somaxconn)",
    ),
    (
        "pkt_buf",
        "tidepool reads whole frames into buffers that grow as needed",
    ),
    ("sbuf_loopcnt", "tidepool's tasks are scheduled by tokio"),
    ("tcp_defer_accept", "not configurable"),
    ("tcp_socket_buffer", "not configurable"),
    ("suspend_timeout", "SUSPEND has no buffers to flush in tidepool"),
    ("verbose", "use proxy.log_level (\"debug\") or TIDEPOOL_LOG"),
    ("log_stats", "use SHOW STATS or /metrics"),
    (
        "log_pooler_errors",
        "errors sent to clients are always counted in tidepool_errors_total",
    ),
    ("application_name_add_host", "not supported"),
    ("disable_pqexec", "not supported"),
    ("conffile", "tidepool remembers the file it was started with"),
    ("service_name", "Windows only"),
    ("job_name", "Windows only"),
    ("stats_users_prefix", "not supported"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Seconds,
    Bytes,
    Flag,
    Text,
    Path,
    /// Milliseconds (PgBouncer's `tcp_user_timeout`).
    Millis,
    /// File permission bits, octal as in C (`0777`), written as tidepool's octal text.
    Mode,
}

/// Maps `[pgbouncer]`.
pub fn map(draft: &mut Draft, entries: &[Entry]) -> Settings {
    let mut settings = Settings::default();
    let (mut listen_addr, mut listen_port) = (None, 6432u16);
    let mut socket_dir = None;
    let mut auth_type = ("md5".to_string(), 0);
    for entry in entries.iter().filter(|e| e.section == "pgbouncer") {
        let value = entry.value.as_str();
        match entry.key.as_str() {
            "listen_addr" => listen_addr = Some(entry.clone()),
            "unix_socket_dir" => socket_dir = Some(entry.clone()),
            "listen_port" => match value.parse() {
                Ok(port) => listen_port = port,
                Err(_) => draft.skip(entry, "not a port number"),
            },
            "pool_mode" => match value {
                "session" | "transaction" => draft.set("proxy", "pool_mode", value),
                _ => draft.skip(
                    entry,
                    format!("{value:?}: tidepool has session and transaction pooling (transaction kept)"),
                ),
            },
            "admin_users" | "stats_users" => {
                let names = list(value);
                settings.console_users.extend(names.iter().cloned());
                let values: Vec<Value> = names.into_iter().map(Value::from).collect();
                draft.set("proxy", &entry.key, Value::Array(values));
            }
            "auth_type" => auth_type = (value.to_string(), entry.line),
            // PgBouncer's 0 uses each server connection once; tidepool's 0 means "never close".
            "server_lifetime" if value.parse::<f64>() == Ok(0.0) => draft.skip(
                entry,
                "0 (each server connection used once) has no tidepool equivalent (there 0 = never close): default kept",
            ),
            "client_tls_sslmode" => tls_mode(
                draft,
                entry,
                "client_tls_mode",
                &[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ],
            ),
            "server_tls_sslmode" => tls_mode(
                draft,
                entry,
                "server_tls_mode",
                &["disable", "prefer", "require", "verify-ca", "verify-full"],
            ),
            key => {
                if let Some((_, section, name, kind)) = DIRECT.iter().find(|(k, ..)| *k == key) {
                    if matches!(key, "auth_file" | "auth_query" | "auth_user") {
                        settings.external_secrets = true;
                    }
                    match convert(draft, value, *kind) {
                        Ok(v) => draft.set_from(entry, section, name, v),
                        Err(reason) => draft.skip(entry, reason),
                    }
                } else if let Some((_, why)) = WHY_NOT.iter().find(|(k, _)| *k == key) {
                    draft.skip(entry, *why);
                } else {
                    draft.skip(entry, "no tidepool equivalent");
                }
            }
        }
    }
    listen(draft, listen_addr.as_ref(), listen_port);
    unix_socket_dir(draft, socket_dir.as_ref());
    auth_method(draft, &auth_type.0, auth_type.1);
    settings
}

/// `a, b` → ["a", "b"].
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn convert(draft: &Draft, value: &str, kind: Kind) -> Result<Value, String> {
    Ok(match kind {
        Kind::Count => Value::Integer(
            value
                .parse::<u32>()
                .map_err(|_| format!("{value:?} is not a whole number >= 0"))?
                .into(),
        ),
        Kind::Millis => Value::String(format!(
            "{}ms",
            value
                .parse::<u64>()
                .map_err(|_| format!("{value:?} is not a whole number of milliseconds"))?
        )),
        Kind::Mode => Value::String(format!("{:04o}", mode(value)?)),
        Kind::Flag => Value::Boolean(match value {
            "1" | "yes" | "on" | "true" => true,
            "0" | "no" | "off" | "false" => false,
            _ => return Err(format!("{value:?} is not a boolean")),
        }),
        Kind::Seconds => Value::String(seconds(value)?),
        Kind::Bytes => Value::String(match value.parse::<u64>() {
            Ok(n) => format!("{n}B"),
            Err(_) => value.to_string(),
        }),
        Kind::Text => Value::String(value.trim_matches('"').to_string()),
        Kind::Path => Value::String(draft.path(value)),
    })
}

/// A mode as C's `strtol(…, 0)` reads it (`0777` octal, `0x1ff` hex, `511` decimal).
fn mode(value: &str) -> Result<u32, String> {
    let parsed = if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if value.len() > 1 && value.starts_with('0') {
        u32::from_str_radix(&value[1..], 8)
    } else {
        value.parse()
    };
    match parsed {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{value:?} is not a permission mode (0 to 0777)")),
    }
}

/// PgBouncer's seconds (fractions allowed) or a value with a unit → tidepool's duration text.
fn seconds(value: &str) -> Result<String, String> {
    if let Ok(secs) = value.parse::<f64>() {
        if !(0.0..1e12).contains(&secs) {
            return Err(format!("{value:?} is out of range"));
        }
        let ms = (secs * 1000.0).round() as u64;
        return Ok(if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        });
    }
    crate::config::parse_duration(value)
        .map(|_| value.to_string())
        .map_err(|e| format!("cannot read {value:?} as a duration: {e}"))
}

fn tls_mode(draft: &mut Draft, entry: &Entry, key: &str, modes: &[&str]) {
    let value = entry.value.as_str();
    if modes.contains(&value) {
        draft.set("tls", key, value);
    } else if key == "server_tls_mode" && value == "allow" {
        draft.set("tls", key, "prefer");
        draft.skip(entry, "\"allow\" (TLS only if the server insists) is not offered toward PostgreSQL: \"prefer\" written instead");
    } else {
        draft.skip(entry, format!("unknown TLS mode {value:?}"));
    }
}

/// `listen_addr` + `listen_port` → `proxy.listen`: every address, `*` as IPv4 and IPv6 (as
/// PgBouncer binds all of both).
fn listen(draft: &mut Draft, addr: Option<&Entry>, port: u16) {
    let mut addrs: Vec<String> = Vec::new();
    let mut left_out = Vec::new();
    for a in addr.map(|e| list(&e.value)).unwrap_or_default() {
        let parsed = match a.as_str() {
            "*" => vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")],
            "localhost" => vec![format!("127.0.0.1:{port}")],
            a => match a.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(ip)) => vec![format!("[{ip}]:{port}")],
                Ok(ip) => vec![format!("{ip}:{port}")],
                Err(_) => {
                    left_out.push(a.to_string());
                    vec![]
                }
            },
        };
        for p in parsed {
            if !addrs.contains(&p) {
                addrs.push(p);
            }
        }
    }
    match addr {
        Some(entry) if !left_out.is_empty() => draft.skip(
            entry,
            format!(
                "host names are not resolved for listening: {} left out (write their IP addresses)",
                left_out.join(", ")
            ),
        ),
        _ => {}
    }
    if addrs.is_empty() {
        draft.unmapped.push(super::Unmapped {
            key: "pgbouncer.listen_addr".into(),
            line: addr.map_or(0, |e| e.line),
            reason: "no TCP address: PgBouncer then listens on its Unix socket only; tidepool needs one, 127.0.0.1 written".into(),
        });
        addrs.push(format!("127.0.0.1:{port}"));
    }
    let value = match addrs.len() {
        1 => Value::from(addrs.remove(0)),
        _ => Value::Array(addrs.into_iter().map(Value::from).collect()),
    };
    draft.set("proxy", "listen", value);
}

/// `unix_socket_dir` → `proxy.unix_socket_dir`. PgBouncer's default is `/tmp` and an empty
/// value turns the socket off; tidepool has no socket unless the key is set.
fn unix_socket_dir(draft: &mut Draft, entry: Option<&Entry>) {
    let Some(entry) = entry else {
        draft.unmapped.push(super::Unmapped {
            key: "pgbouncer.unix_socket_dir".into(),
            line: 0,
            reason: "not set: PgBouncer's default /tmp written".into(),
        });
        draft.set("proxy", "unix_socket_dir", "/tmp");
        return;
    };
    match entry.value.trim_matches('"') {
        // Off in PgBouncer, as tidepool's default.
        "" => {}
        abstract_name if abstract_name.starts_with('@') => draft.skip(
            entry,
            "abstract-namespace sockets are not offered: no socket (set a directory)",
        ),
        dir => {
            let path = draft.path(dir);
            draft.set_from(entry, "proxy", "unix_socket_dir", path);
        }
    }
}

/// PgBouncer's global `auth_type` → catch-all `[[hba]]` rules (or the hba file).
fn auth_method(draft: &mut Draft, auth_type: &str, line: usize) {
    let method = match auth_type {
        "hba" => return,
        "md5" | "scram-sha-256" | "cert" | "trust" => auth_type,
        "plain" => "password",
        other => {
            draft.unmapped.push(super::Unmapped {
                key: "pgbouncer.auth_type".into(),
                line,
                reason: format!("{other:?} is not offered (scram-sha-256, md5, password, cert, trust, hba): scram-sha-256 kept"),
            });
            return;
        }
    };
    // PgBouncer's auth_type covers its Unix socket too: one rule per transport. A certificate
    // exists only on TLS connections (hostssl, as PostgreSQL requires for cert).
    let types: &[&str] = if method == "cert" {
        &["hostssl"]
    } else {
        &["host", "local"]
    };
    for conn_type in types {
        let mut rule = Table::new();
        rule.insert("type".into(), Value::from(*conn_type));
        rule.insert("database".into(), Value::from("all"));
        rule.insert("user".into(), Value::from("all"));
        if *conn_type != "local" {
            rule.insert("address".into(), Value::from("all"));
        }
        rule.insert("method".into(), Value::from(method));
        draft.push("hba", rule);
    }
}
