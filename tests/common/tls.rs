//! TLS fixtures shared by the TLS test binaries: a CA and certificates generated once per test
//! binary with rcgen, configs with a `[tls]` section, and psql with libpq TLS settings.

use super::{base_config_toml, pg, pg_tool_cmd, APP_DB, APP_PASSWORD, APP_USER};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use tidepool::config::Config;

/// Certificates in a temp dir: a CA, a server certificate for 127.0.0.1 / localhost, and client
/// certificates with CN `app` and CN `intruder`.
pub struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    pub server_der: Vec<u8>,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    // libpq refuses client keys readable by others.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tidepool test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
            write_private(&dir.join(format!("{name}.key")), &key.serialize_pem());
            cert.der().to_vec()
        };
        let server_der = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "localhost",
            "server",
        );
        leaf(Vec::new(), APP_USER, "client-app");
        leaf(Vec::new(), "intruder", "client-intruder");
        Pki {
            _dir: tmp,
            dir,
            server_der,
        }
    })
}

/// The base config (backend: the shared test PostgreSQL) with a `[tls]` section.
pub fn config_with_tls(tls: &str) -> Config {
    let text = format!("{}\n[tls]\n{tls}\n", base_config_toml(pg()));
    Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}"))
}

pub fn client_tls(mode: &str) -> String {
    let p = pki();
    format!(
        "client_tls_mode = \"{mode}\"\nclient_tls_cert_file = {:?}\nclient_tls_key_file = {:?}\n\
         client_tls_ca_file = {:?}\n",
        p.path("server.crt"),
        p.path("server.key"),
        p.path("ca.crt")
    )
}

/// psql at `addr` as `app` with libpq TLS settings; returns its output.
pub fn psql(addr: SocketAddr, env: &[(&str, &str)], sql: &str) -> Output {
    let mut command = pg_tool_cmd("psql", addr, APP_USER, APP_PASSWORD, APP_DB);
    command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    // No stray ~/.postgresql certificates: only what the test names.
    let none = pki().path("none");
    command.env("PGSSLCERT", &none).env("PGSSLKEY", &none);
    command.env("PGSSLROOTCERT", pki().path("ca.crt"));
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("psql runs")
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "psql failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn assert_fails_with(out: &Output, needle: &str) {
    let all = text(out);
    assert!(!out.status.success(), "psql should have failed: {all}");
    assert!(all.contains(needle), "expected {needle:?} in: {all}");
}

pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}
