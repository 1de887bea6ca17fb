//! The udev gate: udev runs the scripts only when nothing else does. libxl with
//! `run_hotplug_scripts=1` (the default) writes `libxl/disable_udev` and runs them itself, and a
//! running `xen-vif daemon` handles vifs and taps; either way udev's call must do nothing, or
//! every action would run twice.

use super::Env;
use crate::lock;
use crate::xenstore::{Store, XenStore};

/// Why a udev call (`UDEV_CALL` set) must do nothing, or `None` to go on (also for any call
/// udev did not make).
pub(super) fn someone_else_acts(env: Env) -> Option<String> {
    if env("UDEV_CALL").is_none_or(|v| v.is_empty()) {
        return None;
    }
    if libxl_runs_hotplug() {
        return Some(
            "called by udev, but libxl runs the hotplug scripts (libxl/disable_udev): nothing to do"
                .into(),
        );
    }
    lock::daemon_pid().map(|pid| {
        format!(
            "called by udev, but xen-vif daemon (pid {pid}) handles the vifs and taps: nothing to do"
        )
    })
}

/// Unreadable xenstore: go on, and let the action report the real error.
fn libxl_runs_hotplug() -> bool {
    XenStore::open().is_ok_and(|s| s.read("libxl/disable_udev").is_ok_and(|v| v.is_some()))
}
