//! A local source directory: copied for a build, so that the build never changes the
//! engineer's checkout, and put back in its owner's hands when it is used in place.

use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a copy took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Copies every entry of `from` into the existing directory `to`: regular files byte for
/// byte (a real copy, never a link or a reflink: the build may change them), with their
/// permissions and modification times; symbolic links as links; directories with their
/// permissions. Sockets, FIFOs and devices are left out: a build cannot use them from a copy.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<Copied> {
    let mut copied = Copied::default();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let relative = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let target = to.join(relative);
        let kind = entry.file_type();
        let meta = entry.metadata().map_err(io::Error::other)?;
        if kind.is_dir() {
            if !relative.as_os_str().is_empty() {
                fs::create_dir(&target)?;
            }
            dirs.push((target, meta));
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            copied.bytes += fs::copy(entry.path(), &target)?;
            copied.files += 1;
            if let Ok(modified) = meta.modified() {
                File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_times(FileTimes::new().set_modified(modified)))
                    .or_else(|e| ignore_permission(e, ()))?;
            }
        }
    }
    // Directories last, deepest first: their contents would change their times, and a
    // read-only directory could not be filled.
    for (dir, meta) in dirs.iter().rev() {
        fs::set_permissions(dir, meta.permissions())?;
        if let Ok(modified) = meta.modified() {
            File::open(dir)
                .and_then(|f| f.set_times(FileTimes::new().set_modified(modified)))
                .or_else(|e| ignore_permission(e, ()))?;
        }
    }
    Ok(copied)
}

/// A read-only copied file cannot be opened to set its time; that is no reason to fail.
fn ignore_permission<T>(error: io::Error, value: T) -> io::Result<T> {
    if error.kind() == io::ErrorKind::PermissionDenied {
        Ok(value)
    } else {
        Err(error)
    }
}

/// The owner of a directory: its uid and gid.
pub fn owner(dir: &Path) -> io::Result<(u32, u32)> {
    let meta = fs::metadata(dir)?;
    Ok((meta.uid(), meta.gid()))
}

/// Gives every entry under `dir` (and `dir` itself) to `uid:gid`, links themselves rather
/// than what they point to; entries already theirs are left alone. Returns how many changed.
pub fn give_back(dir: &Path, uid: u32, gid: u32) -> io::Result<u64> {
    let mut changed = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let meta = entry.metadata().map_err(io::Error::other)?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// `1.2 GiB`, `340 MiB`, `12 KiB`, `512 B`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_links_modes_and_times() {
        use std::os::unix::fs::PermissionsExt;
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join(".git/objects")).unwrap();
        fs::write(from.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(from.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            from.path().join("run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run.sh", from.path().join("link")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(from.path().join("run.sh"))
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        let copied = copy_tree(from.path(), to.path()).unwrap();
        assert_eq!(copied.files, 2);
        assert_eq!(
            fs::read_to_string(to.path().join(".git/HEAD")).unwrap(),
            "ref: refs/heads/main\n"
        );
        let meta = fs::metadata(to.path().join("run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(meta.modified().unwrap(), old);
        assert_eq!(
            fs::read_link(to.path().join("link")).unwrap(),
            Path::new("run.sh")
        );
        assert!(to.path().join(".git/objects").is_dir());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(340 << 20), "340 MiB");
    }
}
