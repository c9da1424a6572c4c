//! SCRAM server tests: RFC 7677's vector, interop with rust-postgres' client, and hostile input.

use super::verifier::salted_password;
use super::*;
use crate::crypto::{hmac_sha256, sha256, xor_into};
use crate::fuzzing::XorShift;
use postgres_protocol::authentication::sasl::{self, ScramSha256};

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn rfc_verifier() -> ScramVerifier {
    let salt = BASE64.decode(RFC_SALT).unwrap();
    ScramVerifier::derive(b"pencil", &salt, 4096).unwrap()
}

fn server(verifier: ScramVerifier, binding: ChannelBinding) -> ScramServer {
    ScramServer::new(verifier, ServerNonce::random(), binding)
}

/// Runs a whole exchange with rust-postgres' client, which also checks our signature.
fn exchange(server: &mut ScramServer, client: &mut ScramSha256) -> Result<(), ScramError> {
    let server_first = server.client_first(client.message())?;
    client.update(&server_first).expect("client accepts server-first");
    let server_final = server.client_final(client.message())?;
    client
        .finish(&server_final)
        .expect("client accepts our signature");
    Ok(())
}

/// What a client knowing `password` sends as `p=` for `auth_message`.
fn proof(password: &[u8], verifier: &ScramVerifier, auth_message: &[u8]) -> String {
    let salted = salted_password(password, &verifier.salt, verifier.iterations);
    let mut client_key = hmac_sha256(&salted, &[b"Client Key"]);
    let signature = hmac_sha256(&sha256(&client_key), &[auth_message]);
    xor_into(&mut client_key, &signature);
    BASE64.encode(client_key)
}

/// A server past client-first (`n,,n=,r=cnonce`, server nonce `snonce`).
fn after_first() -> ScramServer {
    let nonce = ServerNonce::new("snonce").unwrap();
    let mut server = ScramServer::new(rfc_verifier(), nonce, ChannelBinding::None);
    server.client_first(b"n,,n=,r=cnonce").unwrap();
    server
}

#[test]
fn rfc7677_known_answer() {
    let nonce = ServerNonce::new(RFC_SERVER_NONCE).unwrap();
    let mut server = ScramServer::new(rfc_verifier(), nonce, ChannelBinding::None);
    let server_first = server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    assert_eq!(
        String::from_utf8(server_first).unwrap(),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(server_final).unwrap(),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert!(server.is_verified());
    let client_key = server.client_key().unwrap();
    assert_eq!(sha256(&client_key), server.verifier.stored_key);
}

#[test]
fn verifier_round_trips_through_text() {
    let verifier = rfc_verifier();
    let text = verifier.to_string();
    assert_eq!(
        text,
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
         WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    );
    assert_eq!(ScramVerifier::parse(&text), Ok(verifier));
}

#[test]
fn postgres_protocol_verifier_accepts_its_client() {
    let verifier = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
    let mut server = server(verifier, ChannelBinding::None);
    let mut client = ScramSha256::new(b"pw", sasl::ChannelBinding::unsupported());
    exchange(&mut server, &mut client).unwrap();
    assert!(server.client_key().is_some());
}

#[test]
fn derived_verifier_accepts_its_client() {
    let verifier = ScramVerifier::derive(b"pw", b"0123456789abcdef", 4096).unwrap();
    for binding in [
        sasl::ChannelBinding::unsupported(),
        sasl::ChannelBinding::unrequested(),
    ] {
        let mut server = server(verifier.clone(), ChannelBinding::None);
        let mut client = ScramSha256::new(b"pw", binding);
        exchange(&mut server, &mut client).unwrap();
    }
}

#[test]
fn derive_matches_postgres_protocol() {
    let passwords: [&[u8]; 5] = [
        b"pw",
        "I\u{00AD}X".as_bytes(), // SASLprep maps the soft hyphen to nothing
        "\u{2168}".as_bytes(),   // and NFKC-normalises ROMAN NUMERAL NINE to "IX"
        "a\u{0007}b".as_bytes(), // prohibited control character: raw bytes are used
        &[0xff, 0xfe, b'x'],     // not UTF-8: raw bytes are used
    ];
    for password in passwords {
        let theirs = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(password)).unwrap();
        let ours = ScramVerifier::derive(password, &theirs.salt, theirs.iterations).unwrap();
        assert_eq!(ours, theirs, "{password:?}");
    }
    let a = ScramVerifier::derive("I\u{00AD}X".as_bytes(), b"salt", 4096).unwrap();
    let b = ScramVerifier::derive(b"IX", b"salt", 4096).unwrap();
    assert_eq!(a, b);
}

