//! `[peers]`: several tidepool instances behind one address (Kubernetes, SO_REUSEPORT). A
//! CancelRequest travels on a new connection, which may land on another instance than the one
//! serving the client; each instance writes its id into the top byte of the secret of the keys it
//! hands out, so whoever receives a cancel it does not know forwards it to the instance named
//! there. A forwarded request carries the pid with its sign bit set (real and tidepool pids are
//! positive), and is never forwarded again, so misconfigured peers cannot bounce it forever.

use crate::backend::BackendKey;
use crate::client::cancel::{send_cancel_to, CancelTarget, ClientKey};
use crate::config::PeersConfig;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A secret carrying `instance_id` in its top byte (unchanged when peering is off).
pub fn mark_secret(secret: i32, instance_id: u8) -> i32 {
    if instance_id == 0 {
        return secret;
    }
    ((secret as u32 & 0x00ff_ffff) | (u32::from(instance_id) << 24)) as i32
}

/// The instance a key was handed out by (0: unknown).
pub fn instance_of(key: ClientKey) -> u8 {
    (key.secret as u32 >> 24) as u8
}

/// A forwarded request: the key it carries, and whether it was forwarded.
pub fn unwrap_forwarded(key: ClientKey) -> (ClientKey, bool) {
    if key.pid < 0 {
        (
            ClientKey {
                pid: key.pid & i32::MAX,
                secret: key.secret,
            },
            true,
        )
    } else {
        (key, false)
    }
}

/// Cancel requests being forwarded, per peer id (SHOW PEER_POOLS). Entries are created on
/// first use and kept (one per peer id ever configured: at most 255).
#[derive(Debug, Default)]
pub struct PeerCancels {
    by_peer: std::sync::Mutex<BTreeMap<u8, Arc<crate::pool::CancelCounts>>>,
}

impl PeerCancels {
    /// The counters of peer `id`.
    pub fn of(&self, id: u8) -> Arc<crate::pool::CancelCounts> {
        let mut map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_default().clone()
    }
}

/// Forwards a cancel for a key this instance does not know to the peer that handed it out,
/// counted in `cancels` while it travels.
pub async fn forward(peers: &PeersConfig, cancels: &PeerCancels, key: ClientKey) {
    let id = instance_of(key);
    if peers.instance_id == 0 || id == peers.instance_id {
        return;
    }
    let Some(addr) = peers.address(id) else {
        tracing::debug!(
            pid = key.pid,
            instance = id,
            "cancel request for an unknown peer; ignored"
        );
        return;
    };
    tracing::debug!(pid = key.pid, instance = id, %addr, "forwarding a cancel request to its peer");
    let target = CancelTarget {
        addr: Arc::from(addr),
        key: BackendKey {
            pid: key.pid | i32::MIN,
            secret: key.secret,
        },
    };
    send_cancel_to(&target, &cancels.of(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(id: u8, instances: &[(&str, &str)]) -> PeersConfig {
        PeersConfig {
            instance_id: id,
            instances: instances
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn keys_carry_the_instance_and_forwarding_is_marked_once() {
        for secret in [0, -1, 0x7fff_ffff, 0x1234_5678] {
            let key = ClientKey {
                pid: 42,
                secret: mark_secret(secret, 7),
            };
            assert_eq!(instance_of(key), 7);
            assert_eq!(key.secret as u32 & 0xff_ffff, secret as u32 & 0xff_ffff);
        }
        assert_eq!(mark_secret(-5, 0), -5, "no peering: the secret is untouched");
        let key = ClientKey { pid: 42, secret: 1 };
        assert_eq!(unwrap_forwarded(key), (key, false));
        let forwarded = ClientKey {
            pid: 42 | i32::MIN,
            secret: 1,
        };
        assert_eq!(unwrap_forwarded(forwarded), (key, true));
    }

    #[test]
    fn validation_names_the_key() {
        assert!(PeersConfig::default().validate().is_ok());
        assert!(peers(1, &[("2", "10.0.0.2:6432"), ("3", "[::1]:6432")])
            .validate()
            .is_ok());
        let key = |p: PeersConfig| p.validate().unwrap_err().key;
        assert_eq!(key(peers(0, &[("2", "h:1")])), "instance_id");
        assert_eq!(key(peers(1, &[("1", "h:1")])), "instances.1");
        assert_eq!(key(peers(1, &[("256", "h:1")])), "instances.256");
        assert_eq!(key(peers(1, &[("x", "h:1")])), "instances.x");
        assert_eq!(key(peers(1, &[("2", "h")])), "instances.2");
        assert_eq!(key(peers(1, &[("2", ":1")])), "instances.2");
        assert_eq!(key(peers(1, &[("2", "h:0")])), "instances.2");
    }
}
