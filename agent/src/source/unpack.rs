//! Unpacking archives from outside (S3 sources, deployment bundles) so that nothing lands
//! outside the destination: no `..` or absolute entries, no symlink that points out, no entry
//! written through a symlink another entry made, no hard link to anything but a file the same
//! archive already put inside, no device files, no setuid bits, and a cap on what a small
//! archive may expand to.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    #[error("not a tar archive, or a damaged one: {0}")]
    Tar(String),
    #[error(
        "`{0}` is not a zip, tar or gzip-compressed tar (tgz) archive (judged by its content, not its name); bundles must be one of these"
    )]
    UnknownFormat(String),
    #[error("the archive entry `{0}` names no path inside the destination; refusing the archive")]
    Unnamed(String),
    #[error(
        "the archive entry `{name}` is a hard link to `{target}`, outside the archive; refusing the archive"
    )]
    HardLinkEscapes { name: String, target: String },
    #[error(
        "the archive entry `{name}` is a hard link to `{target}`, which is not a regular file unpacked earlier from the archive; refusing the archive"
    )]
    HardLinkNotFile { name: String, target: String },
    #[error(
        "the archive entry `{name}` is a {kind}; bundles may hold files, directories and links only; refusing the archive"
    )]
    Special { name: String, kind: String },
    #[error(
        "the archive unpacks to more than {limit} bytes (a decompression bomb, or a bundle too large); refusing the archive"
    )]
    TooLarge { limit: u64 },
    #[error("the archive holds more than {limit} entries; refusing the archive")]
    TooManyEntries { limit: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The archive formats bundles may come in, as told by their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    Tar,
    Tgz,
}

impl fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveKind::Zip => "zip",
            ArchiveKind::Tar => "tar",
            ArchiveKind::Tgz => "tgz",
        })
    }
}

/// What [`unpack`] found and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub kind: ArchiveKind,
    /// Regular files written, hard links included.
    pub files: usize,
}

/// How much an archive may expand to; a few kilobytes of gzip can describe terabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of entry content, counted as it is decompressed.
    pub max_bytes: u64,
    /// Entries of every kind: files, directories, links.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024 * 1024,
            max_entries: 1_000_000,
        }
    }
}

impl Limits {
    fn unlimited() -> Self {
        Self {
            max_bytes: u64::MAX,
            max_entries: u64::MAX,
        }
    }
}

/// Tells the archive format from the first bytes of the file; its name is not trusted.
pub fn detect(path: &Path) -> Result<ArchiveKind, UnpackError> {
    let mut head = Vec::with_capacity(512);
    fs::File::open(path)?.take(512).read_to_end(&mut head)?;
    // `PK\x05\x06` opens a zip that has no entries: only the end-of-directory record.
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(ArchiveKind::Zip)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(ArchiveKind::Tgz)
    } else if head.get(257..262) == Some(b"ustar".as_slice()) {
        // POSIX writes `ustar\0`, GNU `ustar  \0`; both share these five bytes.
        Ok(ArchiveKind::Tar)
    } else {
        Err(UnpackError::UnknownFormat(path.display().to_string()))
    }
}

/// Unpacks a zip, tar or tgz bundle into `dest` (created), with the default [`Limits`].
pub fn unpack(archive: &Path, dest: &Path) -> Result<Unpacked, UnpackError> {
    unpack_with_limits(archive, dest, Limits::default())
}

/// Unpacks a zip, tar or tgz bundle into `dest` (created), refusing it once it exceeds `limits`.
pub fn unpack_with_limits(
    archive: &Path,
    dest: &Path,
    limits: Limits,
) -> Result<Unpacked, UnpackError> {
    let kind = detect(archive)?;
    let mut budget = Budget::new(limits);
    let files = match kind {
        ArchiveKind::Zip => unzip_within(archive, dest, &mut budget)?,
        ArchiveKind::Tar => untar_within(archive, dest, false, &mut budget)?,
        ArchiveKind::Tgz => untar_within(archive, dest, true, &mut budget)?,
    };
    tracing::debug!(%kind, files, bytes = budget.bytes, "unpacked archive");
    Ok(Unpacked { kind, files })
}

/// Unpacks the zip at `archive` into `dest` (created); returns the number of files.
pub fn unzip(archive: &Path, dest: &Path) -> Result<usize, UnpackError> {
    // Sources unpacked this way never had a cap; bundles get one through `unpack`.
    unzip_within(archive, dest, &mut Budget::new(Limits::unlimited()))
}

/// Unpacks the tar (gzip-compressed if `gzip`) at `archive` into `dest` (created), with the
/// default [`Limits`]; returns the number of regular files, hard links included.
pub fn untar(archive: &Path, dest: &Path, gzip: bool) -> Result<usize, UnpackError> {
    untar_within(archive, dest, gzip, &mut Budget::new(Limits::default()))
}

