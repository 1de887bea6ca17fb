// The C `main`, not Rust's: std's start-up (a stack-overflow handler that parses
// /proc/self/maps, an alternate signal stack, ~15 system calls) is a measurable part of a hotplug
// call here (BENCHMARKS.md). Arguments and environment still reach std: glibc hands them to it
// before `main` runs. What of that start-up matters is done in `start`.
#![no_main]

/// # Safety
/// Called once, by the C runtime, as the process's `main`.
#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    xen_vif::start();
    std::process::exit(xen_vif::main_entry());
}
