//! A client's startup parameters: which database and user, and the settings (GUCs) it asked for,
//! plus the SQL that brings a pooled connection's settings to the client's.

use crate::protocol::{ErrorFields, SqlState};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Reported parameters that follow the client from backend to backend when it changes them
/// (the rest, like server_version, describe the server, not the session).
const SESSION_REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
    "default_transaction_read_only",
    "search_path",
];

/// What a client asked for in its StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientParams {
    pub user: String,
    pub database: String,
    /// Settings as (lower-case name, raw value), in the order given, `options -c` included;
    /// in transaction mode updated as the client changes them.
    pub settings: Vec<(String, String)>,
    /// The settings of the StartupMessage itself: what `RESET` returns to.
    pub startup_settings: Vec<(String, String)>,
}

impl ClientParams {
    /// Interprets StartupMessage parameters as PostgreSQL does.
    pub fn from_startup(params: Vec<(String, String)>) -> Result<ClientParams, ErrorFields> {
        let mut user = None;
        let mut database = None;
        let mut settings: Vec<(String, String)> = Vec::new();
        for (name, value) in params {
            match name.as_str() {
                "user" => user = Some(value),
                "database" => database = Some(value),
                "replication" => {
                    if !matches!(value.as_str(), "false" | "off" | "no" | "0") {
                        return Err(ErrorFields::fatal(
                            SqlState::FEATURE_NOT_SUPPORTED,
                            "replication connections are not supported by tidepool",
                        ));
                    }
                }
                "options" => {
                    for (k, v) in parse_options(&value)? {
                        set(&mut settings, k, v);
                    }
                }
                _ => set(&mut settings, name.to_ascii_lowercase(), value),
            }
        }
        let user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
            ErrorFields::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?;
        let database = database.filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
        Ok(ClientParams {
            user,
            database,
            startup_settings: settings.clone(),
            settings,
        })
    }

    /// Identifies the settings, for matching session-mode clients to connections opened with them.
    pub fn signature(&self) -> u64 {
        let mut sorted: Vec<&(String, String)> = self.settings.iter().collect();
        sorted.sort();
        let mut h = DefaultHasher::new();
        sorted.hash(&mut h);
        // 0 means "opened without client settings" (transaction mode, prewarming).
        h.finish() | 1
    }
}

/// Records values the server reported after the client changed them (`SET TimeZone …`) into a
/// settings list, so that the next backend serving the client gets them too and the backend's
/// own list says what it carries.
pub fn follow_reported(settings: &mut Vec<(String, String)>, reported: &[(String, String)]) {
    for (name, value) in reported {
        let lower = name.to_ascii_lowercase();
        if SESSION_REPORTED.contains(&lower.as_str()) {
            set(settings, lower, value.clone());
        }
    }
}

/// Sets or replaces one setting.
pub fn set(settings: &mut Vec<(String, String)>, name: String, value: String) {
    match settings.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = value,
        None => settings.push((name, value)),
    }
}

/// Splits the `options` startup parameter like PostgreSQL: whitespace separates words, a
/// backslash escapes the next character; accepts `-c name=value`, `-cname=value`, `--name=value`.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ErrorFields> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }

    let invalid = |w: &str| {
        ErrorFields::fatal(
            SqlState::new("42704"),
            format!("invalid command-line argument for server process: {w}"),
        )
        .with_hint("Try \"-c name=value\" or \"--name=value\" in options.")
    };
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let assignment = if w == "-c" {
            iter.next().ok_or_else(|| invalid(&w))?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(invalid(&w));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            ErrorFields::fatal(SqlState::new("42601"), format!("--{assignment} requires a value"))
        })?;
        // PostgreSQL accepts dashes for underscores in option names.
        out.push((name.replace('-', "_").to_ascii_lowercase(), value.to_string()));
    }
    Ok(out)
}

