//! hba rules: which authentication method a connection gets, first match wins as in
//! pg_hba.conf; read from `[[hba]]` entries or from a file in pg_hba.conf format.
//!
//! Supported: connection types `host`, `hostssl`, `hostnossl` (plus `hostgssenc`, which never
//! matches since tidepool refuses GSS encryption, and `hostnogssenc`, which is `host`);
//! databases `all`, `sameuser`, `replication` (never matches) and name lists; users `all` and
//! name lists; addresses `all`, CIDR blocks, or an address followed by a netmask (file only).
//! `local` lines match clients of the Unix-domain socket (`unix_socket_dir`); a `local` line
//! with a method tidepool lacks (`peer`, `ident`) is skipped and logged, so a PgBouncer or
//! PostgreSQL hba file loads. Everything else is refused with the line and the reason, never
//! silently ignored.

use crate::config::{AuthMethod, HbaEntry};
use std::fmt;
use std::net::IpAddr;

/// Which transports a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    /// Unix-domain socket clients.
    Local,
    /// TLS or not.
    Host,
    HostSsl,
    HostNoSsl,
    /// GSS-encrypted connections only: never matches in tidepool.
    HostGssEnc,
}

/// One element of a database or user list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameMatch {
    All,
    /// Database named like the user.
    SameUser,
    /// Replication connections only: never matches in tidepool.
    Replication,
    Name(String),
}

/// The client addresses a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressMatch {
    All,
    Net { addr: IpAddr, prefix: u8 },
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    conn: ConnType,
    databases: Vec<NameMatch>,
    users: Vec<NameMatch>,
    address: AddressMatch,
    pub method: AuthMethod,
    /// Where it was written (`hba[2]`, `line 7`), for logs.
    pub origin: String,
}

/// The rules of one configuration, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HbaRules {
    rules: Vec<HbaRule>,
}

/// What is wrong with a rule; the values are not secret, so they are quoted back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HbaProblem {
    #[error("expected: type database user address method")]
    MissingFields,
    #[error("unknown connection type {0:?} (use local, host, hostssl or hostnossl)")]
    ConnType(String),
    #[error("unterminated quoted string")]
    Quote,
    #[error("empty name in a list")]
    EmptyName,
    #[error("{0:?} is not supported (no group or file lists): list the names")]
    NameKeyword(String),
    #[error("invalid address {0:?} (use all, a CIDR block like 10.0.0.0/8, or an address and a netmask)")]
    Address(String),
    #[error("host names and samehost/samenet are not supported: {0:?}; use an address")]
    HostName(String),
    #[error("invalid netmask {0:?}")]
    Netmask(String),
    #[error("authentication method {0:?} is not supported by tidepool")]
    UnsupportedMethod(String),
    #[error("unknown authentication method {0:?}")]
    UnknownMethod(String),
    #[error("options after the method are not supported: {0:?}")]
    Options(String),
    #[error("cert authentication is only supported on hostssl connections")]
    CertNeedsSsl,
    #[error("{0:?}: a list is not allowed in this field")]
    List(String),
    #[error("include directives are not supported")]
    Include,
    #[error("a local rule has no address")]
    LocalAddress,
}

/// A problem in an hba file, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct HbaFileError {
    pub line: usize,
    pub problem: HbaProblem,
}

/// Methods PostgreSQL has and tidepool does not implement.
const UNSUPPORTED_METHODS: &[&str] = &["peer", "ident", "gss", "sspi", "ldap", "radius", "pam", "bsd"];