#[test]
fn derive_refuses_degenerate_parameters() {
    assert_eq!(
        ScramVerifier::derive(b"pw", b"salt", 0),
        Err(VerifierError::Iterations)
    );
    assert_eq!(
        ScramVerifier::derive(b"pw", b"", 4096),
        Err(VerifierError::EmptySalt)
    );
}

#[test]
fn wrong_password_is_an_auth_failure() {
    let verifier = ScramVerifier::derive(b"right", b"salty", 4096).unwrap();
    let mut server = server(verifier, ChannelBinding::None);
    let mut client = ScramSha256::new(b"wrong", sasl::ChannelBinding::unsupported());
    let error = exchange(&mut server, &mut client).unwrap_err();
    assert_eq!(error, ScramError::InvalidProof);
    assert!(error.is_auth_failure());
    assert_eq!(error.sqlstate(), SqlState::INVALID_PASSWORD);
    assert_eq!(server.client_key(), None);
    assert!(!server.is_verified());
    // A failed exchange stays failed.
    assert_eq!(server.client_final(client.message()), Err(ScramError::OutOfOrder));
}

#[test]
fn tampered_nonce_is_a_protocol_error() {
    let mut server = after_first();
    let msg = format!("c=biws,r=cnonceXnonce,p={}", BASE64.encode([0u8; 32]));
    let error = server.client_final(msg.as_bytes()).unwrap_err();
    assert_eq!(error, ScramError::NonceMismatch);
    assert!(!error.is_auth_failure());
    assert_eq!(error.sqlstate(), SqlState::PROTOCOL_VIOLATION);
}

#[test]
fn extensions_are_skipped_but_signed() {
    let mut server = after_first();
    let without_proof = "c=biws,r=cnoncesnonce,x=ext";
    let auth = format!("n=,r=cnonce,r=cnoncesnonce,s={RFC_SALT},i=4096,{without_proof}");
    let msg = format!(
        "{without_proof},p={}",
        proof(b"pencil", &rfc_verifier(), auth.as_bytes())
    );
    server.client_final(msg.as_bytes()).unwrap();
    assert!(server.is_verified());
}

#[test]
fn malformed_client_first_messages() {
    use Malformed as M;
    let cases: &[(&[u8], ScramError)] = &[
        (b"", M::Empty.into()),
        (b"x,,n=,r=abc", M::Gs2Flag.into()),
        (b"p,,n=,r=abc", M::Gs2Flag.into()),
        (b"p=,,n=,r=abc", M::Gs2Flag.into()),
        (b"n", M::Separator.into()),
        (b"n,n=,r=abc", M::Separator.into()),
        (b"n,a=bob,n=,r=abc", Unsupported::Authzid.into()),
        (b"n,,m=ext,n=,r=abc", Unsupported::MandatoryExtension.into()),
        (b"n,,r=abc", M::Attribute('n').into()),
        (b"n,,n=u", M::Separator.into()),
        (b"n,,n=u,", M::Attribute('r').into()),
        (b"n,,n=u,r=", M::Nonce.into()),
        (b"n,,n=u,r=a\x01b", M::Nonce.into()),
        (b"n,,n=u,r=a\xffb", M::Nonce.into()),
        (b"n,,n=u,r=abc,", M::Extension.into()),
        (b"n,,n=u,r=abc,1=x", M::Extension.into()),
    ];
    for (msg, expected) in cases {
        let mut server = server(rfc_verifier(), ChannelBinding::None);
        assert_eq!(
            server.client_first(msg),
            Err(*expected),
            "{}",
            String::from_utf8_lossy(msg)
        );
        assert_eq!(server.client_first(b"n,,n=,r=abc"), Err(ScramError::OutOfOrder));
    }
    let unsupported: ScramError = Unsupported::Authzid.into();
    assert_eq!(unsupported.sqlstate(), SqlState::FEATURE_NOT_SUPPORTED);
    // Extensions after the nonce and any bytes in the ignored user name are fine.
    let mut server = server(rfc_verifier(), ChannelBinding::None);
    server.client_first(b"n,,n=\xff\x00user,r=abc,x=1").unwrap();
}

