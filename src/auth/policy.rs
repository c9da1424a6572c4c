//! Which method a connection must use, and the checks that depend only on the transport:
//! pure decisions, table-tested (TLS-dependent cases included) without any socket.

use super::hba::HbaRules;
use crate::config::AuthMethod;
use crate::protocol::{ErrorFields, SqlState};
use crate::tls::TlsInfo;
use std::net::IpAddr;

/// Why a connection is refused before (or instead of) its exchange. `Display` goes to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no hba rule matches {}", .0.describe())]
    NoHbaEntry(RefusedAt),
    #[error("rejected by hba rule for {}", .0.describe())]
    Rejected(RefusedAt),
    #[error("cleartext password refused without TLS (auth.allow_cleartext_without_tls is off)")]
    CleartextWithoutTls,
    #[error("no valid client certificate")]
    CertRequired,
    #[error("client certificate CN is not the user name")]
    CertFailed,
}

impl Refusal {
    /// The FATAL error the client is sent, with PostgreSQL's text.
    pub fn client_error(&self, user: &str) -> ErrorFields {
        let refused = |message: String| ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, message);
        match self {
            Refusal::NoHbaEntry(at) => refused(format!("no pg_hba.conf entry for {}", at.describe())),
            Refusal::Rejected(at) => refused(format!("pg_hba.conf rejects connection for {}", at.describe())),
            Refusal::CleartextWithoutTls => {
                refused("password authentication is not allowed on a connection without TLS".into())
                    .with_hint("Connect with sslmode=require, or use scram-sha-256.")
            }
            Refusal::CertRequired => refused("connection requires a valid client certificate".into()),
            Refusal::CertFailed => refused(format!("certificate authentication failed for user \"{user}\"")),
        }
    }
}

/// What is known about a connection before it authenticates.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub tls: bool,
    /// `None` for a Unix-socket client.
    pub addr: Option<IpAddr>,
    pub database: &'a str,
    pub user: &'a str,
}

/// The method for `conn`: the first matching hba rule when rules exist, else the user's own
/// `auth_method`, else scram-sha-256. Refuses what the transport does not allow.
pub fn choose_method(
    hba: Option<&HbaRules>,
    allow_cleartext_without_tls: bool,
    configured: Option<AuthMethod>,
    conn: &Connection<'_>,
) -> Result<AuthMethod, Refusal> {
    let method = match hba {
        Some(rules) => match rules.decide(conn.tls, conn.database, conn.user, conn.addr) {
            Some(rule) => {
                tracing::debug!(user = %conn.user, rule = %rule.origin, method = rule.method.as_str(), "hba match");
                rule.method
            }
            None => return Err(Refusal::NoHbaEntry(refused_at(conn))),
        },
        None => configured.unwrap_or(AuthMethod::ScramSha256),
    };
    match method {
        AuthMethod::Reject => Err(Refusal::Rejected(refused_at(conn))),
        AuthMethod::Cert if !conn.tls => Err(Refusal::CertRequired),
        // Refused before the client is asked, so the password never crosses the wire in clear
        // (a Unix socket never leaves the host).
        AuthMethod::Password if !conn.tls && conn.addr.is_some() && !allow_cleartext_without_tls => {
            Err(Refusal::CleartextWithoutTls)
        }
        method => Ok(method),
    }
}

/// `cert`: the client's verified certificate must carry the user name as its CN.
pub fn check_cert(tls: Option<&TlsInfo>, user: &str) -> Result<(), Refusal> {
    match tls.map(|t| t.peer_common_name.as_deref()) {
        None | Some(None) => Err(Refusal::CertRequired),
        Some(Some(cn)) if cn == user => Ok(()),
        Some(Some(_)) => Err(Refusal::CertFailed),
    }
}

/// Where a refused connection came from, for PostgreSQL's hba messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAt {
    /// `None`: the Unix socket (PostgreSQL writes `[local]`).
    pub host: Option<IpAddr>,
    pub user: String,
    pub database: String,
    pub tls: bool,
}

impl RefusedAt {
    /// `host "…", user "…", database "…", no encryption`, as PostgreSQL words it.
    pub fn describe(&self) -> String {
        let encryption = if self.tls {
            "SSL encryption"
        } else {
            "no encryption"
        };
        let host = self
            .host
            .map_or_else(|| "[local]".to_string(), |ip| ip.to_string());
        format!(
            "host \"{host}\", user \"{}\", database \"{}\", {encryption}",
            self.user, self.database
        )
    }
}