impl HbaRules {
    pub fn new(rules: Vec<HbaRule>) -> HbaRules {
        HbaRules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The first rule matching the connection, if any; `addr` is `None` on the Unix socket.
    pub fn decide(&self, tls: bool, database: &str, user: &str, addr: Option<IpAddr>) -> Option<&HbaRule> {
        self.rules.iter().find(|r| r.matches(tls, database, user, addr))
    }

    /// Parses a pg_hba.conf-format file; returns the rules and the numbers of the `local` lines
    /// that were skipped (a method tidepool lacks, such as `peer`).
    pub fn parse_file(text: &str) -> Result<(HbaRules, Vec<usize>), HbaFileError> {
        let mut rules = Vec::new();
        let mut skipped = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let at = |problem| HbaFileError {
                line: number,
                problem,
            };
            let fields = tokenize(line).map_err(at)?;
            let Some(first) = fields.first() else {
                continue;
            };
            if first.len() == 1 && !first[0].quoted && first[0].text.starts_with("include") {
                return Err(at(HbaProblem::Include));
            }
            if first.len() == 1 && !first[0].quoted && first[0].text == "local" {
                let method = fields.get(3).and_then(|f| f.first()).map(|t| t.text.as_str());
                if method.is_some_and(|m| UNSUPPORTED_METHODS.contains(&m)) {
                    skipped.push(number);
                    continue;
                }
            }
            rules.push(rule_from_fields(&fields, format!("line {number}")).map_err(at)?);
        }
        Ok((HbaRules { rules }, skipped))
    }
}

impl HbaRule {
    /// A `[[hba]]` entry; the error names the field that is wrong.
    pub fn from_entry(entry: &HbaEntry, origin: String) -> Result<HbaRule, (&'static str, HbaProblem)> {
        let single = |text: &str| -> Result<Vec<Vec<Token>>, HbaProblem> {
            // Each key holds one pg_hba field: quoting works as in the file.
            let fields = tokenize(&text.replace(", ", ","))?;
            match fields.len() {
                1 => Ok(fields),
                _ => Err(HbaProblem::MissingFields),
            }
        };
        let conn = parse_conn_type(&entry.conn_type).map_err(|p| ("type", p))?;
        let databases = single(&entry.database)
            .and_then(|f| parse_names(&f[0], true))
            .map_err(|p| ("database", p))?;
        let users = single(&entry.user)
            .and_then(|f| parse_names(&f[0], false))
            .map_err(|p| ("user", p))?;
        let address = match (conn, entry.address.trim()) {
            (ConnType::Local, "") => AddressMatch::All,
            (ConnType::Local, _) => return Err(("address", HbaProblem::LocalAddress)),
            (_, text) => parse_address(text, None).map_err(|p| ("address", p))?,
        };
        let method = parse_method(entry.method.trim(), conn).map_err(|p| ("method", p))?;
        Ok(HbaRule {
            conn,
            databases,
            users,
            address,
            method,
            origin,
        })
    }

    fn matches(&self, tls: bool, database: &str, user: &str, addr: Option<IpAddr>) -> bool {
        let conn = match (self.conn, addr) {
            (ConnType::Local, None) => true,
            (ConnType::Local, Some(_)) | (_, None) => false,
            (ConnType::Host, _) => true,
            (ConnType::HostSsl, _) => tls,
            (ConnType::HostNoSsl, _) => !tls,
            (ConnType::HostGssEnc, _) => false,
        };
        conn && self.databases.iter().any(|d| match d {
            NameMatch::All => true,
            NameMatch::SameUser => database == user,
            NameMatch::Replication => false,
            NameMatch::Name(name) => name == database,
        }) && self.users.iter().any(|u| match u {
            NameMatch::All => true,
            NameMatch::Name(name) => name == user,
            NameMatch::SameUser | NameMatch::Replication => false,
        }) && addr.is_none_or(|addr| address_matches(self.address, addr))
    }
}

impl fmt::Display for ConnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnType::Local => "local",
            ConnType::Host => "host",
            ConnType::HostSsl => "hostssl",
            ConnType::HostNoSsl => "hostnossl",
            ConnType::HostGssEnc => "hostgssenc",
        })
    }
}

/// A word of a line; `quoted` words are never keywords.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    quoted: bool,
}

