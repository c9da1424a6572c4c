//! What we write into a node's postgresql.conf and pg_hba.conf, and the quoting that needs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Name of the settings file each node includes from postgresql.conf. It lives in the data
/// directory, so pg_basebackup copies it; each standby then rewrites it with its own port.
pub(crate) const NODE_CONF: &str = "tidepool.conf";

/// pg_hba.conf rules that always come first, so the helper itself (user `postgres`) and
/// streaming replication never need a password, whatever the test rules say.
const FIXED_HBA: &[&str] = &[
    "local all all trust",
    "host all postgres 127.0.0.1/32 trust",
    "host replication all 127.0.0.1/32 trust",
];

/// The per-cluster choices a test may make; everything else is fixed.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// pg_hba.conf lines placed after the fixed rules (`local all all trust`,
    /// `host all postgres 127.0.0.1/32 trust`, `host replication all 127.0.0.1/32 trust`).
    /// The first matching line wins, so list per-user rules before catch-alls.
    /// Default: `host all all 127.0.0.1/32 scram-sha-256`.
    pub hba_rules: Vec<String>,
    /// postgresql.conf lines written after ours, so they override them
    /// (e.g. `"log_min_messages = debug1"`). Default: none.
    pub extra_conf: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            hba_rules: vec!["host all all 127.0.0.1/32 scram-sha-256".to_string()],
            extra_conf: Vec::new(),
        }
    }
}

/// The whole pg_hba.conf for a node.
pub(crate) fn render_hba(opts: &NodeOptions) -> String {
    let mut text = String::from("# Written by tidepool's cluster helper.\n");
    for line in FIXED_HBA
        .iter()
        .copied()
        .chain(opts.hba_rules.iter().map(String::as_str))
    {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The node's own settings file (see [`NODE_CONF`]).
pub(crate) fn render_node_conf(name: &str, port: u16, socket_dir: &Path, opts: &NodeOptions) -> String {
    let socket_dir = socket_dir.to_string_lossy();
    let mut text = format!(
        "# Written by tidepool's cluster helper; rewritten for each node.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = {socket_dir}\n\
         cluster_name = {name}\n\
         fsync = off\n\
         max_connections = 300\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         password_encryption = 'scram-sha-256'\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n",
        socket_dir = conf_quote(&socket_dir),
        name = conf_quote(name),
    );
    for line in &opts.extra_conf {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// A postgresql.conf string value: the config lexer treats `\` as an escape and `''` as a quote.
pub(crate) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// An SQL string literal (standard_conforming_strings is on, so only `'` needs doubling).
pub(crate) fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// An SQL identifier, always quoted so names keep their case.
pub(crate) fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single `sh` word: everything inside single quotes, `'` spelled `'\''`.
pub(crate) fn sh_quote(word: &OsStr) -> String {
    let text = String::from_utf8_lossy(word.as_bytes());
    format!("'{}'", text.replace('\'', r"'\''"))
}