fn unzip_within(archive: &Path, dest: &Path, budget: &mut Budget) -> Result<usize, UnpackError> {
    fs::create_dir_all(dest)?;
    let file = fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_error)?;
    // The central directory gives the count up front, so a bomb of empty entries fails at once.
    if u64::try_from(zip.len()).unwrap_or(u64::MAX) > budget.limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            limit: budget.limits.max_entries,
        });
    }
    let mut files = 0;
    for index in 0..zip.len() {
        budget.count_entry()?;
        let mut entry = zip.by_index(index).map_err(zip_error)?;
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
            let mut link = Vec::new();
            copy_limited(&mut entry, &mut link, budget, io_zip_error)?;
            let link = PathBuf::from(std::ffi::OsString::from_vec(link));
            if !link_stays_inside(&relative, &link) {
                return Err(UnpackError::SymlinkEscapes {
                    name: raw,
                    target: link.display().to_string(),
                });
            }
            remove_existing(&target)?;
            std::os::unix::fs::symlink(&link, &target)?;
            continue;
        }
        budget.check_declared(entry.size())?;
        let mode = entry.unix_mode();
        write_file(&target, &mut entry, mode, None, budget, io_zip_error)?;
        files += 1;
    }
    Ok(files)
}

fn untar_within(
    archive: &Path,
    dest: &Path,
    gzip: bool,
    budget: &mut Budget,
) -> Result<usize, UnpackError> {
    let file = io::BufReader::new(fs::File::open(archive)?);
    if gzip {
        // Multi-member: `cat a.gz b.gz` and parallel compressors produce several gzip members.
        untar_from(flate2::read::MultiGzDecoder::new(file), dest, budget)
    } else {
        untar_from(file, dest, budget)
    }
}

/// A directory whose archive mode and mtime are applied once its children are written.
struct PendingDir {
    relative: PathBuf,
    mode: u32,
    mtime: Option<SystemTime>,
}

fn untar_from<R: Read>(reader: R, dest: &Path, budget: &mut Budget) -> Result<usize, UnpackError> {
    fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(reader);
    let mut files = 0;
    // Hard links may only point at regular files this archive wrote, never at what was there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut dirs: Vec<PendingDir> = Vec::new();
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        budget.count_entry()?;
        let header = entry.header();
        let kind = header.entry_type();
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Links have no use for a mode; only files and directories need one that parses.
        let mode = header.mode().map(|mode| mode & 0o777);
        // An unreadable mtime is no reason to refuse a bundle; the file just gets the time now.
        let mtime = header
            .mtime()
            .ok()
            .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
        if kind.is_pax_global_extensions() {
            // Global PAX records carry defaults (charset, comments), never paths to write.
            budget.charge(entry.size())?;
            continue;
        }
        // Pre-POSIX archivers mark directories only by a trailing slash on a regular entry.
        let is_dir = kind.is_dir() || (kind.is_file() && raw.ends_with('/'));
        let path = entry.path().map_err(tar_error)?.into_owned();
        let relative = normalised(&path).ok_or_else(|| UnpackError::Escapes(raw.clone()))?;
        if relative.as_os_str().is_empty() {
            // `tar -C dir .` starts with `./`: the destination itself, which stays as it is.
            if is_dir {
                budget.charge(entry.size())?;
                continue;
            }
            return Err(UnpackError::Unnamed(raw));
        }
        refuse_symlinked_parents(dest, &relative, &raw)?;
        let target = dest.join(&relative);

        if is_dir {
            budget.charge(entry.size())?;
            match fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => {}
                // A symlink or file in the way is replaced, never followed.
                Ok(_) => {
                    remove_existing(&target)?;
                    fs::create_dir(&target)?;
                }
                Err(_) => fs::create_dir_all(&target)?,
            }
            // Owner rwx until the end, or a read-only directory could not take its children.
            let mode = mode.map_err(tar_error)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700))?;
            dirs.push(PendingDir {
                relative,
                mode,
                mtime,
            });
            continue;
        }

        if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            create_parents(&target)?;
            budget.check_declared(entry.size())?;
            let mode = mode.map_err(tar_error)?;
            write_file(&target, &mut entry, Some(mode), mtime, budget, tar_error)?;
            written.insert(relative);
            files += 1;
        } else if kind.is_symlink() {
            budget.charge(entry.size())?;
            let link = link_name(&entry, &raw)?;
            if !link_stays_inside(&relative, &link) {
                return Err(UnpackError::SymlinkEscapes {
                    name: raw,
                    target: link.display().to_string(),
                });
            }
            create_parents(&target)?;
            remove_existing(&target)?;
            std::os::unix::fs::symlink(&link, &target)?;
            written.remove(&relative);
        } else if kind.is_hard_link() {
            budget.charge(entry.size())?;
            let link = link_name(&entry, &raw)?;
            let link_display = link.display().to_string();
            let Some(source) = normalised(&link) else {
                return Err(UnpackError::HardLinkEscapes {
                    name: raw,
                    target: link_display,
                });
            };
            // Re-checked on disk too: a later entry may have put a symlink where the file was.
            let still_a_file = !source.as_os_str().is_empty()
                && written.contains(&source)
                && refuse_symlinked_parents(dest, &source, &raw).is_ok()
                && fs::symlink_metadata(dest.join(&source)).is_ok_and(|m| m.file_type().is_file());
            if !still_a_file {
                return Err(UnpackError::HardLinkNotFile {
                    name: raw,
                    target: link_display,
                });
            }
            if source != relative {
                create_parents(&target)?;
                remove_existing(&target)?;
                link_or_copy(&dest.join(&source), &target, budget)?;
                written.insert(relative);
                files += 1;
            }
        } else {
            let kind = if kind.is_character_special() || kind.is_block_special() {
                String::from("device file")
            } else if kind.is_fifo() {
                String::from("FIFO (named pipe)")
            } else {
                format!(
                    "entry of unsupported type `{}`",
                    kind.as_byte().escape_ascii()
                )
            };
            return Err(UnpackError::Special { name: raw, kind });
        }
    }
    fix_directories(dest, dirs)?;
    Ok(files)
}

