//! Per-host entries for a DHCP server that re-reads its host files on SIGHUP: dnsmasq's
//! `--dhcp-hostsfile` (`MAC,set:TAG,ADDRESS,NAME` per line) and `--dhcp-optsfile`
//! (`tag:TAG,option:router,ADDRESS`). Each entry owns the lines carrying its tag; every change
//! rewrites the file whole (a temporary beside it, then rename), under one lock, so the server
//! never reads half a file and two hotplugs never lose each other's lines.
//!
//! The files must be readable by the server after it drops root, so unlike /run/xen-vif they
//! are 0644 in a directory the administrator chooses (made 0755 when missing).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::log;

/// Where the entries go, and which server to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    pub hosts: PathBuf,
    pub options: Option<PathBuf>,
    /// The server's pid file: it gets SIGHUP after each change.
    pub pid_file: Option<PathBuf>,
}

/// One client's fixed address, name and router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub name: String,
    pub router: Ipv4Addr,
}

impl Entry {
    /// The tag that marks this entry's lines in both files.
    pub fn tag(&self) -> String {
        tag(&self.name)
    }

    pub fn hosts_line(&self) -> String {
        let mut mac = String::new();
        for (i, b) in self.mac.iter().enumerate() {
            let _ = write!(mac, "{}{b:02x}", if i > 0 { ":" } else { "" });
        }
        format!("{mac},set:{},{},{}", self.tag(), self.ip, self.name)
    }

    pub fn options_line(&self) -> String {
        format!("tag:{},option:router,{}", self.tag(), self.router)
    }
}

fn tag(name: &str) -> String {
    format!("xen-vif-{name}")
}

/// Whether `line` (of either file) belongs to the entry tagged `tag`.
fn is_tagged(line: &str, tag: &str) -> bool {
    line.split(',')
        .any(|f| f.strip_prefix("set:").or(f.strip_prefix("tag:")) == Some(tag))
}

fn read(path: &Path) -> Result<String> {
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut s = String::new();
    f.read_to_string(&mut s)
        .with_context(|| format!("read {}", path.display()))?;
    Ok(s)
}

/// Whether the files hold exactly `entry` (and nothing else under its tag).
pub fn has(files: &Files, entry: &Entry) -> Result<bool> {
    let tag = entry.tag();
    let exactly = |text: &str, line: &str| {
        let mine: Vec<&str> = text.lines().filter(|l| is_tagged(l, &tag)).collect();
        mine == [line]
    };
    if !exactly(&read(&files.hosts)?, &entry.hosts_line()) {
        return Ok(false);
    }
    match &files.options {
        Some(o) => Ok(exactly(&read(o)?, &entry.options_line())),
        None => Ok(true),
    }
}