/// SQL that turns `applied` (settings a pooled connection carries now) into `wanted`; `None`
/// when they already agree. Uses set_config, which takes raw values exactly as a startup packet
/// does (so list values like search_path keep their meaning), and RESET for settings to drop.
pub fn settings_diff_sql(applied: &[(String, String)], wanted: &[(String, String)]) -> Option<String> {
    // The common case at every checkout: the backend carries exactly the client's settings.
    if applied == wanted {
        return None;
    }
    let value =
        |list: &[(String, String)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    // Setting or resetting the session authorization also resets the role: apply the role again.
    let authorization_changes =
        value(applied, "session_authorization") != value(wanted, "session_authorization");
    let mut resets = Vec::new();
    for (name, _) in applied {
        if !wanted.iter().any(|(n, _)| n == name) {
            resets.push(format!("RESET {}", identifier(name)));
        }
    }
    // The session authorization first (see above).
    resets.sort_by_key(|r| r != "RESET \"session_authorization\"");
    let mut sets = Vec::new();
    for (name, value) in wanted {
        let changed = !applied.iter().any(|(n, v)| n == name && v == value);
        if changed || (authorization_changes && name == "role") {
            sets.push(format!(
                "pg_catalog.set_config({}, {}, false)",
                literal(name),
                literal(value)
            ));
        }
    }
    if sets.is_empty() && resets.is_empty() {
        return None;
    }
    let mut sql = resets.join("; ");
    if !sets.is_empty() {
        if !sql.is_empty() {
            sql.push_str("; ");
        }
        sql.push_str("SELECT ");
        sql.push_str(&sets.join(", "));
    }
    Some(sql)
}

/// An escape-string literal: means the same whatever standard_conforming_strings is.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A possibly dotted setting name, each part quoted.
fn identifier(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn startup_parameters_and_options() {
        let p = ClientParams::from_startup(params(&[
            ("user", "app"),
            ("application_name", "psql"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB -c x.y=with\\ space",
            ),
            ("TimeZone", "UTC"),
        ]))
        .unwrap();
        assert_eq!(p.database, "app", "database defaults to the user name");
        assert_eq!(
            p.settings,
            params(&[
                ("application_name", "psql"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "8MB"),
                ("x.y", "with space"),
                ("timezone", "UTC"),
            ])
        );
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        assert!(ClientParams::from_startup(params(&[("database", "d")])).is_err());
        assert!(ClientParams::from_startup(params(&[("user", "u"), ("options", "-B 10")])).is_err());
        assert!(ClientParams::from_startup(params(&[("user", "u"), ("options", "-c nothing")])).is_err());
        assert!(ClientParams::from_startup(params(&[("user", "u"), ("replication", "true")])).is_err());
    }

    #[test]
    fn signature_ignores_order_but_not_values() {
        let a = ClientParams::from_startup(params(&[("user", "u"), ("a", "1"), ("b", "2")])).unwrap();
        let b = ClientParams::from_startup(params(&[("user", "u"), ("b", "2"), ("a", "1")])).unwrap();
        let c = ClientParams::from_startup(params(&[("user", "u"), ("b", "2"), ("a", "3")])).unwrap();
        assert_eq!(a.signature(), b.signature());
        assert_ne!(a.signature(), c.signature());
        assert_ne!(a.signature(), 0);
    }

    #[test]
    fn diff_sets_changed_and_resets_dropped_settings() {
        let applied = params(&[("timezone", "UTC"), ("application_name", "x")]);
        let wanted = params(&[("timezone", "UTC"), ("search_path", "it's\\here")]);
        assert_eq!(
            settings_diff_sql(&applied, &wanted).unwrap(),
            "RESET \"application_name\"; SELECT pg_catalog.set_config(E'search_path', E'it''s\\\\here', false)"
        );
        // Changing the session authorization resets the role: it is applied again after it.
        let applied = params(&[("session_authorization", "a"), ("role", "r")]);
        let wanted = params(&[("role", "r")]);
        assert_eq!(
            settings_diff_sql(&applied, &wanted).unwrap(),
            "RESET \"session_authorization\"; SELECT pg_catalog.set_config(E'role', E'r', false)"
        );
        assert_eq!(settings_diff_sql(&wanted, &wanted), None);
        assert_eq!(
            settings_diff_sql(&params(&[("a.b", "1")]), &[]).unwrap(),
            "RESET \"a\".\"b\""
        );
    }

    #[test]
    fn follows_reported_session_parameters_only() {
        let mut settings = params(&[("timezone", "UTC")]);
        follow_reported(
            &mut settings,
            &params(&[("TimeZone", "Asia/Tokyo"), ("server_version", "15")]),
        );
        assert_eq!(settings, params(&[("timezone", "Asia/Tokyo")]));
    }
}
