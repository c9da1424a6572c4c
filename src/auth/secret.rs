//! A user's configured password in one of PostgreSQL's three stored forms, and which methods it can check.

use super::md5::{md5_password_hash, parse_md5_secret, MD5_PREFIX};
use super::scram::{ScramVerifier, VerifierError, SCRAM_PREFIX};
use crate::config::AuthMethod;
use crate::crypto::{ct_eq, sha256};
use std::fmt;

/// A configured password, classified the way PostgreSQL classifies `rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Cleartext: can answer every method, and log in to PostgreSQL with any of them.
    Plain(String),
    /// `md5` + 32 hex digits: `md5(password + user)`.
    Md5([u8; 16]),
    /// `SCRAM-SHA-256$…`.
    Scram(ScramVerifier),
}

/// Why a configured password cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// PostgreSQL refuses empty passwords too.
    #[error("must not be empty")]
    Empty,
    /// It starts like a SCRAM verifier, so a typo must not turn it into a cleartext password.
    #[error(transparent)]
    Scram(#[from] VerifierError),
}

// Config validation reports reasons as strings (`ConfigError::Invalid { reason }`).
impl From<SecretError> for String {
    fn from(error: SecretError) -> String {
        error.to_string()
    }
}

impl Secret {
    /// Classifies a configured password: `md5` + 32 hex digits is an MD5 hash, anything
    /// starting `SCRAM-SHA-256$` must be a well-formed verifier, everything else is cleartext.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        if let Some(hash) = parse_md5_secret(text) {
            return Ok(Secret::Md5(hash));
        }
        if text.starts_with(SCRAM_PREFIX) {
            return Ok(Secret::Scram(ScramVerifier::parse(text)?));
        }
        Ok(Secret::Plain(text.to_owned()))
    }

    /// Whether a client can be authenticated with `method` against this secret (methods that
    /// need no secret always can).
    pub fn supports(&self, method: AuthMethod) -> bool {
        matches!(
            (self, method),
            (_, AuthMethod::Trust | AuthMethod::Cert | AuthMethod::Reject)
                | (Secret::Plain(_), _)
                | (Secret::Md5(_), AuthMethod::Md5 | AuthMethod::Password)
                | (Secret::Scram(_), AuthMethod::ScramSha256 | AuthMethod::Password)
        )
    }

    /// Short name of the stored form, for logs and admin output.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => MD5_PREFIX,
            Secret::Scram(_) => "scram-sha-256",
        }
    }

    /// The MD5 hash for `user`, computed from cleartext if need be; `None` for a SCRAM secret.
    pub fn md5_hash(&self, user: &str) -> Option<[u8; 16]> {
        match self {
            Secret::Plain(password) => Some(md5_password_hash(password.as_bytes(), user)),
            Secret::Md5(hash) => Some(*hash),
            Secret::Scram(_) => None,
        }
    }

    /// The SCRAM verifier, derived from cleartext with a fresh salt if need be (a few ms:
    /// callers should cache it per user); `None` for an MD5 secret.
    pub fn scram_verifier(&self) -> Option<ScramVerifier> {
        match self {
            Secret::Plain(password) => Some(ScramVerifier::generate(password.as_bytes())),
            Secret::Md5(_) => None,
            Secret::Scram(verifier) => Some(verifier.clone()),
        }
    }

    /// Checks a cleartext password (the `password` method) sent by `user`.
    ///
    /// An empty password never matches: PostgreSQL rejects it before looking at the secret.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> bool {
        if password.is_empty() {
            return false;
        }
        match self {
            // Compare hashes so the timing reveals neither content nor length.
            Secret::Plain(expected) => ct_eq(&sha256(expected.as_bytes()), &sha256(password)),
            Secret::Md5(hash) => ct_eq(hash, &md5_password_hash(password, user)),
            Secret::Scram(verifier) => verifier.verify_password(password),
        }
    }
}

impl fmt::Debug for Secret {
    // Never print the secret itself, not even a hash of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret::{}(<hidden>)", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example user: password "pencil".
    const SCRAM: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
        wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn classifies_the_three_forms() {
        assert!(matches!(Secret::parse("hunter2"), Ok(Secret::Plain(p)) if p == "hunter2"));
        let md5 = postgres_protocol::password::md5(b"pw", "u");
        assert_eq!(
            Secret::parse(&md5),
            Ok(Secret::Md5(md5_password_hash(b"pw", "u")))
        );
        let Ok(Secret::Scram(verifier)) = Secret::parse(SCRAM) else {
            panic!("SCRAM secret not recognised");
        };
        assert_eq!(verifier.iterations, 4096);
        assert_eq!(verifier.to_string(), SCRAM);
        let generated = postgres_protocol::password::scram_sha_256(b"pw");
        assert!(matches!(Secret::parse(&generated), Ok(Secret::Scram(_))));
    }