#[test]
fn malformed_client_final_messages() {
    use Malformed as M;
    let good_proof = BASE64.encode([0u8; 32]);
    let cases: Vec<(String, ScramError)> = vec![
        (String::new(), M::Empty.into()),
        ("r=cnoncesnonce,p=x".into(), M::Attribute('c').into()),
        ("c=!!,r=cnoncesnonce".into(), M::Base64('c').into()),
        ("c=biws".into(), M::Separator.into()),
        ("c=biws,p=x".into(), M::Attribute('r').into()),
        ("c=biws,r=cnoncesnonce".into(), M::Separator.into()),
        ("c=biws,r=cnoncesnonce,p=abc".into(), M::Base64('p').into()),
        ("c=biws,r=cnoncesnonce,p=c2FsdA==".into(), M::ProofLength.into()),
        (
            format!("c=biws,r=cnoncesnonce,p={good_proof},x=1"),
            M::Trailing.into(),
        ),
        (
            format!("c=biws,r=cnoncesnonce,1=x,p={good_proof}"),
            M::Extension.into(),
        ),
        (
            format!("c=eSws,r=cnoncesnonce,p={good_proof}"),
            ScramError::BindingMismatch,
        ),
        (
            format!("c=biws,r=cnonce,p={good_proof}"),
            ScramError::NonceMismatch,
        ),
        (
            format!("c=biws,r=cnoncesnonce,p={good_proof}"),
            ScramError::InvalidProof,
        ),
    ];
    for (msg, expected) in cases {
        let mut server = after_first();
        assert_eq!(server.client_final(msg.as_bytes()), Err(expected), "{msg}");
        assert_eq!(
            expected.sqlstate() == SqlState::INVALID_PASSWORD,
            expected.is_auth_failure()
        );
    }
}

#[test]
fn messages_out_of_order_are_refused() {
    let mut server = server(rfc_verifier(), ChannelBinding::None);
    assert_eq!(
        server.client_final(b"c=biws,r=x,p=x"),
        Err(ScramError::OutOfOrder)
    );
    let mut server = after_first();
    assert_eq!(server.client_first(b"n,,n=,r=abc"), Err(ScramError::OutOfOrder));
    let mut server = after_first();
    assert_eq!(
        server.select_mechanism(SCRAM_SHA_256),
        Err(ScramError::OutOfOrder)
    );
}

#[test]
fn mechanisms_follow_the_binding_offer() {
    let none = server(rfc_verifier(), ChannelBinding::None);
    assert_eq!(none.mechanisms(), &[SCRAM_SHA_256]);
    let tls = server(rfc_verifier(), ChannelBinding::TlsServerEndPoint(vec![1; 32]));
    assert_eq!(tls.mechanisms(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);

    let mut none = server(rfc_verifier(), ChannelBinding::None);
    assert_eq!(
        none.select_mechanism(SCRAM_SHA_256_PLUS),
        Err(ScramError::UnknownMechanism)
    );
    let mut tls = server(rfc_verifier(), ChannelBinding::TlsServerEndPoint(vec![1; 32]));
    assert_eq!(
        tls.select_mechanism("SCRAM-SHA-1"),
        Err(ScramError::UnknownMechanism)
    );
    let mut tls = server(rfc_verifier(), ChannelBinding::TlsServerEndPoint(vec![1; 32]));
    assert_eq!(
        tls.select_mechanism(SCRAM_SHA_256_PLUS),
        Ok(Mechanism::ScramSha256Plus)
    );
}

#[test]
fn channel_binding_with_tls_server_end_point() {
    let verifier = ScramVerifier::derive(b"pw", b"salt", 4096).unwrap();
    let cert_hash = vec![0xc3; 32];
    let offer = || ChannelBinding::TlsServerEndPoint(cert_hash.clone());

    // -PLUS with the right certificate hash.
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    server.select_mechanism(SCRAM_SHA_256_PLUS).unwrap();
    let mut client = ScramSha256::new(
        b"pw",
        sasl::ChannelBinding::tls_server_end_point(cert_hash.clone()),
    );
    exchange(&mut server, &mut client).unwrap();

    // A man in the middle terminates TLS with another certificate.
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    server.select_mechanism(SCRAM_SHA_256_PLUS).unwrap();
    let mut client = ScramSha256::new(b"pw", sasl::ChannelBinding::tls_server_end_point(vec![0x3c; 32]));
    let error = exchange(&mut server, &mut client).unwrap_err();
    assert_eq!(error, ScramError::BindingMismatch);
    assert_eq!(error.sqlstate(), SqlState::PROTOCOL_VIOLATION);

    // Plain SCRAM over TLS from a client without binding support is fine.
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    let mut client = ScramSha256::new(b"pw", sasl::ChannelBinding::unsupported());
    exchange(&mut server, &mut client).unwrap();

    // `y` while we offered -PLUS: the offer was stripped on the way (RFC 5802 §6).
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    let mut client = ScramSha256::new(b"pw", sasl::ChannelBinding::unrequested());
    assert_eq!(
        exchange(&mut server, &mut client),
        Err(Negotiation::Downgrade.into())
    );

    // -PLUS selected but the message says `n`.
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    server.select_mechanism(SCRAM_SHA_256_PLUS).unwrap();
    assert_eq!(
        server.client_first(b"n,,n=,r=abc"),
        Err(Negotiation::PlusWithoutBinding.into())
    );

    // An unknown binding type.
    let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer());
    server.select_mechanism(SCRAM_SHA_256_PLUS).unwrap();
    assert_eq!(
        server.client_first(b"p=tls-unique,,n=,r=abc"),
        Err(Unsupported::BindingType.into())
    );
}