/// Whether the files hold anything under `name`'s tag.
pub fn has_name(files: &Files, name: &str) -> Result<bool> {
    let tag = tag(name);
    for p in std::iter::once(&files.hosts).chain(&files.options) {
        if read(p)?.lines().any(|l| is_tagged(l, &tag)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Add (or replace) `entry`, then tell the server.
pub fn put(files: &Files, entry: &Entry) -> Result<()> {
    let _lock = lock()?;
    let tag = entry.tag();
    let mut changed = rewrite(&files.hosts, &tag, Some(&entry.hosts_line()))?;
    if let Some(o) = &files.options {
        changed |= rewrite(o, &tag, Some(&entry.options_line()))?;
    }
    if changed {
        hangup(files.pid_file.as_deref())?;
    }
    Ok(())
}

/// Remove the entry named `name` (nothing there is fine), then tell the server.
pub fn remove(files: &Files, name: &str) -> Result<()> {
    let _lock = lock()?;
    let tag = tag(name);
    let mut changed = rewrite(&files.hosts, &tag, None)?;
    if let Some(o) = &files.options {
        changed |= rewrite(o, &tag, None)?;
    }
    if changed {
        hangup(files.pid_file.as_deref())?;
    }
    Ok(())
}

fn lock() -> Result<nix::fcntl::Flock<fs::File>> {
    crate::lock::lock_file(&Path::new(crate::rundir::RUN_DIR).join("dhcp-hosts.lock"))
}

/// Replace the lines tagged `tag` by `line`; returns whether the file changed.
fn rewrite(path: &Path, tag: &str, line: Option<&str>) -> Result<bool> {
    let shown = path.display();
    let old = read(path)?;
    let mut new = String::new();
    for l in old.lines().filter(|l| !is_tagged(l, tag)) {
        new.push_str(l);
        new.push('\n');
    }
    if let Some(l) = line {
        new.push_str(l);
        new.push('\n');
    }
    if new == old {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{shown} names no file"))?;
    let tmp = dir.join(format!(".{}.xen-vif-tmp", file_name.to_string_lossy()));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", tmp.display())),
    }
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("write {shown}"))?;
    Ok(true)
}

/// SIGHUP to the pid in `pid_file`. The pid is believed only from a regular file that group and
/// others cannot write, owned by root or by the user the named process runs as (dnsmasq hands
/// its pid file to the user it drops to): that user could signal its own process anyway, so a
/// pid file can never make root signal someone else's process. A missing file or process is a
/// server that is not running: it reads the files when it starts.
fn hangup(pid_file: Option<&Path>) -> Result<()> {
    let Some(path) = pid_file else {
        return Ok(());
    };
    let shown = path.display();
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::warn(&format!("{shown} does not exist: no DHCP server to tell"));
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("read pid file {shown}")),
    };
    let meta = f
        .metadata()
        .with_context(|| format!("read pid file {shown}"))?;
    if !meta.is_file() || meta.mode() & 0o022 != 0 {
        bail!(
            "pid file {shown} must be a regular file that group and others cannot write (mode \
             {:o}): not signalling",
            meta.mode() & 0o7777
        );
    }
    let mut text = String::new();
    f.take(64)
        .read_to_string(&mut text)
        .with_context(|| format!("read pid file {shown}"))?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
        .with_context(|| format!("pid file {shown} holds no process id ({:?})", text.trim()))?;
    if meta.uid() != 0 {
        let runs_as = fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
        match runs_as {
            Ok(uid) if uid == meta.uid() => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn(&format!("{shown} names process {pid}, which is gone"));
                return Ok(());
            }
            _ => bail!(
                "pid file {shown} is owned by uid {} but names process {pid} of another user: \
                 not signalling",
                meta.uid()
            ),
        }
    }
    match kill(Pid::from_raw(pid), Signal::SIGHUP) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => {
            log::warn(&format!("{shown} names process {pid}, which is gone"));
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("signal process {pid} ({shown})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            mac: [0x00, 0x16, 0x3e, 0x00, 0x00, 0x05],
            ip: "10.0.5.1".parse().unwrap(),
            name: "dom5".into(),
            router: "10.0.5.128".parse().unwrap(),
        }
    }

    #[test]
    fn rewrites_keep_other_lines_and_replace_ours() {
        let dir = std::env::temp_dir().join(format!("xen-vif-dhcp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let files = Files {
            hosts: dir.join("sub/hosts"),
            options: None,
            pid_file: None,
        };
        let e = entry();
        assert!(!has(&files, &e).unwrap());
        // A missing directory and file are made; the file is readable by the server.
        assert!(rewrite(&files.hosts, &e.tag(), Some(&e.hosts_line())).unwrap());
        assert_eq!(fs::metadata(&files.hosts).unwrap().mode() & 0o777, 0o644);
        assert!(has(&files, &e).unwrap());
        fs::write(
            &files.hosts,
            format!("# kept\nother,10.9.9.9,x\n{}\n", e.hosts_line()),
        )
        .unwrap();
        // The same entry again changes nothing; a new MAC replaces the old line.
        assert!(!rewrite(&files.hosts, &e.tag(), Some(&e.hosts_line())).unwrap());
        let moved = Entry {
            mac: [0x00, 0x16, 0x3e, 0x00, 0x00, 0x06],
            ..e.clone()
        };
        assert!(rewrite(&files.hosts, &e.tag(), Some(&moved.hosts_line())).unwrap());
        assert!(!has(&files, &e).unwrap() && has(&files, &moved).unwrap());
        assert!(has_name(&files, "dom5").unwrap() && !has_name(&files, "dom6").unwrap());
        assert!(rewrite(&files.hosts, &e.tag(), None).unwrap());
        assert_eq!(
            fs::read_to_string(&files.hosts).unwrap(),
            "# kept\nother,10.9.9.9,x\n"
        );
        assert!(!rewrite(&files.hosts, &e.tag(), None).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_as_dnsmasq_reads_them() {
        let e = entry();
        assert_eq!(
            e.hosts_line(),
            "00:16:3e:00:00:05,set:xen-vif-dom5,10.0.5.1,dom5"
        );
        assert_eq!(
            e.options_line(),
            "tag:xen-vif-dom5,option:router,10.0.5.128"
        );
        assert!(is_tagged(&e.hosts_line(), "xen-vif-dom5"));
        assert!(is_tagged(&e.options_line(), "xen-vif-dom5"));
        // dom5 is not dom5-2, and a comment or someone else's line is never ours.
        assert!(!is_tagged(&e.hosts_line(), "xen-vif-dom5-2"));
        assert!(!is_tagged("# set:xen-vif-dom5", "xen-vif-dom5"));
        assert!(!is_tagged(
            "00:16:3e:00:00:09,10.0.9.1,other",
            "xen-vif-dom5"
        ));
    }
}