    #[test]
    fn near_misses_of_md5_are_cleartext() {
        for text in [
            "md5",
            "md5abcdef0123456789abcdef012345678",
            "md5abcdef0123456789abcdef0123456789a",
            "md5abcdef0123456789abcdef012345678z",
            "MD5abcdef0123456789abcdef0123456789",
        ] {
            assert!(matches!(Secret::parse(text), Ok(Secret::Plain(_))), "{text}");
        }
    }

    #[test]
    fn malformed_scram_is_refused_with_a_reason() {
        let cases: &[(&str, SecretError)] = &[
            ("SCRAM-SHA-256$", VerifierError::Layout.into()),
            ("SCRAM-SHA-256$4096:c2FsdA==", VerifierError::Layout.into()),
            ("SCRAM-SHA-256$4096$a:b", VerifierError::Layout.into()),
            ("SCRAM-SHA-256$0:c2FsdA==$a:b", VerifierError::Iterations.into()),
            ("SCRAM-SHA-256$+5:c2FsdA==$a:b", VerifierError::Iterations.into()),
            (
                "SCRAM-SHA-256$99999999999:c2FsdA==$a:b",
                VerifierError::Iterations.into(),
            ),
            ("SCRAM-SHA-256$x:c2FsdA==$a:b", VerifierError::Iterations.into()),
            ("SCRAM-SHA-256$4096:!!$a:b", VerifierError::Base64("salt").into()),
            ("SCRAM-SHA-256$4096:$a:b", VerifierError::EmptySalt.into()),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==",
                VerifierError::KeyLength("StoredKey").into(),
            ),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$@:c2FsdA==",
                VerifierError::Base64("StoredKey").into(),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Secret::parse(text).as_ref().err(), Some(expected), "{text}");
        }
        let wrong_server_key = SCRAM.replace(":wfPLwcE6", ":wfPL");
        assert_eq!(
            Secret::parse(&wrong_server_key).err(),
            Some(VerifierError::KeyLength("ServerKey").into())
        );
        assert_eq!(Secret::parse("").err(), Some(SecretError::Empty));
        let reason: String = SecretError::Empty.into();
        assert_eq!(reason, "must not be empty");
    }

    #[test]
    fn method_support_follows_postgresql() {
        use AuthMethod::*;
        let plain = Secret::parse("pw").unwrap();
        let md5 = Secret::parse(&postgres_protocol::password::md5(b"pw", "u")).unwrap();
        let scram = Secret::parse(SCRAM).unwrap();
        for method in [ScramSha256, Md5, Password, Trust] {
            assert!(plain.supports(method));
        }
        assert_eq!(
            [ScramSha256, Md5, Password, Trust].map(|m| md5.supports(m)),
            [false, true, true, true]
        );
        assert_eq!(
            [ScramSha256, Md5, Password, Trust].map(|m| scram.supports(m)),
            [true, false, true, true]
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let md5 = postgres_protocol::password::md5(b"pw", "u");
        for text in ["hunter2", md5.as_str(), SCRAM] {
            let shown = format!("{:?}", Secret::parse(text).unwrap());
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains(&md5[3..]), "{shown}");
            assert!(!shown.contains("WG5d8oPm"), "{shown}");
            assert!(shown.contains("<hidden>"), "{shown}");
        }
        let Secret::Scram(verifier) = Secret::parse(SCRAM).unwrap() else {
            unreachable!()
        };
        assert!(!format!("{verifier:?}").contains("WG5d8oPm"));
    }

    #[test]
    fn cleartext_check_against_each_form() {
        let user = "erin";
        let md5 = postgres_protocol::password::md5(b"pencil", user);
        let scram = postgres_protocol::password::scram_sha_256(b"pencil");
        for text in ["pencil", md5.as_str(), scram.as_str()] {
            let secret = Secret::parse(text).unwrap();
            assert!(secret.verify_password(user, b"pencil"), "{secret:?}");
            assert!(!secret.verify_password(user, b"pencil!"), "{secret:?}");
            assert!(!secret.verify_password(user, b""), "{secret:?}");
        }
        // The MD5 hash is salted with the user name.
        assert!(!Secret::parse(&md5).unwrap().verify_password("frank", b"pencil"));
    }

    #[test]
    fn derived_forms_agree() {
        let plain = Secret::parse("pw").unwrap();
        assert_eq!(plain.md5_hash("u"), Some(md5_password_hash(b"pw", "u")));
        let verifier = plain.scram_verifier().unwrap();
        assert!(verifier.verify_password(b"pw"));
        assert_eq!(Secret::parse(SCRAM).unwrap().md5_hash("u"), None);
        assert_eq!(Secret::Md5([0; 16]).scram_verifier(), None);
    }
}
