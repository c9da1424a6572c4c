//! Telling a service manager how tidepool is doing (systemd's `Type=notify`, through
//! `$NOTIFY_SOCKET`): ready once it listens, reloading during a SIGHUP, stopping. Without
//! `$NOTIFY_SOCKET` (not under systemd) each call does nothing.

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
