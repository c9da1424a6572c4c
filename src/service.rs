//! Living under a service manager: telling it how tidepool is doing (systemd's `Type=notify`,
//! through `$NOTIFY_SOCKET`: ready once it listens, reloading during a SIGHUP, stopping; without
//! `$NOTIFY_SOCKET` each call does nothing), and checking at start that the open-files limit
//! it gave us (`LimitNOFILE`, `ulimit -n`) fits `max_client_conn` and the pools.

use crate::config::Config;
use sd_notify::NotifyState;

/// Listening and serving: `systemctl start` returns now.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload has started; systemd 253+ wants the monotonic clock with it. Follow with [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::debug!(error = %e, "no monotonic clock for the reload notification"),
    }
}

/// The stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // The manager may be gone (or the socket wrong): tidepool runs on regardless.
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Descriptors the configuration may need at once: one per client, one per server connection
/// (every database × user × node pool full, reserve included), and a few for listeners,
/// health checks and logs.
pub fn expected_fds(config: &Config) -> u64 {
    let users = config.users.len().max(1) as u64;
    let nodes = config.nodes.len().max(1) as u64;
    let per_pool = (config.pool.default_pool_size + config.pool.reserve_pool_size) as u64;
    let pools = config.databases.len() as u64 * users * nodes;
    config.proxy.max_client_conn as u64 + pools * per_pool + 2 * nodes + 32
}

/// The soft open-files limit, from `/proc/self/limits` (`None` where there is no such file).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_files(&text)
}

fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Logs the limit against what the configuration may need; warns when it is too low (clients
/// past it would be refused by the kernel, not with 53300).
pub fn check_open_files(config: &Config) {
    let expected = expected_fds(config);
    match open_files_limit() {
        Some(limit) if limit < expected => tracing::warn!(
            limit,
            expected,
            max_client_conn = config.proxy.max_client_conn,
            "the open-files limit is below what max_client_conn and the pools may need: raise LimitNOFILE (systemd) or ulimit -n"
        ),
        Some(limit) => tracing::info!(limit, expected, "open-files limit"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit_and_sizes_what_the_config_needs() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63408                63408                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_open_files(limits), Some(1024));
        assert_eq!(
            soft_open_files("Max open files            unlimited            unlimited            files"),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files("nothing here"), None);

        let config = Config::from_toml(
            "[proxy]\nmax_client_conn = 1000\n[pool]\ndefault_pool_size = 10\nreserve_pool_size = 2\n\
             [[nodes]]\nhost = \"a\"\n[[nodes]]\nhost = \"b\"\n[databases.x]\n[databases.y]\n\
             [[users]]\nname = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        // 1000 clients + 2 databases × 1 user × 2 nodes × 12 + 2 × 2 health + 32.
        assert_eq!(expected_fds(&config), 1000 + 48 + 4 + 32);
    }
}
