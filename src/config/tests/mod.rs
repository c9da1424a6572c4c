//! Unit tests for parsing and validation: every rule names its key, unknown keys are refused,
//! defaults are the documented ones, `pool.toml.example` is valid, and secrets stay hidden.
//!
//! This file holds what the themed modules share: a valid config split by section, and
//! stored-password fixtures.

mod defaults;
mod examples;
mod rules;
mod secrets;
mod syntax;

use super::*;

/// A config section a test may replace.
#[derive(Clone, Copy)]
enum Section {
    Proxy,
    Pool,
    Nodes,
    Databases,
    Users,
}
use Section::*;

/// A valid config split by section, so a test can replace one section and keep the rest.
struct Parts([String; 5]);

impl Default for Parts {
    fn default() -> Self {
        Parts([
            String::new(),
            String::new(),
            "[[nodes]]\nhost = \"127.0.0.1\"\n".into(),
            "[databases.app]\n".into(),
            "[[users]]\nname = \"app\"\npassword = \"app-secret\"\n".into(),
        ])
    }
}

impl Parts {
    /// The default config with one section's body replaced.
    fn with(section: Section, text: impl Into<String>) -> Parts {
        let mut parts = Parts::default();
        parts.0[section as usize] = text.into();
        parts
    }

    fn render(&self) -> String {
        let [proxy, pool, nodes, databases, users] = &self.0;
        format!("[proxy]\n{proxy}\n[pool]\n{pool}\n{nodes}\n{databases}\n{users}")
    }

    fn parse(&self) -> Result<Config, ConfigError> {
        Config::from_toml(&self.render())
    }
}

/// The message of a refused config; panics if it was accepted.
fn refused(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(config) => panic!("accepted {config:?} from:\n{text}"),
        Err(error) => error.to_string(),
    }
}

/// RFC 7677's example verifier (password "pencil").
const SCRAM: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
const MD5: &str = "md5a3556571e93b0d20722ba62be61e8c2d";
