//! Never hang: libxl SIGKILLs a hotplug script after 40 s and then runs `offline`. Every wait in
//! xen-vif draws on the run's one deadline (`crate::deadline`), which leaves time to undo and
//! report; this alarm is the backstop for anything that slips past it, and a panic hook that
//! still reports.

use std::io::Write;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::invocation::Personality;

/// Seconds before the backstop fires: after the deadline and its clean-up time, before libxl's
/// kill.
pub const DEADLINE_SECS: u32 = 35;

extern "C" fn on_alarm(_: nix::libc::c_int) {
    const MSG: &[u8] = b"xen-vif: gave up after 35 s (deadline)\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
    unsafe {
        nix::libc::write(2, MSG.as_ptr().cast(), MSG.len());
        nix::libc::_exit(1);
    }
}

pub fn install(personality: Personality) {
    let action = SigAction::new(
        SigHandler::Handler(on_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    let _ = unsafe { sigaction(Signal::SIGALRM, &action) };
    // A caller's blocked SIGALRM (the mask is inherited across exec) would disarm the backstop.
    let mut alarm = SigSet::empty();
    alarm.add(Signal::SIGALRM);
    let _ = alarm.thread_unblock();
    crate::deadline::start();
    nix::unistd::alarm::set(DEADLINE_SECS);
    let ident = personality.name();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // A `println!` whose write failed: what `output` would have done, not a bug report.
        if let Some((code, why)) = crate::output::failed_print(payload) {
            if code != 0 {
                crate::log::error(&why);
            }
            // SAFETY: _exit(2) ends the process at once; nothing is left to unwind, and the
            // stdout buffer that just failed must not be flushed again.
            unsafe { nix::libc::_exit(code) };
        }
        // One line, as every report (the panic message spans lines).
        let msg = crate::hotplug::one_line(format!("{ident}: internal error: {info}"));
        let _ = writeln!(std::io::stderr(), "{msg}");
        crate::log::error(&msg);
        // libxl reads hotplug-error; a panic must still tell it something true. Only a vif
        // hotplug reports there: the command line and the network scripts have no backend
        // (an administrator's XENBUS_PATH in their shell is not one).
        if !VIF_HOTPLUG.contains(&personality) {
            return;
        }
        if let Some(backend) = std::env::var("XENBUS_PATH")
            .ok()
            .filter(|p| crate::invocation::parse_backend_path(p).is_ok())
        {
            if let Ok(store) = crate::xenstore::XenStore::open() {
                use crate::xenstore::Store;
                let _ = store.write(&format!("{backend}/hotplug-error"), &msg);
                let _ = store.write(&format!("{backend}/hotplug-status"), "error");
            }
        }
    }));
}

/// The personalities libxl or udev run for a backend, which report in its `hotplug-error`.
const VIF_HOTPLUG: [Personality; 3] = [
    Personality::VifBridge,
    Personality::VifRoute,
    Personality::VifSetup,
];
