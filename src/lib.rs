//! xen-vif: Xen's vif hotplug scripts as one static binary.
//!
//! Dependencies point one way: `main` → `invocation` → `modes` → `netlink`, `sysctl`,
//! `xenstore`. `netlink` knows nothing about Xen.

pub mod cli;
pub mod config;
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
pub mod plan;
pub mod status;
pub mod sysctl;
pub mod vlanspec;
pub mod watchdog;
pub mod xenstore;

use invocation::Personality;

/// The environment as the contract reads it. A value that is not UTF-8 is passed on with its
/// bad bytes replaced, so validation refuses it instead of the program panicking.
fn env_var(key: &str) -> Option<String> {
    std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
}

/// Entry point: dispatch on argv[0]. Returns the exit status.
pub fn main_entry() -> i32 {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let personality = Personality::from_argv0(args.first().map_or("", String::as_str));
    watchdog::install(personality.name());
    match personality {
        Personality::Cli => cli::run(args),
        Personality::NetworkBridge | Personality::NetworkRoute | Personality::NetworkPrebuilt => {
            let verbose = env_var("XEN_VIF_LOG").is_some_and(|v| v == "debug");
            log::init(personality.name(), verbose, false);
            network_script::run_personality(personality, &args[1..])
        }
        p => {
            let verbose = env_var("XEN_VIF_LOG").is_some_and(|v| v == "debug");
            log::init(p.name(), verbose, false);
            hotplug::run_personality(p, &args[1..], &env_var)
        }
    }
}
