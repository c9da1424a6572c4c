//! Hash primitives shared by the password checks: SHA-256, HMAC-SHA-256, PBKDF2 and constant-time equality.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA-256 keyed with `key` over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = keyed(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with a 32-byte output: SCRAM's `Hi(password, salt, i)` (RFC 5802 §2.2).
///
/// `iterations` of 0 is treated as 1; callers reject 0 before getting here.
pub(crate) fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    // Key the HMAC once and clone it per round: the key schedule is half the cost of a round.
    let base = keyed(password);
    let mut round = base.clone();
    round.update(salt);
    round.update(&1u32.to_be_bytes());
    let mut block: [u8; 32] = round.finalize().into_bytes().into();
    let mut result = block;
    for _ in 1..iterations {
        let mut round = base.clone();
        round.update(&block);
        block = round.finalize().into_bytes().into();
        xor_into(&mut result, &block);
    }
    result
}

/// `acc ^= other`, byte by byte.
pub(crate) fn xor_into(acc: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// Compares two byte strings without an early exit, so timing does not reveal where they differ.
///
/// The lengths are not secret (they are fixed by the protocol), so a length mismatch returns at once.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into a short-circuiting compare.
    std::hint::black_box(diff) == 0
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pbkdf2_matches_published_vectors() {
        // PBKDF2-HMAC-SHA256 vectors as widely published alongside RFC 6070's SHA-1 ones.
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn ct_eq_compares_whole_strings() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn hmac_concatenates_parts() {
        assert_eq!(
            hmac_sha256(b"key", &[b"ab", b"c"]),
            hmac_sha256(b"key", &[b"abc"])
        );
    }
}
