//! The console's language: a Query's text → commands. Case-insensitive keywords, optional
//! trailing semicolons, several statements per Query (run in order, as PostgreSQL would).

/// What `SHOW` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Help,
    Pools,
    Clients,
    Servers,
    Sockets,
    ActiveSockets,
    Databases,
    Users,
    Peers,
    PeerPools,
    DnsHosts,
    DnsZones,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Config,
    Lists,
    Version,
    Mem,
    State,
    Nodes,
    Routes,
    Prepared,
}

impl Show {
    const NAMES: [(&'static str, Show); 24] = [
        ("help", Show::Help),
        ("pools", Show::Pools),
        ("clients", Show::Clients),
        ("servers", Show::Servers),
        ("sockets", Show::Sockets),
        ("active_sockets", Show::ActiveSockets),
        ("databases", Show::Databases),
        ("users", Show::Users),
        ("peers", Show::Peers),
        ("peer_pools", Show::PeerPools),
        ("dns_hosts", Show::DnsHosts),
        ("dns_zones", Show::DnsZones),
        ("stats", Show::Stats),
        ("stats_totals", Show::StatsTotals),
        ("stats_averages", Show::StatsAverages),
        ("totals", Show::Totals),
        ("config", Show::Config),
        ("lists", Show::Lists),
        ("version", Show::Version),
        ("mem", Show::Mem),
        ("state", Show::State),
        ("nodes", Show::Nodes),
        ("routes", Show::Routes),
        ("prepared", Show::Prepared),
    ];

    /// Every SHOW subject, in the order HELP lists them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Show::NAMES.iter().map(|(name, _)| *name)
    }
}

/// How SHUTDOWN waits (PgBouncer 1.23's modes; what each does is in `shutdown.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Plain `SHUTDOWN`: tidepool's fast stop (clients closed once no request of theirs runs).
    Immediate,
    /// Stop accepting; exit when every client has disconnected on its own.
    WaitForClients,
    /// Stop accepting; close clients at their next idle point (SIGINT).
    WaitForServers,
}

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Pause(Option<String>),
    Resume(Option<String>),
    Suspend,
    Disable(String),
    Enable(String),
    Reconnect(Option<String>),
    Kill(Option<String>),
    KillClient(u64),
    WaitClose(Option<String>),
    Reload,
    Shutdown(ShutdownMode),
    Set { key: String, value: String },
}

impl Command {
    /// Only SHOW is allowed to stats users.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Command::Show(_))
    }
}

/// Why a statement is not a console command; the message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("syntax error at or near \"{0}\"")]
    Syntax(String),
    #[error("unrecognized SHOW subject \"{0}\"; try SHOW HELP")]
    UnknownShow(String),
    #[error("unrecognized command \"{0}\"; try SHOW HELP")]
    Unknown(String),
    #[error("{0} needs a database name")]
    MissingDatabase(&'static str),
    #[error("invalid client id \"{0}\"")]
    BadClientId(String),
    #[error("unterminated quoted string")]
    Unterminated,
}

/// Splits a Query's text into statements at semicolons outside quotes; empty statements
/// (`;;`, a trailing `;`) are dropped.
pub fn split_statements(sql: &str) -> Result<Vec<&str>, CommandError> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in sql.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => {
                statements.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err(CommandError::Unterminated);
    }
    statements.push(&sql[start..]);
    Ok(statements
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect())
}

/// Parses one statement (no semicolon).
pub fn parse(statement: &str) -> Result<Command, CommandError> {
    let mut words = statement.split_whitespace();
    let Some(verb) = words.next() else {
        return Err(CommandError::Syntax(String::new()));
    };
    let verb_lc = verb.to_ascii_lowercase();
    if verb_lc == "set" {
        return parse_set(statement[statement.find(verb).unwrap_or(0) + verb.len()..].trim());
    }
    let args: Vec<&str> = words.collect();
    let optional_db = |args: &[&str]| -> Result<Option<String>, CommandError> {
        match args {
            [] => Ok(None),
            [db] => Ok(Some(unquote(db))),
            [_, extra, ..] => Err(CommandError::Syntax((*extra).to_string())),
        }
    };
    let required_db = |args: &[&str], verb: &'static str| -> Result<String, CommandError> {
        optional_db(args)?.ok_or(CommandError::MissingDatabase(verb))
    };
    let none = |args: &[&str]| -> Result<(), CommandError> {
        match args.first() {
            None => Ok(()),
            Some(extra) => Err(CommandError::Syntax((*extra).to_string())),
        }
    };
    Ok(match verb_lc.as_str() {
        "show" => {
            let [subject] = args[..] else {
                return Err(match args.get(1) {
                    Some(extra) => CommandError::Syntax((*extra).to_string()),
                    None => CommandError::UnknownShow(String::new()),
                });
            };
            let lc = subject.to_ascii_lowercase();
            let show = Show::NAMES
                .iter()
                .find(|(name, _)| *name == lc)
                .map(|(_, show)| *show)
                .ok_or_else(|| CommandError::UnknownShow(subject.to_string()))?;
            Command::Show(show)
        }
        "pause" => Command::Pause(optional_db(&args)?),
        "resume" => Command::Resume(optional_db(&args)?),
        "suspend" => none(&args).map(|_| Command::Suspend)?,
        "disable" => Command::Disable(required_db(&args, "DISABLE")?),
        "enable" => Command::Enable(required_db(&args, "ENABLE")?),
        "reconnect" => Command::Reconnect(optional_db(&args)?),
        "kill" => Command::Kill(optional_db(&args)?),
        "kill_client" => {
            let [id] = args[..] else {
                return Err(CommandError::BadClientId(args.join(" ")));
            };
            Command::KillClient(
                id.parse()
                    .map_err(|_| CommandError::BadClientId(id.to_string()))?,
            )
        }
        "wait_close" => Command::WaitClose(optional_db(&args)?),
        "reload" => none(&args).map(|_| Command::Reload)?,
        "shutdown" => Command::Shutdown(match args[..] {
            [] => ShutdownMode::Immediate,
            [mode] if mode.eq_ignore_ascii_case("wait_for_clients") => ShutdownMode::WaitForClients,
            [mode] if mode.eq_ignore_ascii_case("wait_for_servers") => ShutdownMode::WaitForServers,
            [other, ..] => return Err(CommandError::Syntax(other.to_string())),
        }),
        _ => return Err(CommandError::Unknown(verb.to_string())),
    })
}

