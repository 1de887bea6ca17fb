//! What the output commands (`status`, `check-config`, `--dry-run`, `generate`, `--help`) write
//! to stdout, and what a failed write means.
//!
//! SIGPIPE is ignored (`start`: a hotplug must not die half way through its changes), so a
//! reader that went away gives EPIPE. For an output command that is the reader's choice
//! (`xen-vif status | head -1`), not a failure: the command stops writing and exits 0 without
//! a word. Exit 0, not 141 (a shell's "killed by SIGPIPE"): nothing went wrong for the caller
//! to handle, and `set -o pipefail` scripts must not fail on `| head`. Any other write error
//! (ENOSPC on `>/dev/full`, EIO) is an error: one line on stderr and exit 1.
//! A `println!` that fails panics; the panic hook (`watchdog`) turns one that slipped through
//! into the same outcome, but output goes through here.

use std::io::{self, Write};

/// Write `text` to stdout and flush. EPIPE counts as done (see above); any other failure is
/// returned, with what it was.
pub fn print(text: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("write to standard output: {e}"),
        )),
        Ok(()) => Ok(()),
    }
}

/// `print`, for callers with nowhere to return an error (a plan listing in a dry run, which
/// has changed nothing): a failure ends the process with one line and exit 1.
pub fn print_or_exit(text: &[u8]) {
    if let Err(e) = print(text) {
        crate::log::error(&e.to_string());
        std::process::exit(1);
    }
}

/// A panic payload from a failed `print!`/`println!`: the exit status it stands for (0 for a
/// reader that went away, 1 otherwise) and, for 1, the line to say.
pub fn failed_print(payload: &str) -> Option<(i32, String)> {
    let why = payload.strip_prefix("failed printing to stdout: ")?;
    if why.starts_with("Broken pipe") {
        return Some((0, String::new()));
    }
    Some((1, format!("write to standard output: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_prints_are_recognised() {
        assert_eq!(
            failed_print("failed printing to stdout: Broken pipe (os error 32)"),
            Some((0, String::new()))
        );
        assert_eq!(
            failed_print("failed printing to stdout: No space left on device (os error 28)"),
            Some((
                1,
                "write to standard output: No space left on device (os error 28)".into()
            ))
        );
        assert_eq!(failed_print("index out of bounds"), None);
    }
}
