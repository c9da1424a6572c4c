//! hba parsing and first-match decisions.

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn method(rules: &HbaRules, tls: bool, db: &str, user: &str, addr: &str) -> Option<AuthMethod> {
    rules.decide(tls, db, user, Some(ip(addr))).map(|r| r.method)
}

#[test]
fn first_match_wins_like_pg_hba() {
    let text = "# comment\n\
        local all all peer\n\
        \n\
        host app alice 10.0.0.0/8 trust   # inline comment\n\
        host app,other all 10.0.0.0/8 md5\n\
        hostssl all all 0.0.0.0/0 cert\n\
        hostnossl sameuser all 0.0.0.0/0 password\n\
        host all \"All\" 127.0.0.1 255.255.255.255 scram-sha-256\n\
        host all all ::1/128 reject\n\
        host replication all 0.0.0.0/0 trust\n\
        hostgssenc all all 0.0.0.0/0 trust\n";
    let (rules, skipped) = HbaRules::parse_file(text).expect("valid");
    assert_eq!(skipped, [2]);
    assert_eq!(rules.len(), 8);
    assert_eq!(
        method(&rules, false, "app", "alice", "10.1.1.1"),
        Some(AuthMethod::Trust)
    );
    assert_eq!(
        method(&rules, false, "app", "bob", "10.1.1.1"),
        Some(AuthMethod::Md5)
    );
    assert_eq!(
        method(&rules, false, "other", "bob", "10.1.1.1"),
        Some(AuthMethod::Md5)
    );
    assert_eq!(
        method(&rules, true, "third", "bob", "10.1.1.1"),
        Some(AuthMethod::Cert)
    );
    assert_eq!(
        method(&rules, false, "bob", "bob", "192.168.1.1"),
        Some(AuthMethod::Password)
    );
    assert_eq!(method(&rules, false, "app", "bob", "192.168.1.1"), None);
    // A quoted keyword is a name: "All" matches only the user named All.
    assert_eq!(
        method(&rules, false, "x", "All", "127.0.0.1"),
        Some(AuthMethod::ScramSha256)
    );
    assert_eq!(method(&rules, false, "x", "all", "127.0.0.1"), None);
    assert_eq!(method(&rules, false, "x", "u", "::1"), Some(AuthMethod::Reject));
    // A v4 client seen on a v6 socket is matched as v4.
    assert_eq!(
        method(&rules, false, "app", "bob", "::ffff:10.1.1.1"),
        Some(AuthMethod::Md5)
    );
    assert_eq!(
        rules
            .decide(false, "app", "bob", Some(ip("10.1.1.1")))
            .unwrap()
            .origin,
        "line 5"
    );
}

#[test]
fn malformed_lines_name_the_line_and_reason() {
    let cases: &[(&str, HbaProblem)] = &[
        ("host all all", HbaProblem::MissingFields),
        ("hots all all 0.0.0.0/0 md5", HbaProblem::ConnType("hots".into())),
        (
            "host all all 0.0.0.0/0 gss",
            HbaProblem::UnsupportedMethod("gss".into()),
        ),
        (
            "host all all 0.0.0.0/0 scram",
            HbaProblem::UnknownMethod("scram".into()),
        ),
        ("host all all 0.0.0.0/0 cert", HbaProblem::CertNeedsSsl),
        (
            "host all all 10.0.0.0/33 md5",
            HbaProblem::Address("10.0.0.0/33".into()),
        ),
        (
            "host all all 10.0.0.0/x md5",
            HbaProblem::Address("10.0.0.0/x".into()),
        ),
        (
            "host all all example.com md5",
            HbaProblem::HostName("example.com".into()),
        ),
        ("host all all samenet md5", HbaProblem::HostName("samenet".into())),
        (
            "host all all 10.0.0.1 255.0.255.0 md5",
            HbaProblem::Netmask("255.0.255.0".into()),
        ),
        (
            "host all +admins 0.0.0.0/0 md5",
            HbaProblem::NameKeyword("+admins".into()),
        ),
        (
            "host all @users.txt 0.0.0.0/0 md5",
            HbaProblem::NameKeyword("@users.txt".into()),
        ),
        ("host all a,,b 0.0.0.0/0 md5", HbaProblem::EmptyName),
        ("host all \"a 0.0.0.0/0 md5", HbaProblem::Quote),
        (
            "host all all 0.0.0.0/0 md5 clientcert=verify-full",
            HbaProblem::Options("clientcert=verify-full".into()),
        ),
        ("include other.conf", HbaProblem::Include),
    ];
    for (line, problem) in cases {
        let text = format!("# first\nhost all all 0.0.0.0/0 md5\n{line}\n");
        let error = HbaRules::parse_file(&text).expect_err(line);
        assert_eq!(error.line, 3, "{line}");
        assert_eq!(&error.problem, problem, "{line}");
        assert!(error.to_string().starts_with("line 3: "), "{error}");
    }
}