/// Splits a line into fields (separated by blanks), each a comma-separated list of tokens.
/// `#` starts a comment outside quotes; `""` inside quotes is a literal quote.
fn tokenize(line: &str) -> Result<Vec<Vec<Token>>, HbaProblem> {
    let mut fields: Vec<Vec<Token>> = Vec::new();
    let mut field: Vec<Token> = Vec::new();
    let mut token = Token {
        text: String::new(),
        quoted: false,
    };
    let mut in_token = false;
    let mut after_comma = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                token.quoted = true;
                in_token = true;
                loop {
                    match chars.next() {
                        None => return Err(HbaProblem::Quote),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            token.text.push('"');
                        }
                        Some('"') => break,
                        Some(other) => token.text.push(other),
                    }
                }
            }
            '#' => break,
            ',' => {
                field.push(std::mem::replace(
                    &mut token,
                    Token {
                        text: String::new(),
                        quoted: false,
                    },
                ));
                in_token = false;
                after_comma = true;
            }
            c if c.is_whitespace() => {
                if after_comma && !in_token {
                    continue;
                }
                if in_token {
                    field.push(std::mem::replace(
                        &mut token,
                        Token {
                            text: String::new(),
                            quoted: false,
                        },
                    ));
                    in_token = false;
                }
                if !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                }
            }
            c => {
                token.text.push(c);
                in_token = true;
                after_comma = false;
            }
        }
        if c == '"' {
            after_comma = false;
        }
    }
    if in_token || after_comma {
        field.push(token);
    }
    if !field.is_empty() {
        fields.push(field);
    }
    Ok(fields)
}

/// `host database user address [netmask] method`, from a file line.
fn rule_from_fields(fields: &[Vec<Token>], origin: String) -> Result<HbaRule, HbaProblem> {
    let word = |i: usize| -> Result<&Token, HbaProblem> {
        match fields.get(i).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some(_) => Err(HbaProblem::List(join(&fields[i]))),
            None => Err(HbaProblem::MissingFields),
        }
    };
    let conn = parse_conn_type(&word(0)?.text)?;
    if conn == ConnType::Local {
        return local_rule(fields, origin);
    }
    if fields.len() < 5 {
        return Err(HbaProblem::MissingFields);
    }
    let databases = parse_names(&fields[1], true)?;
    let users = parse_names(&fields[2], false)?;
    let address_text = &word(3)?.text;
    // An address without '/' takes its netmask from the next field.
    let needs_mask =
        address_text != "all" && !address_text.contains('/') && address_text.parse::<IpAddr>().is_ok();
    let (address, method_at) = if needs_mask {
        (parse_address(address_text, Some(&word(4)?.text))?, 5)
    } else {
        (parse_address(address_text, None)?, 4)
    };
    let method = parse_method(
        &word(method_at).map_err(|_| HbaProblem::MissingFields)?.text,
        conn,
    )?;
    if let Some(extra) = fields.get(method_at + 1) {
        return Err(HbaProblem::Options(join(extra)));
    }
    Ok(HbaRule {
        conn,
        databases,
        users,
        address,
        method,
        origin,
    })
}

/// `local database user method`, from a file line.
fn local_rule(fields: &[Vec<Token>], origin: String) -> Result<HbaRule, HbaProblem> {
    let method = match fields.get(3).map(Vec::as_slice) {
        Some([one]) => parse_method(&one.text, ConnType::Local)?,
        Some(_) => return Err(HbaProblem::List(join(&fields[3]))),
        None => return Err(HbaProblem::MissingFields),
    };
    if let Some(extra) = fields.get(4) {
        return Err(HbaProblem::Options(join(extra)));
    }
    Ok(HbaRule {
        conn: ConnType::Local,
        databases: parse_names(&fields[1], true)?,
        users: parse_names(&fields[2], false)?,
        address: AddressMatch::All,
        method,
        origin,
    })
}

