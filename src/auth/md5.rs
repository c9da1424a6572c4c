//! MD5 password authentication: the stored hash, the salted response, and checking a client's answer.
//!
//! PostgreSQL stores `"md5" + hex(md5(password + user))`; on login it sends a 4-byte salt and
//! the client answers `"md5" + hex(md5(hex(stored hash) + salt))`. The stored hash is therefore
//! enough to check a client *and* to log in to PostgreSQL, which is why it must stay secret.

use crate::crypto::ct_eq;
use md5::{Digest, Md5};

/// Prefix of both a stored MD5 secret and a client's MD5 response.
pub const MD5_PREFIX: &str = "md5";

/// Length of `"md5"` followed by 32 hex digits.
pub const MD5_TEXT_LEN: usize = 35;

/// The hash PostgreSQL stores for `password` of `user`: `md5(password + user)`.
pub fn md5_password_hash(password: &[u8], user: &str) -> [u8; 16] {
    Md5::new()
        .chain_update(password)
        .chain_update(user.as_bytes())
        .finalize()
        .into()
}

/// The answer to an `AuthenticationMD5Password` challenge, from the stored hash and the salt.
///
/// This is what a client sends us, and what we send PostgreSQL when logging in with a stored hash.
pub fn md5_response(hash: &[u8; 16], salt: [u8; 4]) -> String {
    let digest: [u8; 16] = Md5::new()
        .chain_update(hex_lower(hash).as_bytes())
        .chain_update(salt)
        .finalize()
        .into();
    format!("{MD5_PREFIX}{}", hex_lower(&digest))
}

/// Whether a client's `PasswordMessage` (without its trailing NUL) answers the challenge.
///
/// Compared in constant time so the response cannot be found byte by byte.
pub fn verify_md5_response(hash: &[u8; 16], salt: [u8; 4], response: &[u8]) -> bool {
    ct_eq(md5_response(hash, salt).as_bytes(), response)
}

/// Parses `"md5"` + 32 hex digits into the stored hash; `None` for anything else.
pub fn parse_md5_secret(text: &str) -> Option<[u8; 16]> {
    if text.len() != MD5_TEXT_LEN {
        return None;
    }
    let digits = text.strip_prefix(MD5_PREFIX)?.as_bytes();
    let mut hash = [0u8; 16];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(hash)
}

/// Lowercase hex, as PostgreSQL writes it.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    #[test]
    fn response_matches_postgres_protocol() {
        let salt = [0x01, 0x02, 0xfe, 0xff];
        for (user, password) in [("alice", "s3cret"), ("", "x"), ("bob", "pässwörd")] {
            let hash = md5_password_hash(password.as_bytes(), user);
            let expected = md5_hash(user.as_bytes(), password.as_bytes(), salt);
            assert_eq!(md5_response(&hash, salt), expected);
            assert!(verify_md5_response(&hash, salt, expected.as_bytes()));
        }
    }

    #[test]
    fn stored_hash_matches_postgres_protocol() {
        let stored = postgres_protocol::password::md5(b"pw", "carol");
        assert_eq!(parse_md5_secret(&stored), Some(md5_password_hash(b"pw", "carol")));
        assert_eq!(
            stored,
            format!("md5{}", hex_lower(&md5_password_hash(b"pw", "carol")))
        );
    }

    #[test]
    fn wrong_answers_are_refused() {
        let hash = md5_password_hash(b"right", "dave");
        let salt = [9, 9, 9, 9];
        let good = md5_response(&hash, salt);
        assert!(!verify_md5_response(&hash, [9, 9, 9, 8], good.as_bytes()));
        let wrong = md5_hash(b"dave", b"wrong", salt);
        assert!(!verify_md5_response(&hash, salt, wrong.as_bytes()));
        assert!(!verify_md5_response(&hash, salt, &good.as_bytes()[..34]));
        assert!(!verify_md5_response(&hash, salt, b""));
    }

    #[test]
    fn parses_only_well_formed_hashes() {
        let upper = "md5ABCDEF0123456789ABCDEF0123456789";
        assert_eq!(parse_md5_secret(upper), parse_md5_secret(&upper.to_lowercase()));
        assert!(parse_md5_secret(upper).is_some());
        assert!(parse_md5_secret("md5abcdef0123456789abcdef012345678").is_none());
        assert!(parse_md5_secret("md5abcdef0123456789abcdef01234567890").is_none());
        assert!(parse_md5_secret("md5abcdef0123456789abcdef012345678g").is_none());
        assert!(parse_md5_secret("xyzabcdef0123456789abcdef0123456789").is_none());
        // Multi-byte characters must not be mistaken for digits or panic on slicing.
        assert!(parse_md5_secret("md5éééééééééééééééé").is_none());
    }
}