fn refused_at(conn: &Connection<'_>) -> RefusedAt {
    RefusedAt {
        host: conn.addr,
        user: conn.user.to_string(),
        database: conn.database.to_string(),
        tls: conn.tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SqlState;
    use AuthMethod::*;

    fn conn(tls: bool, user: &'static str) -> Connection<'static> {
        Connection {
            tls,
            addr: Some("10.1.2.3".parse().unwrap()),
            database: "app",
            user,
        }
    }

    fn rules(text: &str) -> HbaRules {
        HbaRules::parse_file(text).expect("valid rules").0
    }

    #[test]
    fn without_rules_the_user_method_or_scram() {
        assert_eq!(
            choose_method(None, false, None, &conn(false, "u")).unwrap(),
            ScramSha256
        );
        assert_eq!(
            choose_method(None, false, Some(Md5), &conn(false, "u")).unwrap(),
            Md5
        );
        assert_eq!(
            choose_method(None, false, Some(Trust), &conn(false, "u")).unwrap(),
            Trust
        );
    }

    #[test]
    fn hostssl_and_hostnossl_follow_the_transport() {
        let hba = rules(
            "hostssl all all 0.0.0.0/0 cert\n\
             hostnossl all admin 0.0.0.0/0 reject\n\
             host all all 10.0.0.0/8 md5\n",
        );
        assert_eq!(
            choose_method(Some(&hba), false, None, &conn(true, "u")).unwrap(),
            Cert
        );
        assert_eq!(
            choose_method(Some(&hba), false, None, &conn(false, "u")).unwrap(),
            Md5
        );
        let rejected = choose_method(Some(&hba), false, None, &conn(false, "admin")).unwrap_err();
        let error = rejected.client_error("admin");
        assert_eq!(error.code, SqlState::INVALID_AUTHORIZATION);
        assert_eq!(
            error.message,
            "pg_hba.conf rejects connection for host \"10.1.2.3\", user \"admin\", database \"app\", no encryption"
        );
    }

    #[test]
    fn no_match_is_28000_naming_the_encryption() {
        let hba = rules("host all all 192.168.0.0/16 scram-sha-256\n");
        for (tls, wording) in [(false, "no encryption"), (true, "SSL encryption")] {
            let e = choose_method(Some(&hba), false, None, &conn(tls, "u")).unwrap_err();
            let error = e.client_error("u");
            assert_eq!(error.code, SqlState::INVALID_AUTHORIZATION);
            assert_eq!(
                error.message,
                format!(
                    "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"app\", {wording}"
                )
            );
        }
    }

    #[test]
    fn cleartext_needs_tls_unless_allowed() {
        let e = choose_method(None, false, Some(Password), &conn(false, "u")).unwrap_err();
        assert!(matches!(e, Refusal::CleartextWithoutTls));
        assert_eq!(e.client_error("u").code, SqlState::INVALID_AUTHORIZATION);
        assert_eq!(
            choose_method(None, false, Some(Password), &conn(true, "u")).unwrap(),
            Password
        );
        assert_eq!(
            choose_method(None, true, Some(Password), &conn(false, "u")).unwrap(),
            Password
        );
    }

    #[test]
    fn cert_needs_tls_and_the_right_common_name() {
        let e = choose_method(None, false, Some(Cert), &conn(false, "u")).unwrap_err();
        assert!(matches!(e, Refusal::CertRequired));
        assert_eq!(
            choose_method(None, false, Some(Cert), &conn(true, "u")).unwrap(),
            Cert
        );
        let with_cn = |cn: Option<&str>| TlsInfo {
            server_end_point: Vec::new(),
            peer_common_name: cn.map(str::to_string),
        };
        assert!(check_cert(Some(&with_cn(Some("alice"))), "alice").is_ok());
        let wrong = check_cert(Some(&with_cn(Some("mallory"))), "alice").unwrap_err();
        let error = wrong.client_error("alice");
        assert_eq!(error.code, SqlState::INVALID_AUTHORIZATION);
        assert_eq!(
            error.message,
            "certificate authentication failed for user \"alice\""
        );
        let none = check_cert(Some(&with_cn(None)), "alice").unwrap_err();
        assert_eq!(
            none.client_error("alice").message,
            "connection requires a valid client certificate"
        );
        assert!(matches!(check_cert(None, "alice"), Err(Refusal::CertRequired)));
    }
}
