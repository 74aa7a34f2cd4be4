//! The Install event: remove what the group's previous deployment installed, then copy the
//! revision's `files` and apply its `permissions`, as the CodeDeploy agent does. The whole
//! plan is made and checked before anything is touched, so a refused install leaves the
//! host as it was.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use buildspec::appspec::{AppSpec, FileExistsBehavior};
use serde::Serialize;

use super::allowed::{AllowedRoots, normalize};
use super::permissions::{self, PermissionOp};
use crate::source::unpack;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// CodeDeploy's own wording, which scripts and people search for.
    #[error("The deployment failed because a specified file already exists at this location: {0}")]
    Exists(String),
    #[error(
        "The deployment failed because the application specification file specifies two source files named {first} and {second} for the same destination ({destination}). Remove one of the source file paths from the AppSpec file, and then try again."
    )]
    DuplicateDestination {
        first: String,
        second: String,
        destination: String,
    },
    #[error(
        "The deployment failed because the application specification file calls for installing the file {file}, but a directory with that name is created at the location ({destination}). Update your AppSpec file or directory structure, and then try again."
    )]
    FileOverDirectory { file: String, destination: String },
    #[error("the files source `{0}` does not exist in the revision")]
    MissingSource(String),
    #[error("the files source `{0}` leaves the revision; name a path inside it")]
    SourceEscapes(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Permission(String),
    #[error("cannot install {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One step of an install, in the order it runs; also written to `<group>-install.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Mkdir {
        directory: PathBuf,
    },
    Copy {
        source: PathBuf,
        destination: PathBuf,
        /// The destination exists and OVERWRITE replaces it.
        replace: bool,
    },
    #[serde(untagged)]
    Permission(PermissionOp),
}

/// What an install did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Installed {
    pub removed: usize,
    pub files: usize,
    pub directories: usize,
    pub retained: usize,
}

pub struct InstallPlan {
    pub ops: Vec<Op>,
    pub retained: usize,
    /// What the previous deployment installed, to be removed first.
    previous: Vec<CleanupEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CleanupEntry {
    Path(PathBuf),
    Context(PathBuf),
}

/// Makes the plan for `appspec` from the revision in `archive`, checking every destination
/// against `allowed` and the existing files against `behavior`.
pub fn plan(
    appspec: &AppSpec,
    archive: &Path,
    behavior: FileExistsBehavior,
    allowed: &AllowedRoots,
    cleanup_file: &Path,
) -> Result<InstallPlan, InstallError> {
    let previous = read_cleanup(cleanup_file);
    let removed: HashSet<PathBuf> = previous
        .iter()
        .filter_map(|e| match e {
            CleanupEntry::Path(p) => Some(p.clone()),
            CleanupEntry::Context(_) => None,
        })
        .collect();
    let mut planner = Planner {
        archive,
        behavior,
        allowed,
        removed: &removed,
        ops: Vec::new(),
        copies: Vec::new(),
        copy_sources: std::collections::HashMap::new(),
        mkdirs: Vec::new(),
        retained: 0,
    };
    for mapping in &appspec.files {
        planner.file_mapping(&mapping.source.value, &mapping.destination.value)?;
    }
    let permission_ops = permissions::plan(
        &appspec.permissions,
        &planner.copies,
        &planner.mkdirs,
        |p| planner.is_dir(p),
    )
    .map_err(InstallError::Permission)?;
    let mut ops = planner.ops;
    ops.extend(permission_ops.into_iter().map(Op::Permission));
    Ok(InstallPlan {
        ops,
        retained: planner.retained,
        previous,
    })
}

struct Planner<'a> {
    archive: &'a Path,
    behavior: FileExistsBehavior,
    allowed: &'a AllowedRoots,
    removed: &'a HashSet<PathBuf>,
    ops: Vec<Op>,
    copies: Vec<PathBuf>,
    copy_sources: std::collections::HashMap<PathBuf, PathBuf>,
    mkdirs: Vec<PathBuf>,
    retained: usize,
}

