//! PgBouncer's configuration file format: `[section]` headers, `key = value` lines, `;` and
//! `#` comments, `%include FILE` directives; and the `key=value ...` connection strings its
//! `[databases]`, `[users]` and `[peers]` entries hold.

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A line the importer cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

/// Every entry in file order; `%include` lines come back as entries of key `%include`.
/// Section and key names are lower-cased, as PgBouncer compares them case-insensitively
/// (database names in `[databases]` keep their case).
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(file) = trimmed.strip_prefix("%include") {
            entries.push(Entry {
                section: section.clone(),
                key: "%include".into(),
                value: file.trim().to_string(),
                line,
            });
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| SyntaxError {
                line,
                reason: format!("section header without ']': {trimmed}"),
            })?;
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        let (key, value) = trimmed.split_once('=').ok_or_else(|| SyntaxError {
            line,
            reason: format!("expected key = value: {trimmed}"),
        })?;
        let key = key.trim();
        let key = if section == "databases" || section == "users" {
            key.trim_matches('"').to_string()
        } else {
            key.to_ascii_lowercase()
        };
        entries.push(Entry {
            section: section.clone(),
            key,
            value: value.trim().to_string(),
            line,
        });
    }
    Ok(entries)
}

/// `host=a port=5432 password='it''s'` → pairs, in order. Values may be single-quoted, with
/// `''` or `\'` for a quote inside.
pub fn connection_string(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("expected key=value at {rest:?}"))?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("bad key before '=' at {rest:?}"));
        }
        rest = rest[eq + 1..].trim_start();
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' | '\'' if chars.peek().map(|&(_, n)| n) == Some('\'') => {
                        value.push('\'');
                        chars.next();
                    }
                    '\'' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quote in {text:?}"))?;
            rest = &quoted[end..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        pairs.push((key, value));
        rest = rest.trim_start();
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_includes() {
        let text = "; comment\n[databases]\nApp = host=db port=5433\n\n[PgBouncer]\n\
                    Listen_Port = 6432\n# another\n%include /etc/more.ini\nbad line\n";
        let error = parse(text).unwrap_err();
        assert_eq!(error.line, 9);
        let entries = parse(&text.replace("bad line\n", "")).unwrap();
        assert_eq!(entries[0].section, "databases");
        assert_eq!(entries[0].key, "App", "database names keep their case");
        assert_eq!(entries[0].value, "host=db port=5433");
        assert_eq!(
            (entries[1].section.as_str(), entries[1].key.as_str()),
            ("pgbouncer", "listen_port")
        );
        assert_eq!(entries[2].key, "%include");
        assert_eq!(entries[2].line, 8);
    }

    #[test]
    fn connection_strings_with_quotes() {
        let pairs = connection_string("host=a,b  port=5432 password='it''s x' user='u\\'v'").unwrap();
        assert_eq!(
            pairs,
            [
                ("host".to_string(), "a,b".to_string()),
                ("port".into(), "5432".into()),
                ("password".into(), "it's x".into()),
                ("user".into(), "u'v".into()),
            ]
        );
        assert!(connection_string("host='open").is_err());
        assert!(connection_string("justaword").is_err());
        assert_eq!(connection_string("").unwrap(), []);
    }
}