#[test]
fn binding_data_without_plus_is_refused() {
    let verifier = ScramVerifier::derive(b"pw", b"salt", 4096).unwrap();
    for offer in [
        ChannelBinding::None,
        ChannelBinding::TlsServerEndPoint(vec![1; 32]),
    ] {
        let mut server = ScramServer::new(verifier.clone(), ServerNonce::random(), offer);
        let mut client = ScramSha256::new(b"pw", sasl::ChannelBinding::tls_server_end_point(vec![1; 32]));
        assert_eq!(
            exchange(&mut server, &mut client),
            Err(Negotiation::BindingWithoutPlus.into())
        );
    }
}

#[test]
fn server_nonces() {
    let a = ServerNonce::random();
    let b = ServerNonce::random();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 24);
    assert!(a.as_str().bytes().all(message::is_nonce_char));
    assert_eq!(
        ServerNonce::from_random([0; 18]).as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAA"
    );
    assert!(ServerNonce::new("").is_none());
    assert!(ServerNonce::new("a,b").is_none());
    assert!(ServerNonce::new("a b").is_none());
}

#[test]
fn mock_verifier_never_verifies() {
    let seed = b"per-process random seed";
    let mock = ScramVerifier::mock("ghost", seed);
    assert_eq!(mock, ScramVerifier::mock("ghost", seed));
    assert_ne!(mock.salt, ScramVerifier::mock("casper", seed).salt);
    for password in [&b"pw"[..], b"", b"ghost"] {
        let mut server = server(mock.clone(), ChannelBinding::None);
        let mut client = ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        assert_eq!(exchange(&mut server, &mut client), Err(ScramError::InvalidProof));
    }
}

#[test]
fn debug_output_hides_secrets() {
    let mut server = server(rfc_verifier(), ChannelBinding::TlsServerEndPoint(vec![7; 32]));
    server.client_first(b"n,,n=,r=abc").unwrap();
    let shown = format!("{server:?}");
    let stored = BASE64.encode(rfc_verifier().stored_key);
    assert!(!shown.contains(&stored[..8]), "{shown}");
    assert!(shown.contains("awaiting client-final"), "{shown}");
}

#[test]
fn fuzz_entry_survives_random_and_mutated_input() {
    let first = b"n,,n=,r=abc";
    let last = format!("c=biws,r=abcfuzz,p={}", BASE64.encode([9u8; 32]));
    let plus_first = b"p=tls-server-end-point,,n=,r=abc";
    let plus_last = format!(
        "c={},r=abcfuzz,p={}",
        BASE64.encode([&plus_first[..24], &[0x5a; 32][..]].concat()),
        BASE64.encode([9u8; 32])
    );
    let seeds = [
        [&[0u8][..], first, &[0], last.as_bytes()].concat(),
        [&[7u8][..], plus_first, &[0], plus_last.as_bytes()].concat(),
    ];
    let interesting = [b',', b'=', 0, 0xff, b'p', b'a', b'r', b'c', b'm'];
    for seed in &seeds {
        fuzz_scram_exchange(seed);
        for cut in 0..seed.len() {
            fuzz_scram_exchange(&seed[..cut]);
            for &byte in &interesting {
                let mut mutated = seed.clone();
                mutated[cut] = byte;
                fuzz_scram_exchange(&mutated);
            }
        }
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5000 {
        let len = (rng.next_u64() % 96) as usize;
        let alphabet = b"npyrcsima=,0AZ+/\x00\xff";
        let data: Vec<u8> = (0..len)
            .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
            .collect();
        fuzz_scram_exchange(&data);
    }
}