#[test]
fn config_entries_name_the_field() {
    let entry = |conn: &str, db: &str, user: &str, addr: &str, method: &str| HbaEntry {
        conn_type: conn.into(),
        database: db.into(),
        user: user.into(),
        address: addr.into(),
        method: method.into(),
    };
    let rule = HbaRule::from_entry(
        &entry("host", "app, other", "all", "10.0.0.0/8", "md5"),
        "hba[0]".into(),
    )
    .expect("valid");
    let rules = HbaRules::new(vec![rule]);
    assert_eq!(
        method(&rules, false, "other", "x", "10.9.9.9"),
        Some(AuthMethod::Md5)
    );
    let bad = [
        (entry("hostx", "all", "all", "all", "md5"), "type"),
        (entry("host", "", "all", "all", "md5"), "database"),
        (entry("host", "all", "+g", "all", "md5"), "user"),
        (entry("host", "all", "all", "10.0.0.1", "md5"), "address"),
        (entry("host", "all", "all", "all", "ldap"), "method"),
        (entry("hostnossl", "all", "all", "all", "cert"), "method"),
    ];
    for (entry, field) in bad {
        let (got, _) = HbaRule::from_entry(&entry, "hba[0]".into()).expect_err(field);
        assert_eq!(got, field);
    }
}

#[test]
fn netmasks_and_prefixes() {
    assert_eq!(mask_prefix(ip("1.2.3.4"), ip("255.255.255.0")), Some(24));
    assert_eq!(mask_prefix(ip("1.2.3.4"), ip("0.0.0.0")), Some(0));
    assert_eq!(mask_prefix(ip("1.2.3.4"), ip("255.255.255.255")), Some(32));
    assert_eq!(mask_prefix(ip("::1"), ip("ffff:ffff::")), Some(32));
    assert_eq!(mask_prefix(ip("1.2.3.4"), ip("::")), None);
    let all = AddressMatch::Net {
        addr: ip("0.0.0.0"),
        prefix: 0,
    };
    assert!(address_matches(all, ip("8.8.8.8")));
    assert!(!address_matches(all, ip("::2")));
    let v6 = AddressMatch::Net {
        addr: ip("::"),
        prefix: 0,
    };
    assert!(address_matches(v6, ip("::2")));
}

#[test]
fn local_rules_match_only_unix_socket_clients() {
    let text = "local app all md5\nlocal all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n";
    let (rules, skipped) = HbaRules::parse_file(text).expect("valid");
    assert!(skipped.is_empty());
    let unix = |db| rules.decide(false, db, "u", None).map(|r| r.method);
    assert_eq!(unix("app"), Some(AuthMethod::Md5));
    assert_eq!(unix("other"), Some(AuthMethod::Trust));
    // TCP clients never match a local line, and Unix clients never a host line.
    assert_eq!(
        method(&rules, false, "app", "u", "127.0.0.1"),
        Some(AuthMethod::ScramSha256)
    );
    let host_only = HbaRules::parse_file("host all all 0.0.0.0/0 trust\n").unwrap().0;
    assert!(host_only.decide(false, "app", "u", None).is_none());
    assert!(HbaRules::parse_file("local all all trust extra\n").is_err());
}