/// Applies archive modes and mtimes to directories, deepest first: a parent that loses its
/// owner `x` bit first would make its children unreachable, and writing children would
/// move the parent's mtime again.
fn fix_directories(dest: &Path, mut dirs: Vec<PendingDir>) -> Result<(), UnpackError> {
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.relative.components().count()));
    for dir in dirs {
        // A later entry may have replaced the directory or an ancestor with a symlink;
        // chmod follows symlinks, so those are skipped rather than changed elsewhere.
        if !is_real_dir(dest, &dir.relative) {
            continue;
        }
        let path = dest.join(&dir.relative);
        if let Some(mtime) = dir.mtime {
            fs::File::open(&path)?.set_modified(mtime)?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode))?;
    }
    Ok(())
}

fn is_real_dir(dest: &Path, relative: &Path) -> bool {
    let mut current = dest.to_path_buf();
    let mut last = None;
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => last = Some(meta),
            _ => return false,
        }
    }
    last.is_some()
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &str) -> Result<PathBuf, UnpackError> {
    entry
        .link_name()
        .map_err(tar_error)?
        .map(|link| link.into_owned())
        .ok_or_else(|| UnpackError::Tar(format!("the link entry `{raw}` has no target")))
}

/// Hard links keep one copy on disk; where the filesystem will not link (EXDEV on a bind
/// mount, EPERM on some network filesystems), a copy reads the same.
fn link_or_copy(source: &Path, target: &Path, budget: &mut Budget) -> Result<(), UnpackError> {
    let Err(link_error) = fs::hard_link(source, target) else {
        return Ok(());
    };
    tracing::debug!(
        source = %source.display(),
        target = %target.display(),
        error = %link_error,
        "hard link failed; copying instead"
    );
    let mut input = fs::File::open(source)?;
    let meta = input.metadata()?;
    budget.check_declared(meta.len())?;
    write_file(
        target,
        &mut input,
        Some(meta.permissions().mode()),
        meta.modified().ok(),
        budget,
        UnpackError::Io,
    )
}

/// Writes a fresh file, never reusing what is at `target`: an existing symlink there is removed,
/// not followed, and an existing hard link is unlinked, not written through.
fn write_file(
    target: &Path,
    body: &mut dyn Read,
    mode: Option<u32>,
    mtime: Option<SystemTime>,
    budget: &mut Budget,
    read_error: fn(io::Error) -> UnpackError,
) -> Result<(), UnpackError> {
    remove_existing(target)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)?;
    copy_limited(body, &mut out, budget, read_error)?;
    if let Some(mode) = mode {
        // Keep rwx for owner, group, others; never setuid, setgid or sticky from outside.
        out.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
    }
    if let Some(mtime) = mtime {
        out.set_modified(mtime)?;
    }
    Ok(())
}

/// Copies while charging the budget, so a bomb stops at the limit rather than at a full disk;
/// read failures are the archive's fault, write failures the destination's.
fn copy_limited(
    body: &mut dyn Read,
    out: &mut dyn Write,
    budget: &mut Budget,
    read_error: fn(io::Error) -> UnpackError,
) -> Result<u64, UnpackError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = match body.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        let chunk = buffer.get(..read).unwrap_or_default();
        budget.charge(chunk.len() as u64)?;
        out.write_all(chunk)?;
        total += chunk.len() as u64;
    }
}

