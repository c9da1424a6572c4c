//! The users of one configuration snapshot: `[[users]]` merged with `auth_file`, the hba rules,
//! and the auth_query source; built once per snapshot on a blocking thread.

use super::hba::{HbaFileError, HbaRule, HbaRules};
use super::md5::hex_lower;
use super::query::AuthQuery;
use super::scram::ScramVerifier;
use super::secret::Secret;
use super::userlist::{parse_userlist, UserlistError};
use crate::backend::BackendSecret;
use crate::config::{AuthMethod, Config, UserConfig};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a user's secret came from (logs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Config,
    AuthFile,
    AuthQuery,
    /// No secret at all (trust or cert for a user nobody listed).
    None,
}

/// A user as authentication needs it, with expensive derivations done in advance.
#[derive(Clone)]
pub struct UserAuth {
    /// The `[[users]]` entry, or defaults for a user known only from auth_file / auth_query.
    pub config: UserConfig,
    pub secret: Option<Secret>,
    /// For SCRAM: the stored verifier, or one derived once from a plaintext password.
    pub verifier: Option<ScramVerifier>,
    /// What tidepool can prove to PostgreSQL for this user; after a SCRAM login, the keys the
    /// client proved (pass-through).
    pub backend: BackendSecret,
    pub source: SecretSource,
}

impl std::fmt::Debug for UserAuth {
    // `secret`, `verifier` and `backend` hide themselves; listed for completeness.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAuth")
            .field("config", &self.config)
            .field("secret", &self.secret)
            .field("verifier", &self.verifier)
            .field("backend", &self.backend)
            .field("source", &self.source)
            .finish()
    }
}

impl UserAuth {
    /// A user with `secret`; derives the SCRAM verifier of a cleartext one (slow: blocking
    /// threads only).
    pub fn new(config: UserConfig, secret: Option<Secret>, source: SecretSource) -> UserAuth {
        let verifier = secret.as_ref().and_then(Secret::scram_verifier);
        let backend = backend_secret(&config, secret.as_ref());
        UserAuth {
            config,
            secret,
            verifier,
            backend,
            source,
        }
    }

    /// The method this user asked for in `[[users]]`, if any.
    pub fn configured_method(&self) -> Option<AuthMethod> {
        self.config.auth_method
    }

    /// Whether tidepool logs in to PostgreSQL under the client's own name (required for any
    /// pass-through: md5 hashes are salted with the name, SCRAM keys belong to one role).
    pub fn same_backend_name(&self) -> bool {
        self.config
            .backend_user
            .as_deref()
            .is_none_or(|b| b == self.config.name)
    }
}

/// Defaults for a user not listed in `[[users]]`.
pub fn unlisted_user(name: &str) -> UserConfig {
    UserConfig {
        name: name.to_string(),
        password: None,
        auth_method: None,
        backend_user: None,
        backend_password: None,
        pool_size: None,
        max_user_connections: None,
    }
}

/// What tidepool can prove to PostgreSQL before any client logged in.
pub fn backend_secret(config: &UserConfig, secret: Option<&Secret>) -> BackendSecret {
    if let Some(password) = &config.backend_password {
        return BackendSecret::Plain(password.clone());
    }
    let same_name = config.backend_user.as_deref().is_none_or(|b| b == config.name);
    match secret {
        Some(Secret::Plain(password)) => BackendSecret::Plain(password.clone()),
        Some(Secret::Md5(hash)) if same_name => BackendSecret::Md5Hash(format!("md5{}", hex_lower(hash))),
        _ => BackendSecret::None,
    }
}

/// Why the files an `[auth]` section names could not be used; the config is then refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("auth.auth_file {path}: {source}")]
    Userlist {
        path: String,
        #[source]
        source: UserlistError,
    },
    #[error("auth.auth_hba_file {path}: {source}")]
    Hba {
        path: String,
        #[source]
        source: HbaFileError,
    },
}

/// All users of one configuration snapshot, and how they must authenticate.
pub struct UserDirectory {
    users: HashMap<String, Arc<UserAuth>>,
    /// `None`: no rules configured (each user's method, scram-sha-256 by default).
    pub hba: Option<HbaRules>,
    pub allow_cleartext_without_tls: bool,
    /// Users looked up in PostgreSQL, when `auth_user` is set.
    pub query: Option<AuthQuery>,
    /// Seeds the doomed SCRAM exchange run for unknown users, so that a client cannot tell
    /// unknown users from wrong passwords (as PostgreSQL does); the salt is stable per name.
    pub(super) mock_seed: [u8; 32],
}

