//! Unpacking archives from outside (S3 sources, later deployment bundles) so that nothing
//! lands outside the destination: no `..` or absolute entries, no symlink that points out,
//! no entry written through a symlink another entry made.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the archive entry `{0}` would land outside the destination; refusing the archive")]
    Escapes(String),
    #[error(
        "the archive entry `{name}` is a symlink to `{target}`, outside the archive; refusing the archive"
    )]
    SymlinkEscapes { name: String, target: String },
    #[error("the archive entry `{0}` would be written through a symlink; refusing the archive")]
    ThroughSymlink(String),
    #[error("not a zip archive, or a damaged one: {0}")]
    Zip(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Unpacks the zip at `archive` into `dest` (created); returns the number of files.
pub fn unzip(archive: &Path, dest: &Path) -> Result<usize, UnpackError> {
    fs::create_dir_all(dest)?;
    let file = fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| UnpackError::Zip(e.to_string()))?;
    let mut files = 0;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|e| UnpackError::Zip(e.to_string()))?;
        let raw = entry
            .name()
            .map_or_else(|_| String::from("?"), |n| n.to_string());
        let relative = entry
            .enclosed_name()
            .ok_or_else(|| UnpackError::Escapes(raw.clone()))?;
        let target = dest.join(&relative);
        refuse_symlinked_parents(dest, &relative, &raw)?;
        if entry.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            io::Read::read_to_string(&mut entry, &mut link)?;
            if !link_stays_inside(&relative, &link) {
                return Err(UnpackError::SymlinkEscapes {
                    name: raw,
                    target: link,
                });
            }
            remove_existing(&target)?;
            std::os::unix::fs::symlink(&link, &target)?;
            continue;
        }
        remove_existing(&target)?;
        let mut out = fs::File::create(&target)?;
        io::copy(&mut entry, &mut out)?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            // Keep rwx for owner, group, others; never setuid, setgid or sticky from outside.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))?;
        }
        files += 1;
    }
    Ok(files)
}

/// Checks a path inside the destination for a key or entry name from outside.
pub fn enclosed(relative: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn refuse_symlinked_parents(dest: &Path, relative: &Path, raw: &str) -> Result<(), UnpackError> {
    let mut current = dest.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        current.push(component);
        if fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(UnpackError::ThroughSymlink(raw.to_string()));
        }
    }
    Ok(())
}

/// A link target, read from the link's own directory, that stays inside the archive root.
fn link_stays_inside(link_path: &Path, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let base = link_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let joined = base.join(target);
    let mut depth: i64 = 0;
    for component in joined.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, Option<&str>, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for (name, link, body) in entries {
            match link {
                Some(target) => zip.add_symlink(*name, *target, options).unwrap(),
                None => {
                    zip.start_file(*name, options).unwrap();
                    zip.write_all(body).unwrap();
                }
            }
        }
        zip.finish().unwrap();
        file
    }

    #[test]
    fn unpacks_files_dirs_and_inner_links() {
        let archive = zip_of(&[
            ("a/b.txt", None, b"b"),
            ("c.txt", None, b"c"),
            ("a/link", Some("b.txt"), b""),
        ]);
        let dest = tempfile::tempdir().unwrap();
        assert_eq!(unzip(archive.path(), dest.path()).unwrap(), 2);
        assert_eq!(fs::read_to_string(dest.path().join("a/link")).unwrap(), "b");
    }

    #[test]
    fn refuses_every_escape() {
        let cases: Vec<(&str, tempfile::NamedTempFile)> = vec![
            ("dotdot", zip_of(&[("../evil.txt", None, b"x")])),
            ("link out", zip_of(&[("l", Some("../../etc/passwd"), b"")])),
            ("absolute link", zip_of(&[("l", Some("/etc/passwd"), b"")])),
            (
                "through link",
                zip_of(&[("d", Some("."), b""), ("d/x", None, b"x")]),
            ),
        ];
        for (what, archive) in cases {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("dest");
            let result = unzip(archive.path(), &dest);
            assert!(result.is_err(), "{what}: {result:?}");
            assert!(!outer.path().join("evil.txt").exists(), "{what}");
        }
    }

    #[test]
    fn absolute_entries_stay_inside() {
        // Writers strip the leading `/`; whatever the archive holds, nothing lands outside.
        let name = format!("/tmp/agent-unpack-{}.txt", std::process::id());
        let archive = zip_of(&[(name.as_str(), None, b"x")]);
        let dest = tempfile::tempdir().unwrap();
        let _ = unzip(archive.path(), dest.path());
        assert!(!Path::new(&name).exists());
    }

    #[test]
    fn enclosed_keys() {
        assert_eq!(enclosed("a/./b").as_deref(), Some(Path::new("a/b")));
        assert_eq!(enclosed("a/../b").as_deref(), Some(Path::new("b")));
        assert_eq!(enclosed("../b"), None);
        assert_eq!(enclosed("/b"), None);
        assert_eq!(enclosed(""), None);
    }
}