impl Planner<'_> {
    fn file_mapping(&mut self, source: &str, destination: &str) -> Result<(), InstallError> {
        let destination = self
            .allowed
            .check(destination)
            .map_err(InstallError::Refused)?;
        let source_path = if source.trim_matches('/').is_empty() || source == "." {
            self.archive.to_path_buf()
        } else {
            let relative = unpack::enclosed(source.trim_start_matches('/'))
                .ok_or_else(|| InstallError::SourceEscapes(source.to_string()))?;
            self.refuse_links_in_archive(&relative, source)?;
            self.archive.join(relative)
        };
        let meta = fs::symlink_metadata(&source_path)
            .map_err(|_| InstallError::MissingSource(source.to_string()))?;
        if meta.is_dir() {
            self.missing_ancestors(&destination)?;
            self.directory_copy(&source_path, &destination)
        } else {
            let name = source_path
                .file_name()
                .ok_or_else(|| InstallError::MissingSource(source.to_string()))?;
            let target = destination.join(name);
            self.missing_ancestors(&target)?;
            self.normal_copy(&source_path, &target)
        }
    }

    /// A source read through a link could copy a host file (`/etc/shadow`) into the
    /// application's directory.
    fn refuse_links_in_archive(&self, relative: &Path, raw: &str) -> Result<(), InstallError> {
        let mut current = self.archive.to_path_buf();
        let parts: Vec<_> = relative.components().collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            current.push(part);
            if fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(InstallError::Refused(format!(
                    "the files source `{raw}` goes through the link {}; name the directory it points to",
                    current.display()
                )));
            }
        }
        Ok(())
    }

    /// Whether `path` exists once the previous deployment's files are removed.
    fn exists(&self, path: &Path) -> bool {
        if self.mkdirs.iter().any(|d| d == path) || self.copy_sources.contains_key(path) {
            return true;
        }
        let Ok(meta) = fs::symlink_metadata(path) else {
            return false;
        };
        if !self.removed.contains(path) {
            return true;
        }
        // A directory of the previous deployment stays when something else lives in it.
        meta.is_dir()
            && walkdir::WalkDir::new(path)
                .min_depth(1)
                .into_iter()
                .flatten()
                .any(|e| !self.removed.contains(e.path()))
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.mkdirs.iter().any(|d| d == path) || (self.exists(path) && path.is_dir())
    }

    fn missing_ancestors(&mut self, destination: &Path) -> Result<(), InstallError> {
        let mut missing = Vec::new();
        let mut parent = destination.parent();
        while let Some(dir) = parent {
            if dir == Path::new("/") || self.exists(dir) {
                break;
            }
            missing.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            self.mkdir(&dir)?;
        }
        Ok(())
    }

    fn mkdir(&mut self, dir: &Path) -> Result<(), InstallError> {
        if let Some(source) = self.copy_sources.get(dir) {
            return Err(InstallError::FileOverDirectory {
                file: source.display().to_string(),
                destination: dir.display().to_string(),
            });
        }
        if !self.mkdirs.iter().any(|d| d == dir) {
            self.ops.push(Op::Mkdir {
                directory: dir.to_path_buf(),
            });
            self.mkdirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn directory_copy(&mut self, source: &Path, destination: &Path) -> Result<(), InstallError> {
        if !self.is_dir(destination) {
            if self.exists(destination) {
                return Err(InstallError::Exists(destination.display().to_string()));
            }
            self.mkdir(destination)?;
        }
        let mut entries: Vec<_> = fs::read_dir(source)
            .map_err(io_at(source))?
            .collect::<Result<_, _>>()
            .map_err(io_at(source))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let target = destination.join(entry.file_name());
            let kind = entry.file_type().map_err(io_at(&path))?;
            if kind.is_dir() {
                self.directory_copy(&path, &target)?;
            } else {
                self.normal_copy(&path, &target)?;
            }
        }
        Ok(())
    }

    fn normal_copy(&mut self, source: &Path, destination: &Path) -> Result<(), InstallError> {
        if let Some(first) = self.copy_sources.get(destination) {
            return Err(InstallError::DuplicateDestination {
                first: first.display().to_string(),
                second: source.display().to_string(),
                destination: destination.display().to_string(),
            });
        }
        if self.mkdirs.iter().any(|d| d == destination) {
            return Err(InstallError::FileOverDirectory {
                file: source.display().to_string(),
                destination: destination.display().to_string(),
            });
        }
        let replace = if self.exists(destination) {
            match self.behavior {
                FileExistsBehavior::Disallow => {
                    return Err(InstallError::Exists(destination.display().to_string()));
                }
                FileExistsBehavior::Retain => {
                    self.retained += 1;
                    return Ok(());
                }
                FileExistsBehavior::Overwrite => {
                    if destination.is_dir() && !destination.is_symlink() {
                        return Err(InstallError::FileOverDirectory {
                            file: source.display().to_string(),
                            destination: destination.display().to_string(),
                        });
                    }
                    true
                }
            }
        } else {
            false
        };
        self.ops.push(Op::Copy {
            source: source.to_path_buf(),
            destination: destination.to_path_buf(),
            replace,
        });
        self.copies.push(destination.to_path_buf());
        self.copy_sources
            .insert(destination.to_path_buf(), source.to_path_buf());
        Ok(())
    }
}

