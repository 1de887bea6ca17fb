//! xen-vif: Xen's vif hotplug scripts as one static binary.
//!
//! Dependencies point one way: `main` → `invocation` → `modes` → `netlink`, `sysctl`,
//! `xenstore`. `netlink` knows nothing about Xen.

pub mod addr;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deadline;
pub mod dhcp_hosts;
pub mod docs;
pub mod hooks;
pub mod hotplug;
pub mod hotplug_log;
pub mod ifname;
pub mod invocation;
pub mod lock;
pub mod log;
pub mod modes;
pub mod netlink;
pub mod network_script;
pub mod nftables;
pub mod output;
pub mod ovsdb;
pub mod ovsspec;
pub mod plan;
pub mod rundir;
pub mod status;
pub mod sysctl;
pub mod trust;
pub mod vlanspec;
pub mod watchdog;
pub mod xenstore;

use invocation::Personality;

/// The environment as the contract reads it. A value that is not UTF-8 is passed on with its
/// bad bytes replaced, so validation refuses it instead of the program panicking.
fn env_var(key: &str) -> Option<String> {
    std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
}

/// What std's own start-up would have done that xen-vif relies on (see main.rs).
pub fn start() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;
    // A closed standard descriptor would be reused by the next open file or socket, and a
    // message meant for stderr would land in it: point any closed one at /dev/null.
    // SAFETY: only polled; a closed descriptor is reported as POLLNVAL, never used.
    let fds = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let mut polled = fds.map(|fd| PollFd::new(fd, PollFlags::empty()));
    if poll(&mut polled, PollTimeout::ZERO).is_ok() {
        for (fd, p) in polled.iter().enumerate() {
            if p.revents().is_some_and(|r| r.contains(PollFlags::POLLNVAL)) {
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_RDWR,
                    nix::sys::stat::Mode::empty(),
                );
                // open(2) returns the lowest free descriptor: this one.
                if let Ok(null) = null {
                    debug_assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&null), fd as i32);
                    std::mem::forget(null);
                }
            }
        }
    }
    // A reader that went away (`xen-vif status | head`, a closed log pipe) must give EPIPE, not
    // kill a hotplug half way through its changes.
    // SAFETY: ignoring a signal installs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// Entry point: dispatch on argv[0]. Returns the exit status.
pub fn main_entry() -> i32 {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let personality = Personality::from_argv0(args.first().map_or("", String::as_str));
    watchdog::install(personality);
    match personality {
        Personality::Cli => cli::run(args),
        Personality::NetworkBridge
        | Personality::NetworkRoute
        | Personality::NetworkNat
        | Personality::NetworkPrebuilt => {
            let verbose = env_var("XEN_VIF_LOG").is_some_and(|v| v == "debug");
            log::init(personality.name(), verbose);
            network_script::run_personality(personality, &args[1..])
        }
        p => {
            let verbose = env_var("XEN_VIF_LOG").is_some_and(|v| v == "debug");
            log::init(p.name(), verbose);
            hotplug::run_personality(p, &args[1..], &env_var)
        }
    }
}
