//! `/run/xen-vif`: root's private directory for locks and network-script state. Whatever the
//! umask, directories are made 0700 and files 0600; nothing is opened through a symlink
//! (`O_NOFOLLOW`), temporaries are created fresh (`O_EXCL`), and every directory and file is
//! checked after opening: ours (the effective user), a directory or a regular file with one
//! link, closed to group and others. One that fails a check is refused, never used: a file
//! planted there by someone else must not make root create, truncate or act on anything.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat};
use nix::unistd::mkdir;

/// Where locks and state live; `/run` is a tmpfs, so a reboot (which also resets the network)
/// forgets it, as it should.
pub const RUN_DIR: &str = "/run/xen-vif";

fn refused(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing {}: {why}", path.display()),
    )
}

/// The owner/type/mode rule for anything under the run directory; tightens what passes.
fn check(path: &Path, fd: &OwnedFd, kind: SFlag) -> io::Result<()> {
    let st = fstat(fd.as_fd())?;
    let euid = nix::unistd::geteuid().as_raw();
    let ty = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let private = if kind == SFlag::S_IFDIR { 0o700 } else { 0o600 };
    if ty != kind {
        let what = if kind == SFlag::S_IFDIR {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(refused(path, format!("not {what}")));
    }
    if st.st_uid != euid {
        return Err(refused(path, format!("owned by uid {}", st.st_uid)));
    }
    if kind == SFlag::S_IFREG && st.st_mode & 0o022 != 0 {
        return Err(refused(
            path,
            format!(
                "mode {:o} lets group or others write it",
                st.st_mode & 0o7777
            ),
        ));
    }
    if kind == SFlag::S_IFREG && st.st_nlink != 1 {
        return Err(refused(path, format!("{} hard links", st.st_nlink)));
    }
    if st.st_mode & 0o7777 != private {
        fchmod(fd, Mode::from_bits_truncate(private))?;
    }
    Ok(())
}

/// Make `dir` (and its missing parents below [`RUN_DIR`]) a private directory, or check the one
/// that is there.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            if let Some(parent) = dir.parent().filter(|p| p.starts_with(RUN_DIR)) {
                ensure_dir(parent)?;
            }
            match mkdir(dir, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            open(dir, flags, Mode::empty())
                .map_err(|e| refused(dir, format!("cannot open it ({e})")))?
        }
        Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            return Err(refused(dir, format!("not a directory ({e})")));
        }
        Err(e) => return Err(e.into()),
    };
    check(dir, &fd, SFlag::S_IFDIR)
}

fn checked_file(path: &Path, fd: OwnedFd) -> io::Result<File> {
    check(path, &fd, SFlag::S_IFREG)?;
    Ok(File::from(fd))
}

/// Open `path` (a file directly in a private directory, made if missing) for reading and
/// writing, creating it if it does not exist; never through a symlink.
pub fn open_or_create(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        // The directory exists after the first call on a host: check it, do not stat twice.
        ensure_dir(dir)?;
    }
    let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match open(path, flags, Mode::empty()) {
        Ok(fd) => checked_file(path, fd),
        Err(Errno::ENOENT) => match open(
            path,
            flags | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => checked_file(path, fd),
            // Someone made it between the two opens: take it, under the same checks.
            Err(Errno::EEXIST) => checked_file(path, open(path, flags, Mode::empty())?),
            Err(e) => Err(e.into()),
        },
        Err(Errno::ELOOP) => Err(refused(path, "it is a symbolic link".into())),
        Err(e) => Err(e.into()),
    }
}

/// Open an existing file for reading; `Ok(None)` when there is none.
pub fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => checked_file(path, fd).map(Some),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Err(refused(path, "it is a symbolic link".into())),
        Err(e) => Err(e.into()),
    }
}

/// A fresh temporary beside `path` (`<path>.tmp`): whatever was there (a stale temporary, a
/// planted symlink) is removed, not followed, and the new one is created exclusively.
pub fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = open(
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok((checked_file(&tmp, fd)?, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xen-vif-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn modes_are_private_whatever_the_umask() {
        let d = scratch("umask");
        let old = nix::sys::stat::umask(Mode::empty());
        let sub = d.join("netns-1");
        ensure_dir(&sub).unwrap();
        let f = sub.join("x.lock");
        drop(open_or_create(&f).unwrap());
        let (_, tmp) = create_temp(&sub.join("y.state")).unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::metadata(&tmp).unwrap().mode() & 0o7777, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_and_open_files_are_refused() {
        let d = scratch("links");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let lock = d.join("vif7.0.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let e = open_or_create(&lock).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(open_existing(&lock).is_err());
        // A planted temporary is replaced, never followed.
        let tmp = d.join("network-route@gw0.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let (_, made) = create_temp(&d.join("network-route@gw0.state")).unwrap();
        assert_eq!(made, tmp);
        assert!(
            !std::fs::symlink_metadata(&tmp)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // A file open to others, or a hard link to something else, is refused.
        let open = d.join("open.state");
        std::fs::write(&open, "x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            open_existing(&open)
                .unwrap_err()
                .to_string()
                .contains("mode 666")
        );
        // Only readable by others (as an older xen-vif left it under umask 022): tightened.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_existing(&open).unwrap());
        assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o7777, 0o600);
        let hard = d.join("hard.state");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(
            open_existing(&hard)
                .unwrap_err()
                .to_string()
                .contains("hard links")
        );
        // A symlink where a directory belongs is refused; our own directory, left open by an
        // older xen-vif, is tightened (each file in it is checked on its own).
        let elsewhere = d.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.join("netns-9")).unwrap();
        assert!(open_or_create(&d.join("netns-9").join("a.lock")).is_err());
        assert!(!elsewhere.join("a.lock").exists());
        let wide = d.join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_dir(&wide).unwrap();
        assert_eq!(std::fs::metadata(&wide).unwrap().mode() & 0o7777, 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn files_of_another_user_are_refused() {
        let d = scratch("owner");
        let f = d.join("vif5.0.lock");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        if nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(65534)), None).is_ok() {
            let e = open_or_create(&f).unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
