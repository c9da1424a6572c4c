//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it; pure logic, no I/O.
//!
//! The caller advertises [`ScramServer::mechanisms`] in AuthenticationSASL, passes the mechanism
//! name from SASLInitialResponse to [`ScramServer::select_mechanism`] and its data to
//! [`ScramServer::client_first`], sends the reply as AuthenticationSASLContinue, feeds the next
//! SASLResponse to [`ScramServer::client_final`] and sends that reply as AuthenticationSASLFinal,
//! followed by AuthenticationOk. On any error it sends an ErrorResponse with
//! [`ScramError::sqlstate`] and closes the connection: a failed exchange cannot be resumed.
//!
//! Where PostgreSQL deviates from the RFC we follow PostgreSQL: the user name inside the
//! client-first-message is ignored (the startup packet's is used), an authorization identity
//! or a mandatory extension is refused, and a failed proof is an ErrorResponse (28P01) rather
//! than a server-final-message carrying `e=invalid-proof`.

mod message;
#[cfg(test)]
mod tests;
mod verifier;

pub use verifier::{ScramVerifier, VerifierError, DEFAULT_ITERATIONS, SCRAM_PREFIX};

use crate::crypto::{ct_eq, hmac_sha256, sha256, xor_into};
use crate::protocol::SqlState;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use message::{parse_client_final, parse_client_first, Gs2Flag};
use std::fmt;

/// SASL name of SCRAM without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL name of SCRAM bound to the TLS channel.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type PostgreSQL implements (RFC 5929 §4).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Random bytes in a server nonce, as in PostgreSQL (`SCRAM_RAW_NONCE_LEN`).
pub const NONCE_RANDOM_LEN: usize = 18;

/// The SASL mechanism a client picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha256Plus,
}

impl Mechanism {
    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => SCRAM_SHA_256,
            Mechanism::ScramSha256Plus => SCRAM_SHA_256_PLUS,
        }
    }
}

/// What the server can bind the exchange to.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// No TLS (or binding disabled): only SCRAM-SHA-256 is offered.
    None,
    /// TLS with `tls-server-end-point`: the hash of our certificate (RFC 5929 §4.1: SHA-256
    /// unless the certificate's signature uses a stronger hash). SCRAM-SHA-256-PLUS is offered
    /// and a client claiming `y` is refused as a downgrade.
    TlsServerEndPoint(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelBinding::None => f.write_str("None"),
            ChannelBinding::TlsServerEndPoint(hash) => {
                write!(f, "TlsServerEndPoint({} bytes)", hash.len())
            }
        }
    }
}

/// The server's half of the nonce: printable ASCII without ','.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerNonce(String);

impl ServerNonce {
    /// 18 bytes from the thread-local CSPRNG (seeded from the OS), base64'd as PostgreSQL does.
    pub fn random() -> ServerNonce {
        let mut bytes = [0u8; NONCE_RANDOM_LEN];
        rand::fill(&mut bytes);
        ServerNonce::from_random(bytes)
    }

    /// Base64 of caller-supplied random bytes (for a caller with its own RNG).
    pub fn from_random(bytes: [u8; NONCE_RANDOM_LEN]) -> ServerNonce {
        ServerNonce(BASE64.encode(bytes))
    }

    /// A fixed nonce, e.g. a test vector's; `None` if empty or not RFC 5802 `printable`.
    pub fn new(text: &str) -> Option<ServerNonce> {
        let valid = !text.is_empty() && text.bytes().all(message::is_nonce_char);
        valid.then(|| ServerNonce(text.to_owned()))
    }

    /// The nonce text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServerNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServerNonce").field(&self.0).finish()
    }
}

