//! Secrets stay hidden: never in Debug output, never echoed by a syntax error.

use super::*;

#[test]
fn secrets_never_reach_debug_output() {
    let users = format!(
        "[[users]]\nname = \"app\"\npassword = \"plain-secret-1\"\nbackend_password = \"backend-secret-2\"\n\
         [[users]]\nname = \"m\"\npassword = \"{MD5}\"\nauth_method = \"md5\"\n\
         [[users]]\nname = \"s\"\npassword = \"{SCRAM}\"\n"
    );
    let config = Parts::with(Users, users).parse().expect("valid");
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        let scram_keys = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
        for secret in ["plain-secret-1", "backend-secret-2", &MD5[3..], scram_keys] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<hidden>") && shown.contains("\"app\""));
    }
}

#[test]
fn syntax_errors_never_echo_secrets() {
    for bad in [
        "[[users]]\nname = \"u\"\npasswrd = \"hunter2-secret\"\n",
        "[[users]]\nname = \"u\"\npassword = [\"hunter2-secret\"]\n",
        "[[users]]\nname = \"u\"\npassword = \"hunter2-secret\n",
    ] {
        let err = Config::from_toml(bad).expect_err("invalid").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.starts_with("line 3"), "{err}");
    }
}
