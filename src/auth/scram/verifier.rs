//! The stored SCRAM-SHA-256 secret: parsing and printing PostgreSQL's format, and deriving it from a password.

use crate::crypto::{ct_eq, hmac_sha256, pbkdf2_sha256, sha256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::borrow::Cow;
use std::fmt;

/// What every stored SCRAM-SHA-256 secret starts with.
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL uses for new secrets.
pub const DEFAULT_SALT_LEN: usize = 16;

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
///
/// It cannot recover the password, but it can impersonate the server to a client, and a
/// guessed password can be checked against it offline: treat it as a secret. `Debug` hides the
/// keys; `Display` prints the full PostgreSQL form (meant for writing config, never for logs).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 rounds; always > 0 in a verifier from [`ScramVerifier::parse`] or `derive`.
    pub iterations: u32,
    /// Per-user salt; never empty in a verifier from `parse` or `derive`.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`: checks a client's proof.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`: signs our final message so the client trusts us.
    pub server_key: [u8; 32],
}

/// Why a `SCRAM-SHA-256$…` string is not a usable verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    #[error("expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")]
    Layout,
    #[error("SCRAM iteration count must be a positive integer below 2^32")]
    Iterations,
    #[error("SCRAM {0} is not valid base64")]
    Base64(&'static str),
    #[error("SCRAM salt must not be empty")]
    EmptySalt,
    #[error("SCRAM {0} must decode to 32 bytes")]
    KeyLength(&'static str),
}

impl ScramVerifier {
    /// Parses PostgreSQL's text form, refusing anything malformed.
    pub fn parse(text: &str) -> Result<ScramVerifier, VerifierError> {
        let body = text.strip_prefix(SCRAM_PREFIX).ok_or(VerifierError::Layout)?;
        let (params, keys) = body.split_once('$').ok_or(VerifierError::Layout)?;
        let (iterations, salt) = params.split_once(':').ok_or(VerifierError::Layout)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(VerifierError::Layout)?;

        // `u32::from_str` would accept a leading '+'; PostgreSQL writes bare digits only.
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifierError::Iterations);
        }
        let iterations: u32 = iterations.parse().map_err(|_| VerifierError::Iterations)?;
        if iterations == 0 {
            return Err(VerifierError::Iterations);
        }
        // Any stray '$' or ':' ends up inside a field, where base64 decoding rejects it.
        let salt = BASE64.decode(salt).map_err(|_| VerifierError::Base64("salt"))?;
        if salt.is_empty() {
            return Err(VerifierError::EmptySalt);
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// Derives the verifier for `password`, exactly as PostgreSQL does for `CREATE ROLE … PASSWORD`.
    ///
    /// Costs `iterations` HMAC rounds (a few ms at 4096): do it once per config load, not per login.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Result<ScramVerifier, VerifierError> {
        if iterations == 0 {
            return Err(VerifierError::Iterations);
        }
        if salt.is_empty() {
            return Err(VerifierError::EmptySalt);
        }
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        Ok(ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        })
    }

    /// Derives a verifier with a fresh random salt and PostgreSQL's default parameters.
    pub fn generate(password: &[u8]) -> ScramVerifier {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::fill(&mut salt);
        ScramVerifier::derive(password, &salt, DEFAULT_ITERATIONS).expect("default parameters are valid")
    }

    /// A stand-in for a user that does not exist or has no SCRAM secret.
    ///
    /// Running the exchange against it looks the same to the client as a real one (the salt is
    /// stable per user), but no proof can match, so probing cannot tell which users exist.
    /// `seed` should be a per-process random value.
    pub fn mock(user: &str, seed: &[u8]) -> ScramVerifier {
        let salt = hmac_sha256(seed, &[b"mock salt\0", user.as_bytes()]);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..DEFAULT_SALT_LEN].to_vec(),
            // Both keys are unrelated to any password: SHA-256 has no known preimage for them.
            stored_key: hmac_sha256(seed, &[b"mock stored key\0", user.as_bytes()]),
            server_key: hmac_sha256(seed, &[b"mock server key\0", user.as_bytes()]),
        }
    }

    /// Whether a cleartext `password` (the `password` auth method) matches this verifier.
    ///
    /// Costs a full derivation, like PostgreSQL's own check.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let Ok(candidate) = ScramVerifier::derive(password, &self.salt, self.iterations) else {
            return false;
        };
        // Non-short-circuiting `&`: both comparisons always run.
        ct_eq(&candidate.stored_key, &self.stored_key) & ct_eq(&candidate.server_key, &self.server_key)
    }
}

impl fmt::Display for ScramVerifier {
    /// PostgreSQL's stored form, suitable for `pg_authid` or tidepool's config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    // The keys are password-equivalent for offline guessing; never log them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("keys", &"<hidden>")
            .finish()
    }
}

/// `SaltedPassword = Hi(Normalize(password), salt, i)` (RFC 5802 §3).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2_sha256(&normalize(password), salt, iterations)
}

/// SASLprep (RFC 4013) the password the way PostgreSQL does.
///
/// PostgreSQL passwords are byte strings: when the bytes are not UTF-8 or contain characters
/// SASLprep prohibits, PostgreSQL (server and libpq alike) uses the raw bytes instead of failing,
/// so we must too or such users could never log in.
fn normalize(password: &[u8]) -> Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(password) else {
        return Cow::Borrowed(password);
    };
    match stringprep::saslprep(text) {
        Ok(Cow::Borrowed(prepared)) => Cow::Borrowed(prepared.as_bytes()),
        Ok(Cow::Owned(prepared)) => Cow::Owned(prepared.into_bytes()),
        Err(_) => Cow::Borrowed(password),
    }
}

fn decode_key(text: &str, what: &'static str) -> Result<[u8; 32], VerifierError> {
    let bytes = BASE64.decode(text).map_err(|_| VerifierError::Base64(what))?;
    bytes.try_into().map_err(|_| VerifierError::KeyLength(what))
}