/// `SET key = value` or `SET key TO value`; the value may be quoted.
fn parse_set(rest: &str) -> Result<Command, CommandError> {
    let (key, value) = match rest.split_once('=') {
        Some((key, value)) => (key.trim(), value.trim()),
        None => {
            let mut parts = rest.splitn(3, char::is_whitespace);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(key), Some(to), Some(value)) if to.eq_ignore_ascii_case("to") => (key, value.trim()),
                _ => return Err(CommandError::Syntax(rest.to_string())),
            }
        }
    };
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !key_ok {
        return Err(CommandError::Syntax(key.to_string()));
    }
    if value.is_empty() {
        return Err(CommandError::Syntax(String::new()));
    }
    Ok(Command::Set {
        key: key.to_ascii_lowercase(),
        value: unquote(value),
    })
}

/// Removes one level of single or double quotes (doubling escapes the quote inside).
fn unquote(text: &str) -> String {
    for q in ['\'', '"'] {
        if text.len() >= 2 && text.starts_with(q) && text.ends_with(q) {
            let inner = &text[1..text.len() - 1];
            return inner.replace(&format!("{q}{q}"), &q.to_string());
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively() {
        let cases = [
            ("show pools", Command::Show(Show::Pools)),
            ("SHOW Stats_Totals", Command::Show(Show::StatsTotals)),
            ("pause", Command::Pause(None)),
            ("PAUSE app", Command::Pause(Some("app".into()))),
            ("resume \"app\"", Command::Resume(Some("app".into()))),
            ("Suspend", Command::Suspend),
            ("disable app", Command::Disable("app".into())),
            ("enable app", Command::Enable("app".into())),
            ("reconnect", Command::Reconnect(None)),
            ("kill app", Command::Kill(Some("app".into()))),
            ("KILL_CLIENT 12", Command::KillClient(12)),
            ("wait_close app", Command::WaitClose(Some("app".into()))),
            ("reload", Command::Reload),
            (
                "shutdown wait_for_clients",
                Command::Shutdown(ShutdownMode::WaitForClients),
            ),
            (
                "SHUTDOWN WAIT_FOR_SERVERS",
                Command::Shutdown(ShutdownMode::WaitForServers),
            ),
            ("shutdown", Command::Shutdown(ShutdownMode::Immediate)),
            (
                "SET default_pool_size = 5",
                Command::Set {
                    key: "default_pool_size".into(),
                    value: "5".into(),
                },
            ),
            (
                "set server_check_query to 'select ''2'''",
                Command::Set {
                    key: "server_check_query".into(),
                    value: "select '2'".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_commands_say_why() {
        assert_eq!(
            parse("frobnicate"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
        assert_eq!(
            parse("show nothing"),
            Err(CommandError::UnknownShow("nothing".into()))
        );
        assert_eq!(parse("disable"), Err(CommandError::MissingDatabase("DISABLE")));
        assert_eq!(parse("kill_client x"), Err(CommandError::BadClientId("x".into())));
        assert_eq!(parse("pause a b"), Err(CommandError::Syntax("b".into())));
        assert_eq!(parse("set = 1"), Err(CommandError::Syntax("".into())));
        assert_eq!(parse("reload now"), Err(CommandError::Syntax("now".into())));
    }

    #[test]
    fn statements_split_outside_quotes() {
        assert_eq!(split_statements("show pools;"), Ok(vec!["show pools"]));
        assert_eq!(
            split_statements(" ; show a ;; show b "),
            Ok(vec!["show a", "show b"])
        );
        assert_eq!(
            split_statements("set x = 'a;b'; reload"),
            Ok(vec!["set x = 'a;b'", "reload"])
        );
        assert_eq!(split_statements("set x = 'a"), Err(CommandError::Unterminated));
    }
}