/// Runs the plan: removes the previous deployment's files, then installs, recording each
/// path in the new cleanup file *before* creating it, so a crash mid-install still lets
/// the next deployment remove what this one left.
pub fn execute(
    plan: &InstallPlan,
    allowed: &AllowedRoots,
    cleanup_file: &Path,
    install_file: &Path,
) -> Result<Installed, InstallError> {
    let mut done = Installed {
        retained: plan.retained,
        ..Installed::default()
    };
    done.removed = remove_previous(&plan.previous);
    match fs::remove_file(cleanup_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(cleanup_file)(e)),
        _ => {}
    }
    let instructions = serde_json::json!({ "instructions": plan.ops });
    fs::write(install_file, instructions.to_string()).map_err(io_at(install_file))?;
    let mut record = io::BufWriter::new(
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cleanup_file)
            .map_err(io_at(cleanup_file))?,
    );
    let mut note = |line: &str| -> Result<(), InstallError> {
        record
            .write_all(line.as_bytes())
            .and_then(|()| record.write_all(b"\n"))
            .and_then(|()| record.flush())
            .map_err(io_at(cleanup_file))
    };
    for op in &plan.ops {
        match op {
            Op::Mkdir { directory } => {
                guard_parent(allowed, directory)?;
                note(&directory.display().to_string())?;
                fs::create_dir(directory).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => {
                        InstallError::Exists(directory.display().to_string())
                    }
                    _ => io_at(directory)(e),
                })?;
                done.directories += 1;
            }
            Op::Copy {
                source,
                destination,
                replace,
            } => {
                guard_parent(allowed, destination)?;
                note(&destination.display().to_string())?;
                copy(source, destination, *replace)?;
                done.files += 1;
            }
            Op::Permission(op) => {
                if let Some(context_path) =
                    permissions::apply(op).map_err(InstallError::Permission)?
                {
                    note(&format!("semanage\0{}", context_path.display()))?;
                }
            }
        }
    }
    record
        .into_inner()
        .map_err(|e| io_at(cleanup_file)(e.into_error()))?
        .sync_all()
        .map_err(io_at(cleanup_file))?;
    Ok(done)
}

/// The parent as it is on disk now must be inside an allowed root: a link placed there by
/// anyone since the plan was made does not redirect the install.
fn guard_parent(allowed: &AllowedRoots, path: &Path) -> Result<(), InstallError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    allowed.check_resolved(parent).map_err(|resolved| {
        InstallError::Refused(format!(
            "refusing to write {}: its directory resolves to {}, outside the allowed destinations",
            path.display(),
            resolved.display()
        ))
    })
}

fn copy(source: &Path, destination: &Path, replace: bool) -> Result<(), InstallError> {
    let meta = fs::symlink_metadata(source).map_err(io_at(source))?;
    let dir = destination.parent().unwrap_or(Path::new("/"));
    if meta.file_type().is_symlink() {
        let target = fs::read_link(source).map_err(io_at(source))?;
        if replace {
            fs::remove_file(destination).map_err(io_at(destination))?;
        }
        return std::os::unix::fs::symlink(&target, destination).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => InstallError::Exists(destination.display().to_string()),
            _ => io_at(destination)(e),
        });
    }
    if !replace && fs::symlink_metadata(destination).is_ok() {
        return Err(InstallError::Exists(destination.display().to_string()));
    }
    // Copy beside the destination and rename over it: a running program being replaced
    // keeps its old file, and nobody sees half a file.
    let tmp = tempfile::Builder::new()
        .prefix(".agent-install-")
        .tempfile_in(dir)
        .map_err(io_at(destination))?;
    let mut reader = fs::File::open(source).map_err(io_at(source))?;
    let mut writer = tmp.as_file();
    io::copy(&mut reader, &mut writer).map_err(io_at(destination))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at(destination))?;
    }
    if let Ok(modified) = meta.modified() {
        let _ = tmp.as_file().set_modified(modified);
    }
    tmp.persist(destination)
        .map_err(|e| io_at(destination)(e.error))?;
    Ok(())
}

