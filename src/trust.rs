//! The trust rule for everything xen-vif runs or reads as configuration (hooks, `/bin/sh`,
//! `/etc/xen/xen-vif.toml`): xen-vif runs as root, so a file is used only if nobody but root
//! could have written it, or replaced it, or anything on the way to it.
//!
//! - the file is a regular file, owned by root, not writable by group or others;
//! - every directory from `/` down to it is owned by root and not writable by group or others,
//!   except a sticky one (`/tmp`, mode 1777), where only an entry's owner can rename or remove
//!   it: there the entry below must be root's;
//! - a symlink on the way is followed and the rule applies to both walks: along the path as
//!   given (the symlink sits in a directory only root can write, so root put it there) and
//!   along the resolved path (so the target and its directories are root's too).

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a path is not trusted: the path itself or the component that fails, and what is wrong.
#[derive(Debug)]
pub struct Untrusted {
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path.display(), self.why)
    }
}

impl std::error::Error for Untrusted {}

fn untrusted(path: &Path, why: impl Into<String>) -> Untrusted {
    Untrusted {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// What kind of file the path must end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

/// Check `path` (absolute) against the rule. `Err(io)` only when it cannot be looked at; a
/// missing path is the caller's to handle (`io::ErrorKind::NotFound`).
pub fn check(path: &Path, kind: Kind) -> Result<Result<(), Untrusted>, io::Error> {
    if !path.is_absolute() {
        return Ok(Err(untrusted(path, "is not an absolute path")));
    }
    if let Err(u) = walk(path)? {
        return Ok(Err(u));
    }
    let real = std::fs::canonicalize(path)?;
    if real != path {
        if let Err(u) = walk(&real)? {
            return Ok(Err(Untrusted {
                path: path.to_path_buf(),
                why: format!("resolves to {}, and {u}", real.display()),
            }));
        }
    }
    let meta = std::fs::metadata(&real)?;
    let ok_kind = match kind {
        Kind::File => meta.is_file(),
        Kind::Directory => meta.is_dir(),
    };
    if !ok_kind {
        let want = match kind {
            Kind::File => "a regular file",
            Kind::Directory => "a directory",
        };
        return Ok(Err(untrusted(path, format!("is not {want}"))));
    }
    Ok(owned_by_root(path, &meta, false))
}

/// The file's (or directory's) own owner and mode; `sticky_ok`: a sticky directory may be
/// writable by others.
fn owned_by_root(path: &Path, meta: &std::fs::Metadata, sticky_ok: bool) -> Result<(), Untrusted> {
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            format!("is owned by uid {}, not root", meta.uid()),
        ));
    }
    let mode = meta.mode();
    if mode & WRITABLE_BY_OTHERS != 0 && !(sticky_ok && mode & STICKY != 0) {
        return Err(untrusted(
            path,
            format!("is writable by group or others (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

/// Every directory from `/` to `path`'s parent, and each entry on the way as the directory
/// holds it (`lstat`): directories root's and closed to others (sticky ones allowed), symlinks
/// root's.
fn walk(path: &Path) -> Result<Result<(), Untrusted>, io::Error> {
    let mut prefix = PathBuf::from("/");
    let meta = std::fs::metadata(&prefix)?;
    if let Err(u) = owned_by_root(&prefix, &meta, true) {
        return Ok(Err(u));
    }
    let components: Vec<Component> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        match c {
            Component::RootDir => continue,
            Component::Normal(n) => prefix.push(n),
            // `..` after a symlink is not the lexical parent: no guessing.
            Component::ParentDir | Component::CurDir | Component::Prefix(_) => {
                return Ok(Err(untrusted(path, "contains . or .. components")));
            }
        }
        let last = i + 1 == components.len();
        let entry = std::fs::symlink_metadata(&prefix)?;
        if entry.uid() != 0 {
            return Ok(Err(untrusted(
                &prefix,
                format!("is owned by uid {}, not root", entry.uid()),
            )));
        }
        if last {
            // The file itself: the caller checks its kind and mode through any symlink.
            break;
        }
        // A directory on the way, reached through a symlink or not: root's, closed to others.
        let dir = std::fs::metadata(&prefix)?;
        if !dir.is_dir() {
            return Ok(Err(untrusted(&prefix, "is not a directory")));
        }
        if let Err(u) = owned_by_root(&prefix, &dir, true) {
            return Ok(Err(u));
        }
    }
    Ok(Ok(()))
}

/// What every refusal ends with: the rule, so the administrator knows what to fix.
pub const RULE: &str = "refused: only root may be able to write it or a directory above it";

/// `check` as one error for messages: "WHAT PATH why; refused: ..." (a missing path is an
/// error too, naming it).
pub fn require(what: &str, path: &Path, kind: Kind) -> anyhow::Result<()> {
    match check(path, kind) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(u)) if u.path == path => anyhow::bail!("{what} {u}; {RULE}"),
        Ok(Err(u)) => anyhow::bail!("{what} {}: {u}; {RULE}", path.display()),
        Err(e) => anyhow::bail!("{what} {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const NOBODY: u32 = 65534;

    /// A fresh directory under the temporary directory (root's, mode 0755, inside the sticky
    /// /tmp), or None when not root (chown needs it).
    fn scratch(tag: &str) -> Option<PathBuf> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED (not root): chown needs root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("xen-vif-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(dir)
    }

    fn file(path: &Path, mode: u32) {
        std::fs::write(path, "true\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn why(path: &Path) -> String {
        match check(path, Kind::File).unwrap() {
            Ok(()) => "trusted".into(),
            Err(u) => u.to_string(),
        }
    }

    #[test]
    fn root_files_in_root_directories_are_trusted() {
        let Some(d) = scratch("ok") else { return };
        file(&d.join("a.hook"), 0o755);
        assert_eq!(why(&d.join("a.hook")), "trusted");
        // /bin/sh (usually a symlink) is, on any sane host.
        assert_eq!(why(Path::new("/bin/sh")), "trusted");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_of_another_user_or_open_to_others_is_not() {
        let Some(d) = scratch("file") else { return };
        let f = d.join("a.hook");
        file(&f, 0o755);
        chown(&f, NOBODY);
        assert_eq!(
            why(&f),
            format!("{} is owned by uid 65534, not root", f.display())
        );
        chown(&f, 0);
        file(&f, 0o775);
        assert!(why(&f).ends_with("is writable by group or others (mode 775)"));
        file(&f, 0o757);
        assert!(why(&f).contains("writable by group or others"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_on_the_way_that_others_can_write_is_not() {
        let Some(d) = scratch("dir") else { return };
        let sub = d.join("hooks");
        std::fs::create_dir(&sub).unwrap();
        let f = sub.join("a.hook");
        file(&f, 0o755);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            why(&f),
            format!("{} is writable by group or others (mode 777)", d.display())
        );
        // Sticky (like /tmp): the entry below must be root's, and it is.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(why(&f), "trusted");
        chown(&sub, NOBODY);
        assert_eq!(
            why(&f),
            format!("{} is owned by uid 65534, not root", sub.display())
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(why(&f).contains("is owned by uid 65534"));
        assert!(
            check(&sub, Kind::Directory)
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("owned by uid 65534")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_is_held_to_the_rule_on_both_sides() {
        let Some(d) = scratch("link") else { return };
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let target = open.join("evil.hook");
        file(&target, 0o755);
        let trusted = d.join("hooks");
        std::fs::create_dir(&trusted).unwrap();
        // A root-owned symlink in a trusted directory, pointing into an untrusted one.
        let link = trusted.join("a.hook");
        symlink(&target, &link).unwrap();
        let w = why(&link);
        assert!(
            w.contains(&format!("resolves to {}", target.display()))
                && w.contains(&format!(
                    "{} is writable by group or others",
                    open.display()
                )),
            "{w}"
        );
        // A directory symlink on the way into the untrusted directory.
        let dirlink = d.join("via");
        symlink(&open, &dirlink).unwrap();
        let w = why(&dirlink.join("evil.hook"));
        assert!(
            w.contains("is writable by group or others (mode 777)"),
            "{w}"
        );
        // The target made trusted: the link is fine.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(why(&link), "trusted");
        // A symlink of another user's, even pointing at a trusted file.
        let theirs = trusted.join("b.hook");
        symlink(&target, &theirs).unwrap();
        chown(&theirs, NOBODY);
        assert!(why(&theirs).contains("is owned by uid 65534"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn relative_paths_and_dot_dot_are_refused() {
        assert!(why(Path::new("etc/passwd")).contains("not an absolute path"));
        assert!(why(Path::new("/etc/../etc/passwd")).contains(".. components"));
        assert!(check(Path::new("/nonexistent/x"), Kind::File).is_err());
        assert!(why(Path::new("/etc")).contains("is not a regular file"));
    }
}