impl UserDirectory {
    /// A verifier for a user that cannot log in (unknown, or an md5-only secret), stable per
    /// name for this directory, so the exchange looks like a real one and then fails.
    pub fn doomed_verifier(&self, user: &str) -> ScramVerifier {
        ScramVerifier::mock(user, &self.mock_seed)
    }

    /// Reads auth_file and auth_hba_file and prepares every user (SCRAM verifiers for
    /// cleartext passwords: 4096 hash rounds each). Slow: call it on a blocking thread.
    pub fn build(
        config: &Config,
        backend_tls: &crate::tls::BackendTls,
    ) -> Result<UserDirectory, DirectoryError> {
        let mut users: HashMap<String, Arc<UserAuth>> = HashMap::new();
        let file_users = match &config.auth.auth_file {
            Some(path) => {
                let text = read("auth.auth_file", path)?;
                parse_userlist(&text).map_err(|source| DirectoryError::Userlist {
                    path: path.clone(),
                    source,
                })?
            }
            None => Vec::new(),
        };
        let mut from_file: HashMap<String, Secret> =
            file_users.into_iter().map(|e| (e.name, e.secret)).collect();
        for user in &config.users {
            // Validation already refused unparsable secrets.
            let listed = user.password.as_deref().and_then(|p| Secret::parse(p).ok());
            let (secret, source) = match (listed, from_file.remove(&user.name)) {
                (Some(secret), _) => (Some(secret), SecretSource::Config),
                (None, Some(secret)) => (Some(secret), SecretSource::AuthFile),
                (None, None) => (None, SecretSource::None),
            };
            let auth = UserAuth::new(user.clone(), secret, source);
            users.insert(user.name.clone(), Arc::new(auth));
        }
        for (name, secret) in from_file {
            let auth = UserAuth::new(unlisted_user(&name), Some(secret), SecretSource::AuthFile);
            users.insert(name, Arc::new(auth));
        }
        let hba = load_hba(config)?;
        let query = config.auth.auth_user.as_ref().map(|auth_user| {
            let secret = match users.get(auth_user) {
                Some(user) => user.backend.clone(),
                None => BackendSecret::None,
            };
            AuthQuery::new(config, auth_user.clone(), secret, backend_tls.clone())
        });
        let mut mock_seed = [0u8; 32];
        rand::fill(&mut mock_seed);
        Ok(UserDirectory {
            users,
            hba,
            allow_cleartext_without_tls: config.auth.allow_cleartext_without_tls,
            query,
            mock_seed,
        })
    }

    /// Reads and parses auth_file and auth_hba_file only (`tidepool check`): the errors `build`
    /// would give, without deriving any verifier.
    pub fn check_files(config: &Config) -> Result<(), DirectoryError> {
        if let Some(path) = &config.auth.auth_file {
            parse_userlist(&read("auth.auth_file", path)?).map_err(|source| DirectoryError::Userlist {
                path: path.clone(),
                source,
            })?;
        }
        load_hba(config).map(drop)
    }

    /// A user listed in `[[users]]` or auth_file.
    pub fn lookup(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.users.get(name).cloned()
    }
}

fn read(key: &'static str, path: &str) -> Result<String, DirectoryError> {
    std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
        key,
        path: path.to_string(),
        source,
    })
}

/// `[[hba]]` entries (validated with the config) or auth_hba_file; `None` when neither.
fn load_hba(config: &Config) -> Result<Option<HbaRules>, DirectoryError> {
    if let Some(path) = &config.auth.auth_hba_file {
        let text = read("auth.auth_hba_file", path)?;
        let (rules, skipped) = HbaRules::parse_file(&text).map_err(|source| DirectoryError::Hba {
            path: path.clone(),
            source,
        })?;
        if !skipped.is_empty() {
            tracing::info!(file = %path, lines = ?skipped, "hba: skipped `local` lines with a method tidepool does not implement (peer, ident)");
        }
        return Ok(Some(rules));
    }
    if config.hba.is_empty() {
        return Ok(None);
    }
    let rules = config
        .hba
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| HbaRule::from_entry(entry, format!("hba[{i}]")).ok())
        .collect();
    Ok(Some(HbaRules::new(rules)))
}