/// Why an exchange failed. Every variant is the client's doing; none is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// SASLInitialResponse named a mechanism we did not offer.
    #[error("client selected an invalid SASL authentication mechanism")]
    UnknownMechanism,
    /// A message that does not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(#[from] Malformed),
    /// Valid SCRAM that PostgreSQL (and so tidepool) does not implement.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(#[from] Unsupported),
    /// The gs2 flag contradicts the mechanism or what the server offered.
    #[error("SCRAM channel binding negotiation error: {0}")]
    Negotiation(#[from] Negotiation),
    /// `c=` is not our gs2-header plus our certificate hash: possibly a man in the middle.
    #[error("SCRAM channel binding check failed")]
    BindingMismatch,
    /// `r=` of the final message is not the nonce we agreed on.
    #[error("invalid SCRAM response: nonce does not match")]
    NonceMismatch,
    /// A message arrived in the wrong phase, or after the exchange had already failed.
    #[error("SCRAM message out of sequence")]
    OutOfOrder,
    /// The client does not know the password.
    #[error("SCRAM proof does not match the stored verifier")]
    InvalidProof,
}

/// Grammar errors, each naming what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("message is empty")]
    Empty,
    #[error("expected channel-binding flag 'n', 'y' or 'p=<type>'")]
    Gs2Flag,
    #[error("expected ',' between attributes")]
    Separator,
    #[error("missing or misplaced attribute '{0}='")]
    Attribute(char),
    #[error("extension attribute is not '<letter>=<value>'")]
    Extension,
    #[error("client nonce is empty or not printable ASCII")]
    Nonce,
    #[error("attribute '{0}=' is not valid base64")]
    Base64(char),
    #[error("client proof is not 32 bytes")]
    ProofLength,
    #[error("data after the client proof")]
    Trailing,
}

/// Parts of SCRAM that PostgreSQL refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("authorization identity (a=)")]
    Authzid,
    #[error("mandatory extension (m=)")]
    MandatoryExtension,
    #[error("channel-binding type other than tls-server-end-point")]
    BindingType,
}

/// Contradictions between the gs2 flag, the mechanism and the server's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Negotiation {
    #[error("client selected SCRAM-SHA-256-PLUS but sent no channel binding")]
    PlusWithoutBinding,
    #[error("client sent channel binding without selecting SCRAM-SHA-256-PLUS")]
    BindingWithoutPlus,
    /// RFC 5802 §6: the client saw no -PLUS offer, yet we made one; someone may have removed it.
    #[error("client supports channel binding but thinks the server does not; this server does")]
    Downgrade,
}

impl ScramError {
    /// True only for a wrong password; everything else is a protocol error.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ScramError::InvalidProof)
    }

    /// The SQLSTATE PostgreSQL reports for the same failure.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ScramError::InvalidProof => SqlState::INVALID_PASSWORD,
            ScramError::Unsupported(Unsupported::Authzid | Unsupported::MandatoryExtension) => {
                SqlState::FEATURE_NOT_SUPPORTED
            }
            _ => SqlState::PROTOCOL_VIOLATION,
        }
    }
}

/// Where an exchange is. Moved out and replaced on every step, so an error leaves `Failed`.
enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(Pending),
    Verified { client_key: [u8; 32] },
    Failed,
}

/// What client-first established and client-final is checked against.
struct Pending {
    /// client-first-message-bare + "," + server-first-message + ",": the AuthMessage prefix.
    auth_prefix: Vec<u8>,
    /// Client nonce followed by ours.
    nonce: Vec<u8>,
    /// What `c=` must decode to: gs2-header plus channel-binding data.
    binding_input: Vec<u8>,
}

/// One SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    verifier: ScramVerifier,
    nonce: ServerNonce,
    binding: ChannelBinding,
    mechanism: Mechanism,
    state: State,
}

impl fmt::Debug for ScramServer {
    // The verifier and a recovered ClientKey are secrets; show only the phase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::AwaitingClientFinal(_) => "awaiting client-final",
            State::Verified { .. } => "verified",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("binding", &self.binding)
            .field("phase", &phase)
            .finish()
    }
}

