//! Reading the TOML: unknown keys and malformed durations, sizes and types refused by name, a
//! missing file named, and the listener, Unix socket and keepalive keys.

use super::*;
use std::time::Duration;

#[test]
fn unknown_keys_are_refused_by_name() {
    let cases = [
        ("[proxy]\nlisten_addr = \"127.0.0.1:1\"", "listen_addr"),
        ("[pool]\npool_size = 3", "pool_size"),
        ("[poool]\ndefault_pool_size = 3", "poool"),
        ("[[nodes]]\nhost = \"h\"\nweigth = 2", "weigth"),
        ("[databases.app]\ndatabase = \"x\"", "database"),
        ("[[users]]\nname = \"u\"\nrole = \"x\"", "role"),
    ];
    for (text, key) in cases {
        let message = refused(text);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{key}: {message}"
        );
    }
}

#[test]
fn malformed_durations_sizes_and_types_are_refused() {
    let cases = [
        ("client_login_timeout = \"5\"", "has no unit"),
        ("client_login_timeout = \"5 fortnights\"", "unknown duration unit"),
        (
            "client_login_timeout = \"-5s\"",
            "does not start with a whole number",
        ),
        (
            "client_login_timeout = \"99999999999999999999d\"",
            "does not start with a whole number",
        ),
        ("client_login_timeout = \"9999999999999999d\"", "is too large"),
        ("client_login_timeout = 5", "expected a string"),
        ("max_message_size = \"64 parsecs\"", "unknown size unit"),
        ("max_message_size = \"MB\"", "does not start with a whole number"),
        ("max_message_size = \"99999999999TB\"", "is too large"),
        ("max_message_size = 65536", "expected a string"),
        ("listen = \"localhost\"", "invalid socket address"),
        ("pool_mode = \"statement\"", "unknown variant `statement`"),
        ("max_client_conn = -1", "max_client_conn"),
    ];
    for (line, why) in cases {
        let text = Parts::with(Proxy, line).render();
        let message = refused(&text);
        let key = line.split(' ').next().expect("key");
        assert!(message.contains(why), "{line}: {message}");
        assert!(message.contains(key), "{line} must name its key: {message}");
    }
}

#[test]
fn load_names_a_missing_file() {
    let path = std::path::Path::new("/nonexistent/tidepool/pool.toml");
    let error = Config::load(path).expect_err("no such file");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().contains("/nonexistent/tidepool/pool.toml"),
        "{error}"
    );
}

#[test]
fn listeners_unix_socket_and_keepalive_keys() {
    let defaults = Parts::default().parse().expect("valid");
    let proxy = &defaults.proxy;
    assert_eq!(proxy.listen.all(), ["127.0.0.1:6432".parse().unwrap()]);
    assert_eq!(proxy.unix_socket(), None);
    assert_eq!(proxy.keepalive(), super::Keepalive::default());
    assert!(proxy.keepalive().enabled, "PgBouncer's default: keepalive on");

    let text = "listen = [\"0.0.0.0:6432\", \"[::]:6432\"]\nunix_socket_dir = \"/run/tp\"\n\
                unix_socket_mode = \"0770\"\ntcp_keepidle = \"30s\"\ntcp_keepcnt = 3\n";
    let config = Parts::with(Proxy, text).parse().expect("valid");
    let proxy = &config.proxy;
    assert_eq!(proxy.listen.all().len(), 2);
    assert_eq!(proxy.listen.to_string(), "0.0.0.0:6432,[::]:6432");
    let unix = proxy.unix_socket().expect("a socket");
    assert_eq!(unix.path(6432), std::path::Path::new("/run/tp/.s.PGSQL.6432"));
    assert_eq!(unix.mode.0, 0o770);
    assert_eq!(proxy.keepalive().idle.0, Duration::from_secs(30));
    assert_eq!(proxy.keepalive().count, 3);
    // An integer mode is taken as written (TOML octal).
    let config = Parts::with(Proxy, "unix_socket_mode = 0o700")
        .parse()
        .expect("valid");
    assert_eq!(config.proxy.unix_socket_mode.0, 0o700);

    for (line, why) in [
        ("listen = []", "at least one address"),
        ("listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]", "listed twice"),
        (
            "listen = [\"127.0.0.1:1\", \"nope\"]",
            "invalid socket address \"nope\"",
        ),
        ("unix_socket_dir = \"relative/dir\"", "absolute"),
        ("unix_socket_mode = \"0999\"", "octal"),
        ("unix_socket_mode = \"01777\"", "at most 0777"),
        ("tcp_keepidle = 5", "expected a string"),
    ] {
        let message = refused(&Parts::with(Proxy, line).render());
        assert!(message.contains(why), "{line}: {message}");
        let key = line.split(' ').next().unwrap();
        assert!(message.contains(key), "{line} must name its key: {message}");
    }
}
