//! `[peers]`: the instance id tidepool writes into its cancel keys and where the other instances
//! listen (what forwarding does with them is `client/peers.rs`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[peers]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// This instance's id in its cancel keys, 1 to 255; 0 (default) turns peering off. Not
    /// reloadable (clients' keys carry it).
    pub instance_id: u8,
    /// The other instances: id → "host:port" of their client listener. Reloadable.
    pub instances: BTreeMap<String, String>,
}

/// A `[peers]` value that makes no sense.
#[derive(Debug, PartialEq, Eq)]
pub struct PeersError {
    pub key: String,
    pub reason: String,
}

impl PeersConfig {
    pub fn validate(&self) -> Result<(), PeersError> {
        let error = |key: String, reason: &str| PeersError {
            key,
            reason: reason.to_string(),
        };
        if !self.instances.is_empty() && self.instance_id == 0 {
            return Err(error(
                "instance_id".into(),
                "must be 1 to 255 when peers.instances is set",
            ));
        }
        for (id, addr) in &self.instances {
            let key = format!("instances.{id}");
            match id.parse::<u8>() {
                Ok(0) | Err(_) => return Err(error(key, "instance ids are 1 to 255")),
                Ok(n) if n == self.instance_id => {
                    return Err(error(key, "is this instance's own id (peers.instance_id)"))
                }
                Ok(_) => {}
            }
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return Err(error(key, "expected \"host:port\""));
            }
        }
        Ok(())
    }

    /// Where the instance `id` listens, if it is a peer.
    pub fn address(&self, id: u8) -> Option<&str> {
        self.instances.get(&id.to_string()).map(String::as_str)
    }
}