fn read_cleanup(path: &Path) -> Vec<CleanupEntry> {
    let Ok(text) = fs::read(path) else {
        return Vec::new();
    };
    let mut lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    // A line without its newline was being written when the agent stopped.
    if lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
        lines.pop();
    }
    let mut entries: Vec<CleanupEntry> = Vec::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\n');
        let entry = match line.strip_prefix("semanage\0") {
            Some(path) => CleanupEntry::Context(PathBuf::from(path)),
            None => CleanupEntry::Path(PathBuf::from(line)),
        };
        let path = match &entry {
            CleanupEntry::Path(p) | CleanupEntry::Context(p) => p,
        };
        // Only absolute, plain paths: the file is ours, but a damaged one must not remove
        // something unexpected.
        if path.is_absolute() && normalize(path).as_deref() == Some(path.as_path()) {
            entries.push(entry);
        }
    }
    entries
}

/// Removes, newest first, what the previous deployment recorded; directories only when
/// empty (someone else's files in them stay).
fn remove_previous(entries: &[CleanupEntry]) -> usize {
    let mut removed = 0;
    for entry in entries.iter().rev() {
        match entry {
            CleanupEntry::Context(path) => permissions::remove_context(path),
            CleanupEntry::Path(path) => {
                let Ok(meta) = fs::symlink_metadata(path) else {
                    continue;
                };
                let result = if meta.is_dir() {
                    fs::remove_dir(path)
                } else {
                    fs::remove_file(path)
                };
                match result {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::info!(path = %path.display(), error = %e, "left in place"),
                }
            }
        }
    }
    removed
}