struct Budget {
    limits: Limits,
    bytes: u64,
    entries: u64,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    fn count_entry(&mut self) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), UnpackError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Fails before writing anything when the header already admits to being too big; the
    /// real bytes are still charged as they come, as headers can lie.
    fn check_declared(&self, bytes: u64) -> Result<(), UnpackError> {
        if self.bytes.saturating_add(bytes) > self.limits.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

fn zip_error(e: zip::result::ZipError) -> UnpackError {
    UnpackError::Zip(e.to_string())
}

fn io_zip_error(e: io::Error) -> UnpackError {
    UnpackError::Zip(e.to_string())
}

fn tar_error(e: io::Error) -> UnpackError {
    UnpackError::Tar(e.to_string())
}

fn create_parents(target: &Path) -> io::Result<()> {
    match target.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// Checks a path inside the destination for a key or entry name from outside.
pub fn enclosed(relative: &str) -> Option<PathBuf> {
    normalised(Path::new(relative)).filter(|out| !out.as_os_str().is_empty())
}

/// The path with `.` and inner `..` resolved by name; `None` if absolute or if `..` climbs
/// above the start. Empty when the path names the start itself.
fn normalised(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
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
    Some(out)
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
///
/// `..` is allowed only at the start of the target. After a name it would be resolved by the
/// kernel from wherever that name leads, not lexically: with `s -> .` at the root, `s/..` is
/// the destination's parent although it reads as the root.
pub(crate) fn link_stays_inside(link_path: &Path, target: &Path) -> bool {
    let mut depth = link_path
        .parent()
        .map_or(0, |base| base.components().count());
    let mut seen_name = false;
    for component in target.components() {
        match component {
            Component::Normal(_) => seen_name = true,
            Component::ParentDir => {
                if seen_name {
                    return false;
                }
                match depth.checked_sub(1) {
                    Some(up) => depth = up,
                    None => return false,
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

    /// Name, symlink target (a symlink when present), body.
    type ZipEntry<'a> = (&'a str, Option<&'a str>, &'a [u8]);

    fn zip_of(entries: &[ZipEntry<'_>]) -> tempfile::NamedTempFile {
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

    const MTIME: u64 = 1_000_000_000;

    /// One hand-made tar entry; names go straight into the header, `..` and `/` included.
    struct Raw<'a> {
        pax_path: Option<&'a str>,
        name: &'a str,
        kind: tar::EntryType,
        link: &'a str,
        mode: u32,
        body: &'a [u8],
    }

    fn raw<'a>(name: &'a str, kind: tar::EntryType, link: &'a str, mode: u32) -> Raw<'a> {
        Raw {
            pax_path: None,
            name,
            kind,
            link,
            mode,
            body: b"",
        }
    }

    fn file<'a>(name: &'a str, mode: u32, body: &'a [u8]) -> Raw<'a> {
        Raw {
            body,
            ..raw(name, tar::EntryType::Regular, "", mode)
        }
    }

    fn dir(name: &str, mode: u32) -> Raw<'_> {
        raw(name, tar::EntryType::Directory, "", mode)
    }

    fn symlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
        raw(name, tar::EntryType::Symlink, target, 0o777)
    }

    fn hard_link<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
        raw(name, tar::EntryType::Link, target, 0o644)
    }

    fn tar_bytes(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            if let Some(path) = entry.pax_path {
                builder
                    .append_pax_extensions([("path", path.as_bytes())])
                    .unwrap();
            }
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(entry.kind);
            header.set_size(entry.body.len() as u64);
            header.set_mode(entry.mode);
            header.set_mtime(MTIME);
            header.set_uid(4242);
            header.set_gid(4242);
            if entry.link.len() > 100 {
                // Goes out as a GNU long-link (`K`) record ahead of the entry.
                builder
                    .append_link(&mut header, entry.name, entry.link)
                    .unwrap();
                continue;
            }
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
            header.set_cksum();
            builder.append(&header, entry.body).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzipped(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// The archive lives in its own directory so that the one holding `dest` starts empty.
    fn stored(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn tar_archive(entries: &[Raw<'_>], gzip: bool) -> (tempfile::TempDir, PathBuf) {
        let bytes = tar_bytes(entries);
        if gzip {
            stored(&gzipped(&bytes), "bundle.tgz")
        } else {
            stored(&bytes, "bundle.tar")
        }
    }

    fn assert_nothing_outside(outer: &Path, what: &str) {
        let names: Vec<_> = fs::read_dir(outer)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|name| name == "dest"),
            "{what}: stray {names:?}"
        );
        assert!(!Path::new(&absolute_evil()).exists(), "{what}");
    }

    fn absolute_evil() -> String {
        format!("/tmp/agent-unpack-evil-{}", std::process::id())
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn mtime_of(path: &Path) -> u64 {
        fs::symlink_metadata(path)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn unpacks_a_normal_tgz() {
        use std::os::unix::fs::MetadataExt;
        let (_keep, archive) = tar_archive(
            &[
                dir("./", 0o755),
                dir("app/", 0o755),
                dir("app/bin/", 0o750),
                file("app/bin/run.sh", 0o755, b"#!/bin/sh\necho hi\n"),
                file("app/bin/suid", 0o4755, b"s"),
                file("app/bin/sgid-sticky", 0o3644, b"g"),
                file("app/conf/settings.txt", 0o640, b"k=v"),
                symlink("app/current", "bin/run.sh"),
                symlink("app/conf/up", "../bin"),
                hard_link("app/bin/run2.sh", "app/bin/run.sh"),
                hard_link("./app/again", "./app/bin/run.sh"),
                dir("ro/", 0o555),
                file("ro/f", 0o444, b"r"),
            ],
            true,
        );
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        let unpacked = unpack(&archive, &dest).unwrap();
        assert_eq!(
            unpacked,
            Unpacked {
                kind: ArchiveKind::Tgz,
                files: 7
            }
        );

        let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("app/current"), "#!/bin/sh\necho hi\n");
        assert_eq!(read("app/conf/up/suid"), "s");
        assert_eq!(read("app/conf/settings.txt"), "k=v");
        assert_eq!(read("ro/f"), "r");
        assert_eq!(mode_of(&dest.join("app/bin/run.sh")), 0o755);
        assert_eq!(mode_of(&dest.join("app/bin/suid")), 0o755);
        assert_eq!(mode_of(&dest.join("app/bin/sgid-sticky")), 0o644);
        assert_eq!(mode_of(&dest.join("app/conf/settings.txt")), 0o640);
        assert_eq!(mode_of(&dest.join("app/bin")), 0o750);
        assert_eq!(mode_of(&dest.join("ro")), 0o555);

        let run = fs::metadata(dest.join("app/bin/run.sh")).unwrap();
        for link in ["app/bin/run2.sh", "app/again"] {
            let meta = fs::symlink_metadata(dest.join(link)).unwrap();
            assert!(meta.file_type().is_file(), "{link}");
            assert_eq!(meta.ino(), run.ino(), "{link}");
        }

        for path in ["app/bin/run.sh", "app/conf/settings.txt", "app/bin", "ro"] {
            assert_eq!(mtime_of(&dest.join(path)), MTIME, "{path}");
        }
        // Owners come from the agent, not from the uid 4242 in the headers.
        let own = fs::metadata(outer.path()).unwrap();
        assert_eq!(run.uid(), own.uid());
        assert_eq!(run.gid(), own.gid());
        assert_nothing_outside(outer.path(), "normal");

        // Lets the temporary directory be removed by users other than root.
        fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn unpacks_gnu_long_names_and_pax_paths() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let long_link_target = format!("{}/file.txt", "d".repeat(150));
        let pax_name = format!("{}/pax.txt", "p".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, &b"long"[..])
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "to-long", &long_link_target)
            .unwrap();
        builder
            .append_pax_extensions([("path", pax_name.as_bytes())])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("short").unwrap();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, &b"pax"[..]).unwrap();
        let (_keep, archive) = stored(&builder.into_inner().unwrap(), "bundle.tar");

        let dest = tempfile::tempdir().unwrap();
        assert_eq!(untar(&archive, dest.path(), false).unwrap(), 2);
        assert_eq!(fs::read_to_string(dest.path().join(&long)).unwrap(), "long");
        assert_eq!(
            fs::read_to_string(dest.path().join("to-long")).unwrap(),
            "long"
        );
        assert_eq!(
            fs::read_to_string(dest.path().join(&pax_name)).unwrap(),
            "pax"
        );
        assert!(!dest.path().join("short").exists());
    }

    type Check = fn(&UnpackError) -> bool;

    fn hostile_tars() -> Vec<(&'static str, Vec<Raw<'static>>, Check)> {
        let absolute: &'static str = Box::leak(absolute_evil().into_boxed_str());
        let deep_link: &'static str =
            Box::leak(format!("{}evil", "../".repeat(40)).into_boxed_str());
        vec![
            ("dotdot", vec![file("../evil", 0o644, b"x")], |e| {
                matches!(e, UnpackError::Escapes(_))
            }),
            (
                "inner dotdot",
                vec![file("a/../../evil", 0o644, b"x")],
                |e| matches!(e, UnpackError::Escapes(_)),
            ),
            ("absolute", vec![file(absolute, 0o644, b"x")], |e| {
                matches!(e, UnpackError::Escapes(_))
            }),
            (
                "pax path",
                vec![Raw {
                    pax_path: Some("../evil"),
                    ..file("innocent", 0o644, b"x")
                }],
                |e| matches!(e, UnpackError::Escapes(_)),
            ),
            ("symlink absolute", vec![symlink("l", "/etc/passwd")], |e| {
                matches!(e, UnpackError::SymlinkEscapes { .. })
            }),
            ("symlink up", vec![symlink("a/l", "../..")], |e| {
                matches!(e, UnpackError::SymlinkEscapes { .. })
            }),
            ("symlink far up", vec![symlink("l", deep_link)], |e| {
                matches!(e, UnpackError::SymlinkEscapes { .. })
            }),
            (
                "symlink up through another symlink",
                vec![symlink("s", "."), symlink("t", "s/..")],
                |e| matches!(e, UnpackError::SymlinkEscapes { .. }),
            ),
            (
                "file through symlink to .",
                vec![symlink("d", "."), file("d/x", 0o644, b"x")],
                |e| matches!(e, UnpackError::ThroughSymlink(_)),
            ),
            (
                "file through symlink outside",
                vec![symlink("d", "../outside"), file("d/x", 0o644, b"x")],
                |e| matches!(e, UnpackError::SymlinkEscapes { .. }),
            ),
            (
                "directory through symlink",
                vec![symlink("d", "."), dir("d/sub/", 0o755)],
                |e| matches!(e, UnpackError::ThroughSymlink(_)),
            ),
            (
                "hard link absolute",
                vec![hard_link("h", "/etc/passwd")],
                |e| matches!(e, UnpackError::HardLinkEscapes { .. }),
            ),
            ("hard link up", vec![hard_link("a/h", "../../x")], |e| {
                matches!(e, UnpackError::HardLinkEscapes { .. })
            }),
            (
                "hard link to a symlink",
                vec![
                    file("f", 0o644, b"x"),
                    symlink("s", "f"),
                    hard_link("h", "s"),
                ],
                |e| matches!(e, UnpackError::HardLinkNotFile { .. }),
            ),
            (
                "hard link through a symlink",
                vec![
                    file("real/f", 0o644, b"x"),
                    symlink("s", "real"),
                    hard_link("h", "s/f"),
                ],
                |e| matches!(e, UnpackError::HardLinkNotFile { .. }),
            ),
            (
                "hard link to a directory",
                vec![dir("d/", 0o755), hard_link("h", "d")],
                |e| matches!(e, UnpackError::HardLinkNotFile { .. }),
            ),
            (
                "hard link to a later entry",
                vec![hard_link("h", "later"), file("later", 0o644, b"x")],
                |e| matches!(e, UnpackError::HardLinkNotFile { .. }),
            ),
            (
                "hard link to what was there before",
                vec![hard_link("h", "preexisting")],
                |e| matches!(e, UnpackError::HardLinkNotFile { .. }),
            ),
            (
                "character device",
                vec![raw("dev/null", tar::EntryType::Char, "", 0o666)],
                |e| matches!(e, UnpackError::Special { .. }),
            ),
            (
                "block device",
                vec![raw("dev/sda", tar::EntryType::Block, "", 0o660)],
                |e| matches!(e, UnpackError::Special { .. }),
            ),
            (
                "fifo",
                vec![raw("pipe", tar::EntryType::Fifo, "", 0o644)],
                |e| matches!(e, UnpackError::Special { .. }),
            ),
            (
                "unknown type",
                vec![raw("vol", tar::EntryType::new(b'V'), "", 0o644)],
                |e| matches!(e, UnpackError::Special { .. }),
            ),
        ]
    }

    #[test]
    fn refuses_hostile_tars_and_tgzs() {
        for gzip in [false, true] {
            for via_unpack in [false, true] {
                for (what, entries, check) in hostile_tars() {
                    let what = format!("{what} (gzip {gzip}, unpack {via_unpack})");
                    let (_keep, archive) = tar_archive(&entries, gzip);
                    let outer = tempfile::tempdir().unwrap();
                    let dest = outer.path().join("dest");
                    fs::create_dir(&dest).unwrap();
                    fs::write(dest.join("preexisting"), b"not from the archive").unwrap();
                    let result = if via_unpack {
                        unpack(&archive, &dest).map(|u| u.files)
                    } else {
                        untar(&archive, &dest, gzip)
                    };
                    match result {
                        Err(e) => {
                            assert!(check(&e), "{what}: wrong error {e:?}");
                            assert!(e.to_string().contains("refusing"), "{what}: {e}");
                        }
                        Ok(files) => panic!("{what}: unpacked {files} files"),
                    }
                    assert_nothing_outside(outer.path(), &what);
                    assert_eq!(
                        fs::read(dest.join("preexisting")).unwrap(),
                        b"not from the archive",
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn error_messages_name_the_entry() {
        let cases = [
            (
                vec![raw("dev/null", tar::EntryType::Char, "", 0o666)],
                "the archive entry `dev/null` is a device file; bundles may hold files, directories and links only; refusing the archive",
            ),
            (
                vec![raw("pipe", tar::EntryType::Fifo, "", 0o644)],
                "the archive entry `pipe` is a FIFO (named pipe); bundles may hold files, directories and links only; refusing the archive",
            ),
            (
                vec![hard_link("x", "../y")],
                "the archive entry `x` is a hard link to `../y`, outside the archive; refusing the archive",
            ),
        ];
        for (entries, message) in cases {
            let (_keep, archive) = tar_archive(&entries, false);
            let dest = tempfile::tempdir().unwrap();
            let error = untar(&archive, dest.path(), false).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn refuses_hostile_zips() {
        let absolute = absolute_evil();
        let cases: Vec<(&str, Vec<ZipEntry<'_>>)> = vec![
            ("dotdot", vec![("../evil", None, b"x")]),
            ("inner dotdot", vec![("a/../../evil", None, b"x")]),
            ("symlink absolute", vec![("l", Some("/etc/passwd"), b"")]),
            ("symlink up", vec![("a/l", Some("../.."), b"")]),
            (
                "symlink up through another symlink",
                vec![("s", Some("."), b""), ("t", Some("s/.."), b"")],
            ),
            (
                "file through symlink to .",
                vec![("d", Some("."), b""), ("d/x", None, b"x")],
            ),
            (
                "file through symlink outside",
                vec![("d", Some("../outside"), b""), ("d/x", None, b"x")],
            ),
        ];
        for (what, entries) in cases {
            for via_unpack in [false, true] {
                let archive = zip_of(&entries);
                let outer = tempfile::tempdir().unwrap();
                let dest = outer.path().join("dest");
                let result = if via_unpack {
                    unpack(archive.path(), &dest).map(|u| u.files)
                } else {
                    unzip(archive.path(), &dest)
                };
                assert!(result.is_err(), "{what}: {result:?}");
                assert_nothing_outside(outer.path(), what);
            }
        }
        // Zip readers strip a leading `/`; the entry lands inside, never at the absolute path.
        let archive = zip_of(&[(absolute.as_str(), None, b"x")]);
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        let _ = unpack(archive.path(), &dest);
        assert_nothing_outside(outer.path(), "absolute");
    }

    #[test]
    fn zip_through_unpack_keeps_modes_without_setuid() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("bin/run", options.unix_permissions(0o4755))
            .unwrap();
        zip.write_all(b"run").unwrap();
        zip.add_symlink("current", "bin/run", options).unwrap();
        zip.finish().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let unpacked = unpack(file.path(), dest.path()).unwrap();
        assert_eq!(unpacked.kind, ArchiveKind::Zip);
        assert_eq!(unpacked.files, 1);
        assert_eq!(mode_of(&dest.path().join("bin/run")), 0o755);
        assert_eq!(
            fs::read_to_string(dest.path().join("current")).unwrap(),
            "run"
        );
    }

    #[test]
    fn detects_by_content_not_name() {
        let tar = tar_bytes(&[file("a", 0o644, b"a")]);
        let (_a, tar_named_zip) = stored(&tar, "bundle.zip");
        assert_eq!(detect(&tar_named_zip).unwrap(), ArchiveKind::Tar);
        let (_b, tgz_named_tar) = stored(&gzipped(&tar), "bundle.tar");
        assert_eq!(detect(&tgz_named_tar).unwrap(), ArchiveKind::Tgz);
        let zip = zip_of(&[("a", None, b"a")]);
        assert_eq!(detect(zip.path()).unwrap(), ArchiveKind::Zip);

        let mut posix = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(1);
        posix.append_data(&mut header, "a", &b"a"[..]).unwrap();
        let (_c, posix) = stored(&posix.into_inner().unwrap(), "bundle");
        assert_eq!(detect(&posix).unwrap(), ArchiveKind::Tar);

        let outer = tempfile::tempdir().unwrap();
        let unpacked = unpack(&tar_named_zip, &outer.path().join("dest")).unwrap();
        assert_eq!(unpacked.kind, ArchiveKind::Tar);
        assert_eq!(
            fs::read_to_string(outer.path().join("dest/a")).unwrap(),
            "a"
        );

        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (_d, noise) = stored(&noise, "bundle.zip");
        let error = detect(&noise).unwrap_err();
        assert!(matches!(error, UnpackError::UnknownFormat(_)), "{error:?}");
        let message = error.to_string();
        for format in ["zip", "tar", "tgz"] {
            assert!(message.contains(format), "{message}");
        }
        let outer = tempfile::tempdir().unwrap();
        assert!(unpack(&noise, &outer.path().join("dest")).is_err());
        assert_nothing_outside(outer.path(), "noise");

        let (_e, short) = stored(b"PK", "short");
        assert!(detect(&short).is_err());
    }

    #[test]
    fn unpacks_an_empty_zip() {
        let file = tempfile::NamedTempFile::new().unwrap();
        zip::ZipWriter::new(file.reopen().unwrap())
            .finish()
            .unwrap();
        assert_eq!(
            fs::read(file.path()).unwrap().get(..4),
            Some(b"PK\x05\x06".as_slice())
        );
        let dest = tempfile::tempdir().unwrap();
        let unpacked = unpack(file.path(), dest.path()).unwrap();
        assert_eq!(unpacked.kind, ArchiveKind::Zip);
        assert_eq!(unpacked.files, 0);
    }

    #[test]
    fn limits_stop_bombs() {
        let zeros = vec![0u8; 1024 * 1024];
        let tight = Limits {
            max_bytes: 1000,
            max_entries: 10,
        };
        let (_keep, tgz) = tar_archive(&[file("zeros", 0o644, &zeros)], true);
        let zip = zip_of(&[("zeros", None, &zeros)]);
        for archive in [tgz.as_path(), zip.path()] {
            let outer = tempfile::tempdir().unwrap();
            let error = unpack_with_limits(archive, &outer.path().join("dest"), tight).unwrap_err();
            assert!(
                matches!(error, UnpackError::TooLarge { limit: 1000 }),
                "{error:?}"
            );
            assert!(
                error.to_string().contains("more than 1000 bytes"),
                "{error}"
            );
            assert_nothing_outside(outer.path(), "too large");
        }

        let few = Limits {
            max_bytes: u64::MAX,
            max_entries: 2,
        };
        let (_keep, tar) = tar_archive(
            &[
                file("a", 0o644, b"a"),
                file("b", 0o644, b"b"),
                file("c", 0o644, b"c"),
            ],
            false,
        );
        let zip = zip_of(&[("a", None, b"a"), ("b", None, b"b"), ("c", None, b"c")]);
        for archive in [tar.as_path(), zip.path()] {
            let dest = tempfile::tempdir().unwrap();
            let error = unpack_with_limits(archive, dest.path(), few).unwrap_err();
            assert!(
                matches!(error, UnpackError::TooManyEntries { limit: 2 }),
                "{error:?}"
            );
        }

        let defaults = Limits::default();
        assert_eq!(defaults.max_bytes, 20 * 1024 * 1024 * 1024);
        assert_eq!(defaults.max_entries, 1_000_000);
    }

    #[test]
    fn counts_bytes_actually_read_not_declared() {
        let mut budget = Budget::new(Limits {
            max_bytes: 1000,
            max_entries: 1,
        });
        let mut body = io::repeat(7).take(5000);
        let error =
            copy_limited(&mut body, &mut io::sink(), &mut budget, UnpackError::Io).unwrap_err();
        assert!(matches!(error, UnpackError::TooLarge { limit: 1000 }));
    }

    #[test]
    fn hard_link_falls_back_to_a_copy_across_filesystems() {
        use std::os::unix::fs::MetadataExt;
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let here = tempfile::tempdir().unwrap();
        let other_dev = fs::metadata(other.path()).unwrap().dev();
        if other_dev == fs::metadata(here.path()).unwrap().dev() {
            return;
        }
        let source = other.path().join("f");
        fs::write(&source, b"body").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o750)).unwrap();
        let target = here.path().join("f");
        let mut budget = Budget::new(Limits::default());
        link_or_copy(&source, &target, &mut budget).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"body");
        assert_eq!(mode_of(&target), 0o750);
        assert_eq!(budget.bytes, 4);
    }

    #[test]
    fn link_targets() {
        let inside =
            |link: &str, target: &str| link_stays_inside(Path::new(link), Path::new(target));
        assert!(inside("a/l", "b"));
        assert!(inside("a/l", "../b"));
        assert!(inside("a/b/l", "../../c/d"));
        assert!(inside("l", "."));
        assert!(inside("l", "./b"));
        assert!(!inside("l", ".."));
        assert!(!inside("a/l", "../.."));
        assert!(!inside("l", "/etc/passwd"));
        assert!(!inside("l", "s/.."));
        assert!(!inside("a/l", "../b/../c"));
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
