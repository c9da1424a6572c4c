//! `tidepool import-pgbouncer pgbouncer.ini`: an equivalent pool.toml from a PgBouncer
//! configuration, plus the list of every key that could not be mapped and why.
//!
//! The file is read (`ini.rs`), `[pgbouncer]` settings are mapped (`settings.rs`), then
//! `[databases]`, `[users]` and `[peers]` (`databases.rs`); the result is checked by parsing
//! and validating it as tidepool would at start, so what is written always loads.

mod databases;
mod ini;
mod settings;

use crate::config::{Config, ConfigError};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// A PgBouncer key with no tidepool equivalent (or a value that cannot be carried over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// `section.key`, as written in pgbouncer.ini.
    pub key: String,
    pub line: usize,
    pub reason: String,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    /// The pool.toml text, headed by comments listing what was not mapped.
    pub toml: String,
    pub unmapped: Vec<Unmapped>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: ini::SyntaxError,
    },
    /// The mapped configuration does not load (a value tidepool refuses).
    #[error("the imported configuration is not valid: {0}")]
    Invalid(#[source] ConfigError),
}

/// The pool.toml being built, and what did not fit.
struct Draft {
    root: Table,
    unmapped: Vec<Unmapped>,
    /// Relative paths in pgbouncer.ini are taken from the ini file's directory.
    base: PathBuf,
    /// Which ini entry each mapped `section.key` came from, so that a value tidepool refuses
    /// can be dropped and listed rather than failing the import.
    origins: Vec<(String, ini::Entry)>,
}

impl Draft {
    /// Sets `section.key` (`section` empty: top level).
    fn set(&mut self, section: &str, key: &str, value: impl Into<Value>) {
        let table = if section.is_empty() {
            &mut self.root
        } else {
            self.root
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("sections are tables")
        };
        table.insert(key.to_string(), value.into());
    }

    /// Appends to the array of tables `name` (`[[nodes]]`, `[[users]]`, `[[hba]]`).
    fn push(&mut self, name: &str, item: Table) {
        let array = self
            .root
            .entry(name.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = array {
            items.push(Value::Table(item));
        }
    }

    /// Sets `section.key` from `entry`, remembering where it came from.
    fn set_from(&mut self, entry: &ini::Entry, section: &str, key: &str, value: impl Into<Value>) {
        self.set(section, key, value);
        self.origins.push((format!("{section}.{key}"), entry.clone()));
    }

    /// Drops a mapped value the validation refused; false when `key` was not mapped from one
    /// entry (then the import cannot be fixed by dropping it).
    fn drop_refused(&mut self, key: &str, reason: &str) -> bool {
        let Some(i) = self.origins.iter().position(|(k, _)| k == key) else {
            return false;
        };
        let (_, entry) = self.origins.remove(i);
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        if let Some(Value::Table(table)) = self.root.get_mut(section) {
            table.remove(name);
        }
        self.skip(
            &entry,
            format!("tidepool refuses {:?}: {reason}; its default kept", entry.value),
        );
        true
    }

    fn skip(&mut self, entry: &ini::Entry, reason: impl Into<String>) {
        self.unmapped.push(Unmapped {
            key: format!("{}.{}", entry.section, entry.key),
            line: entry.line,
            reason: reason.into(),
        });
    }

    /// A path from the ini file, made absolute against its directory.
    fn path(&self, value: &str) -> String {
        let path = Path::new(value);
        if path.is_absolute() {
            value.to_string()
        } else {
            self.base.join(path).display().to_string()
        }
    }
}

/// Reads and maps `path`.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    import_text(&text, &base).map_err(|e| match e {
        ImportError::Syntax { source, .. } => ImportError::Syntax {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Maps the text of a pgbouncer.ini whose relative paths start at `base`.
pub fn import_text(text: &str, base: &Path) -> Result<Imported, ImportError> {
    let entries = ini::parse(text).map_err(|source| ImportError::Syntax {
        path: PathBuf::new(),
        source,
    })?;
    let mut draft = Draft {
        root: Table::new(),
        unmapped: Vec::new(),
        base: base.to_path_buf(),
        origins: Vec::new(),
    };
    let settings = settings::map(&mut draft, &entries);
    databases::map(&mut draft, &entries, &settings);
    for entry in &entries {
        let known = ["pgbouncer", "databases", "users", "peers"];
        if entry.key == "%include" {
            draft.skip(
                entry,
                "includes are not followed: import the included file too and merge",
            );
        } else if !known.contains(&entry.section.as_str()) {
            draft.skip(entry, format!("unknown section [{}]", entry.section));
        }
    }
    // Validated as a start would; a value PgBouncer takes but tidepool refuses (a 0 meaning
    // "off" where tidepool wants > 0, a size past its limit) is dropped and listed.
    let body = loop {
        let body = toml::to_string(&draft.root).expect("a TOML table always serializes");
        match Config::from_toml(&body) {
            Ok(_) => break body,
            Err(ConfigError::Invalid { key, reason }) if draft.drop_refused(&key, &reason) => {}
            Err(e) => return Err(ImportError::Invalid(e)),
        }
    };
    // In file order (keys with no line of their own, such as a missing listen_addr, first).
    draft.unmapped.sort_by_key(|u| u.line);
    let mut toml =
        String::from("# Imported from a PgBouncer configuration by `tidepool import-pgbouncer`.\n");
    if draft.unmapped.is_empty() {
        toml.push_str("# Every key was mapped.\n");
    } else {
        toml.push_str("# Not mapped:\n");
        for u in &draft.unmapped {
            toml.push_str(&format!("#   {} (line {}): {}\n", u.key, u.line, u.reason));
        }
    }
    toml.push('\n');
    toml.push_str(&body);
    Ok(Imported {
        toml,
        unmapped: draft.unmapped,
    })
}

#[cfg(test)]
mod tests;