impl ScramServer {
    /// Starts an exchange. The mechanism defaults to SCRAM-SHA-256 until
    /// [`select_mechanism`](Self::select_mechanism) says otherwise.
    pub fn new(verifier: ScramVerifier, nonce: ServerNonce, binding: ChannelBinding) -> Self {
        ScramServer {
            verifier,
            nonce,
            binding,
            mechanism: Mechanism::ScramSha256,
            state: State::AwaitingClientFirst,
        }
    }

    /// Mechanism names for AuthenticationSASL, in our order of preference.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self.binding {
            ChannelBinding::None => &[SCRAM_SHA_256],
            ChannelBinding::TlsServerEndPoint(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
        }
    }

    /// Records the mechanism named in SASLInitialResponse; it must be one we offered.
    pub fn select_mechanism(&mut self, name: &str) -> Result<Mechanism, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(self.fail(ScramError::OutOfOrder));
        }
        let mechanism = match (name, &self.binding) {
            (SCRAM_SHA_256, _) => Mechanism::ScramSha256,
            (SCRAM_SHA_256_PLUS, ChannelBinding::TlsServerEndPoint(_)) => Mechanism::ScramSha256Plus,
            _ => return Err(self.fail(ScramError::UnknownMechanism)),
        };
        self.mechanism = mechanism;
        Ok(mechanism)
    }

    /// Takes the client-first-message; returns the server-first-message
    /// (`r=<client nonce><server nonce>,s=<salt>,i=<iterations>`).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        self.step(Input::ClientFirst(msg))
    }

    /// Takes the client-final-message; on a valid proof returns the server-final-message
    /// (`v=<ServerSignature>`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        self.step(Input::ClientFinal(msg))
    }

    /// Whether the client proved it knows the password.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, State::Verified { .. })
    }

    /// The ClientKey recovered from a verified proof: enough to log in to PostgreSQL as this
    /// user without the password (when PostgreSQL holds the same verifier). A secret.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Verified { client_key } => Some(client_key),
            _ => None,
        }
    }

    /// The one transition function: every message goes through here.
    fn step(&mut self, input: Input<'_>) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (next, reply) = match (state, input) {
            (State::AwaitingClientFirst, Input::ClientFirst(msg)) => self.on_client_first(msg)?,
            (State::AwaitingClientFinal(pending), Input::ClientFinal(msg)) => {
                on_client_final(&self.verifier, pending, msg)?
            }
            _ => return Err(ScramError::OutOfOrder),
        };
        self.state = next;
        Ok(reply)
    }

    fn on_client_first(&self, msg: &[u8]) -> Result<(State, Vec<u8>), ScramError> {
        let first = parse_client_first(msg)?;
        let binding_data = self.check_binding_flag(first.flag)?;

        let mut nonce = first.nonce.to_vec();
        nonce.extend_from_slice(self.nonce.as_str().as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        let params = format!(
            ",s={},i={}",
            BASE64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        server_first.extend_from_slice(params.as_bytes());

        let auth_prefix = [first.bare, b",", &server_first, b","].concat();
        let binding_input = [first.gs2_header, binding_data].concat();
        let pending = Pending {
            auth_prefix,
            nonce,
            binding_input,
        };
        Ok((State::AwaitingClientFinal(pending), server_first))
    }

    /// Applies RFC 5802 §6 and PostgreSQL's rules to the gs2 flag; returns the channel-binding
    /// data the client must have hashed into `c=`.
    fn check_binding_flag(&self, flag: Gs2Flag<'_>) -> Result<&[u8], ScramError> {
        let plus = self.mechanism == Mechanism::ScramSha256Plus;
        match (flag, &self.binding) {
            (Gs2Flag::Bound(_), _) if !plus => Err(Negotiation::BindingWithoutPlus.into()),
            (Gs2Flag::Bound(name), ChannelBinding::TlsServerEndPoint(hash)) => {
                if name == TLS_SERVER_END_POINT.as_bytes() {
                    Ok(hash)
                } else {
                    Err(Unsupported::BindingType.into())
                }
            }
            // Unreachable: -PLUS is only selectable with a binding. Refuse rather than assume.
            (Gs2Flag::Bound(_), ChannelBinding::None) => Err(ScramError::UnknownMechanism),
            (Gs2Flag::Unsupported | Gs2Flag::ClientOnly, _) if plus => {
                Err(Negotiation::PlusWithoutBinding.into())
            }
            (Gs2Flag::ClientOnly, ChannelBinding::TlsServerEndPoint(_)) => Err(Negotiation::Downgrade.into()),
            (Gs2Flag::Unsupported | Gs2Flag::ClientOnly, _) => Ok(&[]),
        }
    }

    fn fail(&mut self, error: ScramError) -> ScramError {
        self.state = State::Failed;
        error
    }
}

/// A message for [`ScramServer::step`].
enum Input<'a> {
    ClientFirst(&'a [u8]),
    ClientFinal(&'a [u8]),
}

/// Checks nonce, channel binding and proof (RFC 5802 §3), then signs the AuthMessage.
fn on_client_final(
    verifier: &ScramVerifier,
    pending: Pending,
    msg: &[u8],
) -> Result<(State, Vec<u8>), ScramError> {
    let last = parse_client_final(msg)?;
    if !ct_eq(&last.channel_binding, &pending.binding_input) {
        return Err(ScramError::BindingMismatch);
    }
    if last.nonce != pending.nonce.as_slice() {
        return Err(ScramError::NonceMismatch);
    }
    let auth_message = [pending.auth_prefix.as_slice(), last.without_proof].concat();

    // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage), so XOR-ing the signature back
    // out yields the ClientKey, whose hash must be the StoredKey.
    let mut client_key = hmac_sha256(&verifier.stored_key, &[&auth_message]);
    xor_into(&mut client_key, &last.proof);
    if !ct_eq(&sha256(&client_key), &verifier.stored_key) {
        return Err(ScramError::InvalidProof);
    }
    let signature = hmac_sha256(&verifier.server_key, &[&auth_message]);
    let server_final = format!("v={}", BASE64.encode(signature)).into_bytes();
    Ok((State::Verified { client_key }, server_final))
}

/// Fuzz entry point: arbitrary bytes as a whole exchange; must never panic.
///
/// Byte 0 picks the setup (bit 0: offer channel binding; bit 1: call `select_mechanism`;
/// bit 2: name -PLUS there). The rest is split at the first NUL into client-first and
/// client-final. The server nonce is the fixed `fuzz`, so a fuzzer can reach proof checking.
pub fn fuzz_scram_exchange(data: &[u8]) {
    let Some((&setup, rest)) = data.split_first() else {
        return;
    };
    let binding = if setup & 1 != 0 {
        ChannelBinding::TlsServerEndPoint(vec![0x5a; 32])
    } else {
        ChannelBinding::None
    };
    // Fixed keys: deriving a verifier per input would make the fuzzer crawl.
    let verifier = ScramVerifier {
        iterations: DEFAULT_ITERATIONS,
        salt: b"fuzz-salt".to_vec(),
        stored_key: [0x11; 32],
        server_key: [0x22; 32],
    };
    let nonce = ServerNonce::new("fuzz").expect("printable");
    let mut server = ScramServer::new(verifier, nonce, binding);
    let _ = server.mechanisms();
    if setup & 2 != 0 {
        let name = if setup & 4 != 0 {
            SCRAM_SHA_256_PLUS
        } else {
            SCRAM_SHA_256
        };
        let _ = server.select_mechanism(name);
    }
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let _ = server.client_first(first);
    let _ = server.client_final(last);
    let _ = server.client_key();
    let _ = format!("{server:?}");
}
