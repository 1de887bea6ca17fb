//! One line per hotplug action in `/var/log/xen/xen-hotplug.log`, where Xen administrators look
//! (the stock scripts append their stderr there). Written only when the file's directory exists,
//! with one `write(2)` on an `O_APPEND` descriptor so concurrent hotplugs never interleave
//! within a line; any failure is ignored: the log never fails a hotplug.
//!
//! Format (UTC, fields separated by single spaces, the message last so it may contain spaces):
//! `2026-11-05T09:14:03.512817Z vif-bridge[4242] domain=5 devid=0 device=vif5.0 online
//!  mode=bridge result=ok duration_us=812`
//! and on failure `... result=error duration_us=903 error=<the hotplug-error text>`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::invocation::Call;
use crate::trust;

/// What one action did, as the log line tells it.
pub struct Entry<'a> {
    pub script: &'a str,
    pub call: &'a Call,
    pub domid: Option<u32>,
    pub devid: Option<u32>,
    pub device: &'a str,
    pub error: Option<&'a str>,
    pub duration: Duration,
}

pub fn line(e: &Entry, now: SystemTime) -> String {
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mode = e.call.mode;
    let mut s = format!(
        "{} {}[{}] domain={} devid={} device={} {} mode={} result={} duration_us={}",
        utc_timestamp(now),
        e.script,
        std::process::id(),
        opt(e.domid),
        opt(e.devid),
        e.device,
        e.call.command,
        mode,
        if e.error.is_some() { "error" } else { "ok" },
        e.duration.as_micros()
    );
    if let Some(msg) = e.error {
        // One entry, one line, whatever the message holds.
        s.push_str(" error=");
        s.extend(msg.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
    s.push('\n');
    s
}

/// Append the entry to `path` if its directory exists. Never fails.
///
/// Root appends here, so the directory (and the file, if there) must pass the trust rule: in a
/// directory others can write, a symlink of theirs would make root append to any file.
pub fn append(path: &Path, e: &Entry) {
    let Some(dir) = path.parent() else { return };
    match trust::check(dir, trust::Kind::Directory) {
        Ok(Ok(())) => {}
        Err(_) => return,
        Ok(Err(u)) => {
            crate::log::warn(&format!("not logging to {}: {u}", path.display()));
            return;
        }
    }
    match trust::check(path, trust::Kind::File) {
        Ok(Ok(())) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return,
        Ok(Err(u)) => {
            crate::log::warn(&format!("not logging to {}: {u}", path.display()));
            return;
        }
    }
    let text = line(e, SystemTime::now());
    // mode 0640 like the rest of /var/log/xen (root:adm 2750 on Debian); O_APPEND makes the
    // single write atomic with respect to other writers.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(text.as_bytes());
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` without a time-zone database (a static binary has none to trust).
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{Command, Mode, TypeIf, Words};

    fn call() -> Call {
        Call {
            script: "vif-bridge",
            mode: Mode::Bridge,
            command: Command::Online,
            type_if: TypeIf::Vif,
            words: Words::default(),
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(951_827_696, 123_456_000); // leap day 2000
        assert_eq!(utc_timestamp(t), "2000-02-29T12:34:56.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(utc_timestamp(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn one_line_per_entry() {
        let c = call();
        let e = Entry {
            script: "vif-bridge",
            call: &c,
            domid: Some(5),
            devid: Some(0),
            device: "vif5.0",
            error: Some("could not find\nbridge"),
            duration: Duration::from_micros(1234),
        };
        let l = line(&e, UNIX_EPOCH);
        assert!(
            l.starts_with("1970-01-01T00:00:00.000000Z vif-bridge["),
            "{l}"
        );
        assert!(
            l.ends_with(
                "] domain=5 devid=0 device=vif5.0 online mode=bridge result=error \
                 duration_us=1234 error=could not find bridge\n"
            ),
            "{l}"
        );
        assert_eq!(l.matches('\n').count(), 1);
    }
}
