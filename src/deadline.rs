//! One time budget for a run, that every blocking wait draws on: xenstore requests on every
//! transport, lock waits, the udev gate, netlink receives, hooks, OVSDB. libxl SIGKILLs a
//! hotplug script after 40 s and then runs `offline`; a run that cannot finish must instead give
//! up early enough to undo its changes and write `hotplug-error` itself.
//!
//! The budget is per thread: a one-shot run has one (from process start), and a resident
//! process gives each action its own with [`Deadline::enter`]. The SIGALRM backstop in
//! `watchdog` stays, for anything that slips past.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// The work of one action: what is left of libxl's 40 s after this goes to undo and reporting.
pub const WORK: Duration = Duration::from_secs(28);
/// Undo and the final report get this much more, past the action's budget, once: the SIGALRM
/// backstop (`watchdog::DEADLINE_SECS`) fires after it, libxl's kill after that.
pub const CLEANUP: Duration = Duration::from_secs(5);

/// The point in time every wait of this action must end by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    start: Instant,
    end: Instant,
    /// Already extended by [`CLEANUP`]: it is never extended twice.
    cleanup: bool,
}

thread_local! {
    static CURRENT: Cell<Option<Deadline>> = const { Cell::new(None) };
}

/// The process's own budget, fixed at first use (`start` calls it first thing).
/// `XEN_VIF_BUDGET=<seconds>` can only shorten it (tests of hung peers, a cautious caller).
fn process() -> Deadline {
    static PROCESS: std::sync::OnceLock<Deadline> = std::sync::OnceLock::new();
    *PROCESS.get_or_init(|| {
        let asked = std::env::var("XEN_VIF_BUDGET")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        Deadline::after(asked.map_or(WORK, |a| a.min(WORK)))
    })
}

/// Fix the process's budget now, at start-up.
pub fn start() {
    let _ = process();
}

/// This thread's deadline: the action's own, else the process's.
pub fn current() -> Deadline {
    CURRENT.with(Cell::get).unwrap_or_else(process)
}

/// What is left of this thread's budget (zero once spent).
pub fn remaining() -> Duration {
    current().remaining()
}

/// `Err(Expired)` naming `what` once this thread's budget is spent.
pub fn check(what: &str) -> Result<Duration, Expired> {
    current().check(what)
}

/// Past its budget, an action still has [`CLEANUP`] to take its changes back and report; call
/// this when starting that, and the waits of the undo draw on the extension.
pub fn enter_cleanup() {
    let d = current();
    if !d.cleanup {
        let cleanup = Deadline {
            end: d.end + CLEANUP,
            cleanup: true,
            ..d
        };
        CURRENT.with(|c| c.set(Some(cleanup)));
    }
}

/// The budget ran out while waiting for something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub what: String,
    pub budget: Duration,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up waiting for {} ({} s budget of the run spent)",
            self.what,
            self.budget.as_secs()
        )
    }
}

impl std::error::Error for Expired {}

impl Deadline {
    /// A budget of `d` from now.
    pub fn after(d: Duration) -> Deadline {
        let start = Instant::now();
        Deadline {
            start,
            end: start + d,
            cleanup: false,
        }
    }

    pub fn remaining(self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    pub fn expired(self) -> bool {
        self.remaining().is_zero()
    }

    /// What is left, or `Err(Expired)` naming `what`.
    pub fn check(self, what: &str) -> Result<Duration, Expired> {
        match self.remaining() {
            d if d.is_zero() => Err(Expired {
                what: what.to_string(),
                budget: self.end - self.start,
            }),
            d => Ok(d),
        }
    }

    /// The remaining time as a poll(2) timeout in milliseconds, rounded up so a wait never
    /// spins on a sub-millisecond rest.
    pub fn poll_millis(self) -> i32 {
        let r = self.remaining();
        if r.is_zero() {
            return 0;
        }
        i32::try_from(r.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    }

    /// Make this the thread's deadline until the guard drops (a resident process's action).
    pub fn enter(self) -> Entered {
        let prev = CURRENT.with(|c| c.replace(Some(self)));
        Entered(prev)
    }
}

/// Restores the thread's previous deadline.
pub struct Entered(Option<Deadline>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_names_what_was_awaited() {
        let _g = Deadline::after(Duration::ZERO).enter();
        let e = check("the lock /run/xen-vif/vif5.0.lock").unwrap_err();
        assert_eq!(
            e.to_string(),
            "gave up waiting for the lock /run/xen-vif/vif5.0.lock (0 s budget of the run spent)"
        );
        assert_eq!(current().poll_millis(), 0);
    }

    #[test]
    fn entered_deadlines_nest_and_restore() {
        let outer = current();
        {
            let _g = Deadline::after(Duration::from_secs(3)).enter();
            assert!(remaining() <= Duration::from_secs(3));
            assert!(remaining() > Duration::from_secs(2));
            assert!(current().poll_millis() > 2000);
        }
        assert_eq!(current(), outer);
    }

    #[test]
    fn cleanup_extends_once() {
        let _g = Deadline::after(Duration::ZERO).enter();
        assert!(check("x").is_err());
        enter_cleanup();
        enter_cleanup();
        let left = remaining();
        assert!(
            left > CLEANUP - Duration::from_secs(1) && left <= CLEANUP,
            "{left:?}"
        );
    }
}