fn join(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_conn_type(text: &str) -> Result<ConnType, HbaProblem> {
    Ok(match text.trim() {
        "local" => ConnType::Local,
        "host" | "hostnogssenc" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        "hostgssenc" => ConnType::HostGssEnc,
        other => return Err(HbaProblem::ConnType(other.to_string())),
    })
}

fn parse_names(tokens: &[Token], database: bool) -> Result<Vec<NameMatch>, HbaProblem> {
    tokens
        .iter()
        .map(|t| {
            if t.quoted {
                return match t.text.is_empty() {
                    true => Err(HbaProblem::EmptyName),
                    false => Ok(NameMatch::Name(t.text.clone())),
                };
            }
            match t.text.as_str() {
                "" => Err(HbaProblem::EmptyName),
                "all" => Ok(NameMatch::All),
                "sameuser" if database => Ok(NameMatch::SameUser),
                "replication" if database => Ok(NameMatch::Replication),
                "samerole" | "samegroup" if database => Err(HbaProblem::NameKeyword(t.text.clone())),
                other if other.starts_with('+') || other.starts_with('@') || other.starts_with('/') => {
                    Err(HbaProblem::NameKeyword(other.to_string()))
                }
                other => Ok(NameMatch::Name(other.to_string())),
            }
        })
        .collect()
}

fn parse_address(text: &str, mask: Option<&str>) -> Result<AddressMatch, HbaProblem> {
    if text == "all" {
        return Ok(AddressMatch::All);
    }
    let bad = || HbaProblem::Address(text.to_string());
    let (addr, prefix) = match (text.split_once('/'), mask) {
        (Some((addr, prefix)), None) => {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            (addr, prefix)
        }
        (None, Some(mask)) => {
            let addr: IpAddr = text.parse().map_err(|_| bad())?;
            let mask: IpAddr = mask.parse().map_err(|_| HbaProblem::Netmask(mask.to_string()))?;
            (
                addr,
                mask_prefix(addr, mask).ok_or_else(|| HbaProblem::Netmask(mask.to_string()))?,
            )
        }
        (None, None) if text.parse::<IpAddr>().is_err() && !text.is_empty() && !text.contains(':') => {
            return Err(HbaProblem::HostName(text.to_string()))
        }
        _ => return Err(bad()),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(AddressMatch::Net { addr, prefix })
}

/// The prefix length of a contiguous netmask of the same family as `addr`.
fn mask_prefix(addr: IpAddr, mask: IpAddr) -> Option<u8> {
    let bits: u128 = match (addr, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => u128::from(u32::from(m)) << 96,
        (IpAddr::V6(_), IpAddr::V6(m)) => u128::from(m),
        _ => return None,
    };
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

fn parse_method(text: &str, conn: ConnType) -> Result<AuthMethod, HbaProblem> {
    let method = match AuthMethod::from_name(text) {
        Some(method) => method,
        None if UNSUPPORTED_METHODS.contains(&text) => {
            return Err(HbaProblem::UnsupportedMethod(text.into()))
        }
        None => return Err(HbaProblem::UnknownMethod(text.into())),
    };
    if method == AuthMethod::Cert && conn != ConnType::HostSsl {
        return Err(HbaProblem::CertNeedsSsl);
    }
    Ok(method)
}

fn address_matches(rule: AddressMatch, client: IpAddr) -> bool {
    let AddressMatch::Net { addr, prefix } = rule else {
        return true;
    };
    // A v4 client seen through a v6 socket is still a v4 client.
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    let (rule_bits, client_bits, width) = match (addr, client) {
        (IpAddr::V4(r), IpAddr::V4(c)) => (u128::from(u32::from(r)), u128::from(u32::from(c)), 32),
        (IpAddr::V6(r), IpAddr::V6(c)) => (u128::from(r), u128::from(c), 128),
        _ => return false,
    };
    let shift = width - u32::from(prefix);
    if shift >= 128 {
        return true;
    }
    (rule_bits >> shift) == (client_bits >> shift)
}

#[cfg(test)]
mod tests;