/// The paths the last install recorded (for tests and `agent deploy` status).
pub fn recorded(cleanup_file: &Path) -> Vec<PathBuf> {
    let Ok(file) = fs::File::open(cleanup_file) else {
        return Vec::new();
    };
    io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.starts_with("semanage\0"))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildspec::Source;

    struct Fixture {
        _base: tempfile::TempDir,
        archive: PathBuf,
        dest: PathBuf,
        state: PathBuf,
        allowed: AllowedRoots,
    }

    fn fixture(files: &[(&str, &str)]) -> Fixture {
        let base = tempfile::tempdir().unwrap();
        let archive = base.path().join("archive");
        let dest = base.path().join("dest");
        let state = base.path().join("state");
        for dir in [&archive, &dest, &state] {
            fs::create_dir_all(dir).unwrap();
        }
        for (path, body) in files {
            let p = archive.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        let allowed = AllowedRoots::new(std::slice::from_ref(&dest), &state);
        Fixture {
            _base: base,
            archive,
            dest,
            state,
            allowed,
        }
    }

    fn appspec(text: &str) -> AppSpec {
        let parsed = buildspec::parse_appspec(&Source::new("appspec.yml", text));
        assert!(parsed.errors().next().is_none(), "{:?}", parsed.diagnostics);
        parsed.value.unwrap()
    }

    fn install(
        f: &Fixture,
        spec: &str,
        behavior: FileExistsBehavior,
    ) -> Result<Installed, InstallError> {
        let spec = appspec(&spec.replace("DEST", f.dest.to_str().unwrap()));
        let cleanup = f.state.join("g-cleanup");
        let plan = plan(&spec, &f.archive, behavior, &f.allowed, &cleanup)?;
        execute(&plan, &f.allowed, &cleanup, &f.state.join("g-install.json"))
    }

    const SPEC: &str = "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: DEST/web\n  - source: conf/app.conf\n    destination: DEST/etc\n";

    #[test]
    fn directories_copy_their_contents_and_files_keep_their_name() {
        let f = fixture(&[
            ("app/index.html", "hi"),
            ("app/js/a.js", "a"),
            ("conf/app.conf", "c"),
        ]);
        let done = install(&f, SPEC, FileExistsBehavior::Disallow).unwrap();
        assert_eq!(
            fs::read_to_string(f.dest.join("web/index.html")).unwrap(),
            "hi"
        );
        assert_eq!(fs::read_to_string(f.dest.join("web/js/a.js")).unwrap(), "a");
        assert_eq!(
            fs::read_to_string(f.dest.join("etc/app.conf")).unwrap(),
            "c"
        );
        assert_eq!((done.files, done.directories), (3, 3));
        let recorded = recorded(&f.state.join("g-cleanup"));
        assert_eq!(recorded.len(), 6);
    }

    #[test]
    fn a_second_install_removes_exactly_what_the_first_installed() {
        let f = fixture(&[("app/old.html", "old"), ("conf/app.conf", "c")]);
        install(&f, SPEC, FileExistsBehavior::Disallow).unwrap();
        fs::write(f.dest.join("web/user-upload.png"), "keep").unwrap();
        fs::remove_file(f.archive.join("app/old.html")).unwrap();
        fs::write(f.archive.join("app/new.html"), "new").unwrap();
        install(&f, SPEC, FileExistsBehavior::Disallow).unwrap();
        assert!(!f.dest.join("web/old.html").exists());
        assert!(f.dest.join("web/new.html").exists());
        assert_eq!(
            fs::read_to_string(f.dest.join("web/user-upload.png")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn existing_files_follow_the_behavior_and_disallow_touches_nothing() {
        let f = fixture(&[
            ("app/index.html", "new"),
            ("app/b.html", "b"),
            ("conf/app.conf", "c"),
        ]);
        fs::create_dir_all(f.dest.join("web")).unwrap();
        fs::write(f.dest.join("web/index.html"), "theirs").unwrap();
        let err = install(&f, SPEC, FileExistsBehavior::Disallow).unwrap_err();
        assert!(
            err.to_string().contains("already exists at this location"),
            "{err}"
        );
        assert!(
            !f.dest.join("web/b.html").exists(),
            "nothing installed on refusal"
        );
        assert!(!f.dest.join("etc").exists());

        install(&f, SPEC, FileExistsBehavior::Retain).unwrap();
        assert_eq!(
            fs::read_to_string(f.dest.join("web/index.html")).unwrap(),
            "theirs"
        );
        // The retained file is not ours: it is not removed by the next deployment.
        assert!(!recorded(&f.state.join("g-cleanup")).contains(&f.dest.join("web/index.html")));

        let g = fixture(&[("app/index.html", "new"), ("conf/app.conf", "c")]);
        fs::create_dir_all(g.dest.join("web")).unwrap();
        fs::write(g.dest.join("web/index.html"), "theirs").unwrap();
        install(&g, SPEC, FileExistsBehavior::Overwrite).unwrap();
        assert_eq!(
            fs::read_to_string(g.dest.join("web/index.html")).unwrap(),
            "new"
        );
    }

    #[test]
    fn links_are_copied_as_links_and_never_followed() {
        let f = fixture(&[("app/real.txt", "r"), ("conf/app.conf", "c")]);
        std::os::unix::fs::symlink("real.txt", f.archive.join("app/alias")).unwrap();
        install(&f, SPEC, FileExistsBehavior::Disallow).unwrap();
        let link = f.dest.join("web/alias");
        assert!(link.is_symlink());
        assert_eq!(fs::read_link(link).unwrap(), Path::new("real.txt"));

        // A source read through a link in the revision is refused.
        let g = fixture(&[("conf/app.conf", "c")]);
        std::os::unix::fs::symlink("/etc", g.archive.join("app")).unwrap();
        let spec =
            "version: 0.0\nos: linux\nfiles:\n  - source: app/passwd\n    destination: DEST/x\n";
        let err = install(&g, spec, FileExistsBehavior::Disallow).unwrap_err();
        assert!(err.to_string().contains("goes through the link"), "{err}");
    }

    #[test]
    fn destinations_outside_the_allowed_roots_are_refused_before_anything_is_written() {
        let f = fixture(&[("app/index.html", "hi"), ("conf/app.conf", "c")]);
        let outside = f.state.parent().unwrap().join("outside");
        let spec = format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: DEST/web\n  - source: conf\n    destination: {}\n",
            outside.display()
        );
        let err = install(&f, &spec, FileExistsBehavior::Disallow).unwrap_err();
        assert!(err.to_string().contains("outside the directories"), "{err}");
        assert!(!f.dest.join("web").exists());
        assert!(!outside.exists());
    }

    #[test]
    fn a_link_planted_in_the_destination_does_not_redirect_writes() {
        let f = fixture(&[("app/conf/x.conf", "x"), ("conf/app.conf", "c")]);
        let outside = f.state.parent().unwrap().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(f.dest.join("web")).unwrap();
        std::os::unix::fs::symlink(&outside, f.dest.join("web/conf")).unwrap();
        let err = install(&f, SPEC, FileExistsBehavior::Overwrite).unwrap_err();
        assert!(
            err.to_string().contains("outside the allowed destinations"),
            "{err}"
        );
        assert!(!outside.join("x.conf").exists());
    }

    #[test]
    fn an_unfinished_cleanup_line_is_ignored() {
        let f = fixture(&[]);
        let cleanup = f.state.join("g-cleanup");
        let kept = f.dest.join("a");
        fs::write(&kept, "").unwrap();
        fs::write(
            &cleanup,
            format!("{}\n{}/b", kept.display(), f.dest.display()),
        )
        .unwrap();
        assert_eq!(read_cleanup(&cleanup), vec![CleanupEntry::Path(kept)]);
    }
}
