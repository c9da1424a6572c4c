//! SCRAM-SHA-256 toward PostgreSQL without the password: pass-through of the keys recovered
//! when a client logged in to tidepool.
//!
//! A client's proof is `ClientKey XOR HMAC(StoredKey, AuthMessage)`; tidepool knows StoredKey
//! (its verifier), so a verified proof yields ClientKey. ClientKey, with ServerKey to check the
//! server's answer, is all a SCRAM client needs, *provided the server's verifier is the same
//! one* (same salt and iteration count, hence same keys): PostgreSQL announces its salt and
//! iterations in server-first, and a mismatch is refused here before any proof is sent.

use crate::crypto::{ct_eq, hmac_sha256, sha256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::fmt;

/// Keys of one user's SCRAM verifier plus the ClientKey a client proved; a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(<hidden>)")
    }
}

/// Why pass-through failed (before PostgreSQL itself could refuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassThroughError {
    #[error("server-first-message is malformed")]
    Malformed,
    #[error("server nonce does not extend ours")]
    Nonce,
    #[error(
        "the server's SCRAM verifier for this user differs from tidepool's (other salt or iteration \
         count), so the client's key cannot be reused; give tidepool the same verifier or a backend_password"
    )]
    VerifierMismatch,
    #[error("the server's signature is wrong (it does not hold this user's verifier)")]
    ServerSignature,
    #[error("message out of sequence")]
    OutOfOrder,
}

/// One exchange: `client_first`, then `server_first` → client-final, then `server_final`.
pub struct KeyClient {
    keys: ScramKeys,
    nonce: String,
    auth_message: Option<Vec<u8>>,
}

impl KeyClient {
    pub fn new(keys: ScramKeys) -> KeyClient {
        let mut raw = [0u8; 18];
        rand::fill(&mut raw);
        KeyClient {
            keys,
            nonce: BASE64.encode(raw),
            auth_message: None,
        }
    }

    /// gs2 header (no channel binding) and client-first-message-bare. The user name is empty,
    /// as libpq sends it: PostgreSQL uses the startup packet's.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,n=,r={}", self.nonce).into_bytes()
    }

    /// Checks server-first and returns client-final with the proof.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, PassThroughError> {
        let text = std::str::from_utf8(message).map_err(|_| PassThroughError::Malformed)?;
        let mut parts = text.split(',');
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(PassThroughError::Malformed)?;
        let salt = parts
            .next()
            .and_then(|p| p.strip_prefix("s="))
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or(PassThroughError::Malformed)?;
        let iterations: u32 = parts
            .next()
            .and_then(|p| p.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(PassThroughError::Malformed)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(PassThroughError::Nonce);
        }
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(PassThroughError::VerifierMismatch);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=,r={},{text},{without_proof}", self.nonce).into_bytes();
        let stored_key = sha256(&self.keys.client_key);
        let mut proof = hmac_sha256(&stored_key, &[&auth_message]);
        for (p, k) in proof.iter_mut().zip(self.keys.client_key) {
            *p ^= k;
        }
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server's signature in server-final.
    pub fn server_final(&self, message: &[u8]) -> Result<(), PassThroughError> {
        let auth_message = self.auth_message.as_ref().ok_or(PassThroughError::OutOfOrder)?;
        let signature = std::str::from_utf8(message)
            .ok()
            .and_then(|t| t.strip_prefix("v="))
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or(PassThroughError::ServerSignature)?;
        let expected = hmac_sha256(&self.keys.server_key, &[auth_message]);
        if ct_eq(&expected, &signature) {
            Ok(())
        } else {
            Err(PassThroughError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ChannelBinding, ScramServer, ScramVerifier, ServerNonce};

    /// Our own server checks the proof exactly as PostgreSQL does.
    fn run(keys: ScramKeys, verifier: ScramVerifier) -> Result<(), PassThroughError> {
        let mut server = ScramServer::new(verifier, ServerNonce::random(), ChannelBinding::None);
        let mut client = KeyClient::new(keys);
        let first = server.client_first(&client.client_first()).expect("client-first");
        let last = client.server_first(&first)?;
        let fin = server
            .client_final(&last)
            .map_err(|_| PassThroughError::ServerSignature)?;
        client.server_final(&fin)
    }

    fn keys_from_login(verifier: &ScramVerifier, password: &[u8]) -> ScramKeys {
        // Log in to our server with the password (as a client would) and take the key.
        let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), ChannelBinding::None);
        let mut client = postgres_protocol::authentication::sasl::ScramSha256::new(
            password,
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let fin = server.client_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        ScramKeys {
            iterations: verifier.iterations,
            salt: verifier.salt.clone(),
            client_key: server.client_key().expect("verified"),
            server_key: verifier.server_key,
        }
    }

    #[test]
    fn recovered_key_logs_in_against_the_same_verifier() {
        let verifier = ScramVerifier::derive(b"pencil", b"salt-1", 4096).unwrap();
        let keys = keys_from_login(&verifier, b"pencil");
        assert_eq!(run(keys.clone(), verifier), Ok(()));
        // Same password, other salt: the server's keys differ, refused before any proof.
        let other = ScramVerifier::derive(b"pencil", b"salt-2", 4096).unwrap();
        assert_eq!(run(keys, other), Err(PassThroughError::VerifierMismatch));
    }

    #[test]
    fn wrong_key_or_server_is_refused() {
        let verifier = ScramVerifier::derive(b"pencil", b"salt-1", 4096).unwrap();
        let mut keys = keys_from_login(&verifier, b"pencil");
        keys.client_key[0] ^= 1;
        assert!(run(keys.clone(), verifier.clone()).is_err());
        keys.client_key[0] ^= 1;
        keys.server_key[0] ^= 1;
        assert_eq!(run(keys, verifier), Err(PassThroughError::ServerSignature));
        assert!(!format!(
            "{:?}",
            keys_from_login(&ScramVerifier::derive(b"x", b"s", 1).unwrap(), b"x")
        )
        .contains('['));
    }

    #[test]
    fn malformed_server_first_is_refused() {
        let keys = ScramKeys {
            iterations: 1,
            salt: b"s".to_vec(),
            client_key: [0; 32],
            server_key: [0; 32],
        };
        let mut client = KeyClient::new(keys);
        for bad in [&b""[..], b"r=x,s=c2FsdA==,i=1", b"garbage", b"r=,s=,i="] {
            assert!(client.server_first(bad).is_err());
        }
        assert_eq!(client.server_final(b"v=AAAA"), Err(PassThroughError::OutOfOrder));
    }
}
