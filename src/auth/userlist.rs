//! `auth_file`: PgBouncer's userlist.txt format, so its users migrate without rewriting.
//!
//! One user per line: `"name" "secret"`, each in double quotes, a quote inside written twice.
//! Blank lines and lines starting with `;` or `#` are comments. The secret is cleartext, an
//! md5 hash or a SCRAM verifier, exactly as in `[[users]] password`. Errors give the line and
//! the reason, never the secret.

use super::secret::{Secret, SecretError};
use std::collections::HashMap;

/// One user of the file.
#[derive(Debug, Clone)]
pub struct UserlistEntry {
    pub name: String,
    pub secret: Secret,
    pub line: usize,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserlistProblem {
    #[error("expected \"name\" \"secret\"")]
    Layout,
    #[error("unterminated quoted string")]
    Quote,
    #[error("the user name is empty")]
    EmptyName,
    #[error("unexpected text after the secret")]
    Trailing,
    #[error("user {name:?} is listed twice (first on line {first})")]
    Duplicate { name: String, first: usize },
    #[error("secret: {0}")]
    Secret(#[from] SecretError),
}

/// A problem in a userlist file, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct UserlistError {
    pub line: usize,
    pub problem: UserlistProblem,
}

/// Parses a whole file.
pub fn parse_userlist(text: &str) -> Result<Vec<UserlistEntry>, UserlistError> {
    let mut entries: Vec<UserlistEntry> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let at = |problem| UserlistError { line, problem };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        let (name, rest) = quoted(trimmed).map_err(at)?;
        let (secret, rest) = quoted(rest.trim_start()).map_err(at)?;
        if !rest.trim().is_empty() {
            return Err(at(UserlistProblem::Trailing));
        }
        if name.is_empty() {
            return Err(at(UserlistProblem::EmptyName));
        }
        let secret = Secret::parse(&secret).map_err(|e| at(e.into()))?;
        if let Some(&first) = seen.get(&name) {
            return Err(at(UserlistProblem::Duplicate { name, first }));
        }
        seen.insert(name.clone(), line);
        entries.push(UserlistEntry { name, secret, line });
    }
    Ok(entries)
}

/// A `"…"` string at the start of `text` (`""` inside is one quote) and what follows it.
fn quoted(text: &str) -> Result<(String, &str), UserlistProblem> {
    let body = text.strip_prefix('"').ok_or(UserlistProblem::Layout)?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if matches!(chars.peek(), Some((_, '"'))) {
            chars.next();
            value.push('"');
            continue;
        }
        return Ok((value, &body[at + 1..]));
    }
    Err(UserlistProblem::Quote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_lines() {
        let md5 = postgres_protocol::password::md5(b"pw", "bob");
        let text = format!(
            "; comment\n# another\n\n\"alice\" \"secret\"\n  \"bo\"\"b\"   \"{md5}\"  \n\"carol\" \"a \"\"quoted\"\" pw\"\n"
        );
        let entries = parse_userlist(&text).expect("valid");
        let names: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.line)).collect();
        assert_eq!(names, [("alice", 4), ("bo\"b", 5), ("carol", 6)]);
        assert!(matches!(&entries[0].secret, Secret::Plain(p) if p == "secret"));
        assert!(matches!(entries[1].secret, Secret::Md5(_)));
        assert!(matches!(&entries[2].secret, Secret::Plain(p) if p == "a \"quoted\" pw"));
    }

    #[test]
    fn errors_name_the_line_and_never_the_secret() {
        let cases: &[(&str, usize, UserlistProblem)] = &[
            ("alice secret", 1, UserlistProblem::Layout),
            ("\"alice\" secret-xyz", 1, UserlistProblem::Layout),
            ("\n\"alice\" \"secret-xyz", 2, UserlistProblem::Quote),
            ("\"alice\" \"secret-xyz\" extra", 1, UserlistProblem::Trailing),
            ("\"\" \"secret-xyz\"", 1, UserlistProblem::EmptyName),
            ("\"a\" \"\"", 1, UserlistProblem::Secret(SecretError::Empty)),
            (
                "\"a\" \"x\"\n\"a\" \"secret-xyz\"",
                2,
                UserlistProblem::Duplicate {
                    name: "a".into(),
                    first: 1,
                },
            ),
        ];
        for (text, line, problem) in cases {
            let error = parse_userlist(text).expect_err(text);
            assert_eq!((&error.line, &error.problem), (line, problem), "{text}");
            assert!(!error.to_string().contains("secret-xyz"), "{error}");
            assert!(error.to_string().starts_with(&format!("line {line}: ")));
        }
        let bad_scram = parse_userlist("\"a\" \"SCRAM-SHA-256$4096:zz\"").expect_err("bad verifier");
        assert!(matches!(
            bad_scram.problem,
            UserlistProblem::Secret(SecretError::Scram(_))
        ));
    }
}
