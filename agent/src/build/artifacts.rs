//! Selects the files a buildspec `artifacts` block (or one secondary artifact)
//! names, with CodeBuild's path and glob rules, and lays them out as an
//! unpacked (packaging `NONE`) artifact.
//!
//! Patterns are matched against paths relative to the base directory with
//! `/` as a hard separator: `*`, `?` and `[...]` stay inside one component,
//! `**` spans components, and dot files get no special treatment because
//! CodeBuild's `**/*` includes them.
//!
//! Nothing outside the allowed roots may end up in an artifact: walks never
//! follow symlinks to directories, and a selected symlink to a file must
//! resolve inside a root, or selection fails rather than skipping it, because
//! CodeBuild would have uploaded it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

/// One artifact block with its shell-expanded values (expansion happens elsewhere).
#[derive(Debug, Clone, Copy)]
pub struct ArtifactSpec<'a> {
    pub files: &'a [String],
    /// Relative to the source root, or absolute; may be a glob (`my-build*`) matching several dirs.
    pub base_directory: Option<&'a str>,
    pub discard_paths: bool,
    pub exclude_paths: &'a [String],
    pub enable_symlinks: bool,
}

/// A file to copy: where it is, and its path inside the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub source: PathBuf,
    /// `/`-separated, relative, without `.` or `..` components.
    pub relative: String,
    /// Copy the link itself (its target text unchanged) rather than the file it points to.
    pub symlink: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the artifact block lists no files")]
    NoFiles,
    #[error("artifact path '{pattern}' {reason}")]
    UnsafePattern {
        pattern: String,
        reason: &'static str,
    },
    #[error("invalid artifact pattern '{pattern}': {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("base-directory '{base}' {reason}")]
    UnsafeBase { base: String, reason: &'static str },
    #[error("base-directory '{base}' matches no directory")]
    BaseNotFound { base: String },
    #[error(
        "base-directory '{base}' resolves to {}, outside every source directory",
        resolved.display()
    )]
    BaseOutsideRoots { base: String, resolved: PathBuf },
    #[error("{}", no_match_message(.patterns))]
    NoMatch { patterns: Vec<String> },
    #[error(
        "symlink {} points to {}, outside every source directory",
        link.display(),
        target.display()
    )]
    SymlinkOutside { link: PathBuf, target: PathBuf },
    #[error(
        "{} and {} would both be written to artifact path '{relative}'",
        first.display(),
        second.display()
    )]
    Collision {
        relative: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("artifact path '{file}' is a file, but '{nested}' needs it to be a directory")]
    PathConflict { file: String, nested: String },
    #[error("artifact path '{relative}' is not a plain relative path")]
    UnsafeRelative { relative: String },
    #[error("{} has a name that is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
    #[error("artifact destination {} is not an empty directory", dest.display())]
    DestinationNotEmpty { dest: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn no_match_message(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("no matching artifact paths found for pattern '{p}'"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn walk_error(err: walkdir::Error) -> ArtifactError {
    let path = err.path().map(Path::to_path_buf).unwrap_or_default();
    let source = err
        .into_io_error()
        .unwrap_or_else(|| io::Error::other("filesystem loop"));
    ArtifactError::Io { path, source }
}

/// `source_root`: the primary source dir (host path). `allowed_roots`: every dir files may
/// come from (the source root and secondary source dirs); nothing outside them is ever selected.
pub fn select(
    source_root: &Path,
    allowed_roots: &[PathBuf],
    spec: &ArtifactSpec,
) -> Result<Vec<Selected>, ArtifactError> {
    if spec.files.is_empty() {
        return Err(ArtifactError::NoFiles);
    }
    let files = PatternSet::new(spec.files, true)?;
    let excludes = PatternSet::new(spec.exclude_paths, false)?;
    let prune = excludes.prune_set()?;
    let roots = Roots::new(allowed_roots);
    let bases = resolve_bases(source_root, &roots, spec.base_directory)?;

    let mut matched = vec![false; spec.files.len()];
    let mut hits = Vec::new();
    let mut selected = Vec::new();
    for base in &bases {
        let walker = WalkDir::new(base)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| {
                keep_entry(entry, base, |rel| {
                    files.may_match_under(rel) && !prune.is_match(rel)
                })
            });
        for entry in walker {
            let entry = entry.map_err(walk_error)?;
            let kind = entry.file_type();
            if entry.depth() == 0 || kind.is_dir() {
                continue;
            }
            let rel = entry.path().strip_prefix(base).unwrap_or(entry.path());
            let candidate = Candidate::new(rel);
            files.set.matches_candidate_into(&candidate, &mut hits);
            if hits.is_empty() || excludes.set.is_match_candidate(&candidate) {
                continue;
            }
            let is_link = if kind.is_file() {
                false
            } else if kind.is_symlink() && links_to_allowed_file(entry.path(), &roots)? {
                true
            } else {
                // Sockets, fifos, devices, dangling links and links to
                // directories: nothing CodeBuild could put in an artifact.
                continue;
            };
            let relative = if spec.discard_paths {
                utf8(Path::new(entry.file_name()), entry.path())?
            } else {
                utf8(rel, entry.path())?
            };
            for &hit in &hits {
                if let Some(&owner) = files.owner.get(hit)
                    && let Some(flag) = matched.get_mut(owner)
                {
                    *flag = true;
                }
            }
            selected.push(Selected {
                source: entry.into_path(),
                relative,
                symlink: is_link && spec.enable_symlinks,
            });
        }
    }

    let unmatched: Vec<String> = spec
        .files
        .iter()
        .zip(&matched)
        .filter(|(_, hit)| !**hit)
        .map(|(pattern, _)| pattern.clone())
        .collect();
    if !unmatched.is_empty() {
        return Err(ArtifactError::NoMatch {
            patterns: unmatched,
        });
    }

    selected.sort_by(|a, b| (&a.relative, &a.source).cmp(&(&b.relative, &b.source)));
    // Overlapping patterns or nested glob bases can reach one file twice.
    selected.dedup_by(|a, b| a.relative == b.relative && a.source == b.source);
    check_layout(selected.iter())?;
    Ok(selected)
}

/// Copies into `dest` (created; must be empty or absent), returns the relative paths written, sorted.
pub fn copy_into(selected: &[Selected], dest: &Path) -> Result<Vec<String>, ArtifactError> {
    for item in selected {
        if normalize(&item.relative).ok().as_deref() != Some(item.relative.as_str())
            || item.relative.is_empty()
        {
            return Err(ArtifactError::UnsafeRelative {
                relative: item.relative.clone(),
            });
        }
    }
    let mut order: Vec<&Selected> = selected.iter().collect();
    order.sort_by(|a, b| (&a.relative, &a.source).cmp(&(&b.relative, &b.source)));
    order.dedup_by(|a, b| a.relative == b.relative && a.source == b.source);
    // Checked before anything is written so a refused layout leaves no half-copied tree.
    check_layout(order.iter().copied())?;
    prepare_destination(dest)?;

    let mut made: HashSet<&Path> = HashSet::new();
    let targets: Vec<PathBuf> = order.iter().map(|item| dest.join(&item.relative)).collect();
    for target in &targets {
        if let Some(parent) = target.parent()
            && made.insert(parent)
        {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
    }
    // Small files cost a handful of syscalls each; spreading them over a few
    // threads hides their latency on slow (virtualised, networked) disks.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, COPY_THREADS);
    let chunk = order.len().div_ceil(threads).max(1);
    let jobs: Vec<(&[&Selected], &[PathBuf])> =
        order.chunks(chunk).zip(targets.chunks(chunk)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(items, targets)| scope.spawn(move || copy_files(items, targets)))
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })?;
    Ok(order
        .into_iter()
        .map(|item| item.relative.clone())
        .collect())
}

const COPY_THREADS: usize = 8;

fn copy_files(items: &[&Selected], targets: &[PathBuf]) -> Result<(), ArtifactError> {
    for (item, target) in items.iter().zip(targets) {
        if item.symlink {
            let link_text = fs::read_link(&item.source).map_err(io_error(&item.source))?;
            symlink(&link_text, target).map_err(io_error(target))?;
        } else {
            // `fs::copy` carries the permission bits over, so executables stay executable.
            fs::copy(&item.source, target).map_err(io_error(&item.source))?;
        }
    }
    Ok(())
}

fn prepare_destination(dest: &Path) -> Result<(), ArtifactError> {
    match fs::metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(io_error(dest))?;
            if entries.next().is_some() {
                return Err(ArtifactError::DestinationNotEmpty {
                    dest: dest.to_path_buf(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(ArtifactError::DestinationNotEmpty {
            dest: dest.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_error(dest))
        }
        Err(err) => Err(io_error(dest)(err)),
    }
}

/// Refuses two different files at one artifact path, and a file standing where
/// another one needs a directory; `items` must be sorted by relative path.
fn check_layout<'s>(
    items: impl Iterator<Item = &'s Selected> + Clone,
) -> Result<(), ArtifactError> {
    let mut previous: Option<&Selected> = None;
    for item in items.clone() {
        if let Some(prev) = previous
            && prev.relative == item.relative
        {
            return Err(ArtifactError::Collision {
                relative: item.relative.clone(),
                first: prev.source.clone(),
                second: item.source.clone(),
            });
        }
        previous = Some(item);
    }
    let all: HashSet<&str> = items.clone().map(|s| s.relative.as_str()).collect();
    for item in items {
        for (cut, _) in item.relative.match_indices('/') {
            let ancestor = &item.relative[..cut];
            if all.contains(ancestor) {
                return Err(ArtifactError::PathConflict {
                    file: ancestor.to_string(),
                    nested: item.relative.clone(),
                });
            }
        }
    }
    Ok(())
}

fn utf8(path: &Path, full: &Path) -> Result<String, ArtifactError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| ArtifactError::NonUtf8Path {
            path: full.to_path_buf(),
        })
}

/// Whether the walk should keep `entry`; directories are kept only when
/// `descend` says something under them can still be selected.
fn keep_entry(entry: &DirEntry, base: &Path, descend: impl Fn(&Path) -> bool) -> bool {
    if entry.depth() == 0 || !entry.file_type().is_dir() {
        return true;
    }
    match entry.path().strip_prefix(base) {
        Ok(rel) => descend(rel),
        Err(_) => true,
    }
}

/// Whether the symlink at `link` is one to select: it resolves to a regular
/// file. Anything else is skipped; a file outside every root is refused.
fn links_to_allowed_file(link: &Path, roots: &Roots) -> Result<bool, ArtifactError> {
    // A link that cannot be resolved (dangling, looping, unreadable) has no
    // content to copy and nothing to leak.
    let Ok(target) = fs::canonicalize(link) else {
        return Ok(false);
    };
    let Ok(meta) = fs::metadata(&target) else {
        return Ok(false);
    };
    if !meta.is_file() {
        return Ok(false);
    }
    if !roots.contains(&target) {
        return Err(ArtifactError::SymlinkOutside {
            link: link.to_path_buf(),
            target,
        });
    }
    Ok(true)
}

const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

fn is_glob(pattern: &str) -> bool {
    pattern.contains(GLOB_META)
}

/// Drops empty and `.` components (so `./a//b/` is `a/b`); refuses absolute
/// paths and `..`, which could reach outside the base directory.
fn normalize(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("is absolute");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("contains a '..' component"),
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn compile(pattern: &str, shown: &str) -> Result<globset::Glob, ArtifactError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| ArtifactError::InvalidPattern {
            pattern: shown.to_string(),
            reason: err.kind().to_string(),
        })
}

/// Where a walk must look for one glob: below its literal leading directories,
/// and, without `**`, no deeper than its number of components.
struct Shape {
    prefix: Vec<String>,
    depth: Option<usize>,
}

impl Shape {
    fn new(glob: &str) -> Shape {
        let literal = glob.find(GLOB_META).map_or(glob, |at| &glob[..at]);
        let literal_dirs = if literal.len() == glob.len() {
            literal
        } else {
            literal.rfind('/').map_or("", |at| &literal[..at])
        };
        let prefix = literal_dirs
            .split('/')
            .filter(|part| !part.is_empty())
            .map(str::to_string)
            .collect();
        // Braces and classes may hide separators or `**`, so only plain
        // globs get a depth bound.
        let depth = if glob.contains("**") || glob.contains(['{', '[']) {
            None
        } else {
            Some(glob.split('/').count())
        };
        Shape { prefix, depth }
    }

    /// Whether a directory at `rel` can hold a path this glob matches.
    fn may_match_under(&self, rel: &Path) -> bool {
        self.admits(rel, 1)
    }

    /// Whether the directory at `rel` can itself be what this glob matches.
    fn may_match_dir(&self, rel: &Path) -> bool {
        self.admits(rel, 0)
    }

    /// `below`: how many components a match needs beyond `rel`.
    fn admits(&self, rel: &Path, below: usize) -> bool {
        let mut depth = 0;
        for (at, component) in rel.components().enumerate() {
            depth = at + 1;
            if let Some(want) = self.prefix.get(at)
                && component.as_os_str() != want.as_str()
            {
                return false;
            }
        }
        self.depth.is_none_or(|max| depth + below <= max)
    }
}

/// The compiled `files` (or `exclude-paths`) list of one block.
struct PatternSet {
    set: GlobSet,
    /// For each glob in `set`, the index of the pattern it came from.
    owner: Vec<usize>,
    globs: Vec<String>,
    shapes: Vec<Shape>,
}

impl PatternSet {
    fn new(patterns: &[String], files: bool) -> Result<PatternSet, ArtifactError> {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut globs = Vec::new();
        for (index, raw) in patterns.iter().enumerate() {
            if raw.trim().is_empty() {
                return Err(ArtifactError::InvalidPattern {
                    pattern: raw.clone(),
                    reason: "empty pattern".to_string(),
                });
            }
            let norm = normalize(raw).map_err(|reason| ArtifactError::UnsafePattern {
                pattern: raw.clone(),
                reason,
            })?;
            let mut add = |glob: String| -> Result<(), ArtifactError> {
                builder.add(compile(&glob, raw)?);
                owner.push(index);
                globs.push(glob);
                Ok(())
            };
            if norm.is_empty() {
                // `.` names the base directory itself.
                add("**".to_string())?;
            } else if is_glob(&norm) {
                add(norm)?;
            } else {
                // A plain path matches the file of that name or, if it is a
                // directory, everything under it; one of the two globs can never
                // match, so no filesystem check is needed here.
                add(format!("{norm}/**"))?;
                add(norm)?;
            }
        }
        let set = builder
            .build()
            .map_err(|err| ArtifactError::InvalidPattern {
                pattern: patterns.join(", "),
                reason: err.to_string(),
            })?;
        let shapes = if files {
            globs.iter().map(|g| Shape::new(g)).collect()
        } else {
            Vec::new()
        };
        Ok(PatternSet {
            set,
            owner,
            globs,
            shapes,
        })
    }

    fn may_match_under(&self, rel: &Path) -> bool {
        self.shapes.iter().any(|shape| shape.may_match_under(rel))
    }

    /// Directories an exclude removes wholesale (`X/**`, `X/**/*`), so the
    /// walk can skip them instead of reading, say, every `node_modules`.
    fn prune_set(&self) -> Result<GlobSet, ArtifactError> {
        let mut builder = GlobSetBuilder::new();
        for glob in &self.globs {
            let dir = glob
                .strip_suffix("/**")
                .or_else(|| glob.strip_suffix("/**/*"));
            if let Some(dir) = dir.filter(|d| !d.is_empty()) {
                builder.add(compile(dir, glob)?);
            }
        }
        builder
            .build()
            .map_err(|err| ArtifactError::InvalidPattern {
                pattern: self.globs.join(", "),
                reason: err.to_string(),
            })
    }
}

/// The allowed roots, as given and with symlinks resolved.
struct Roots {
    given: Vec<PathBuf>,
    resolved: Vec<PathBuf>,
}

impl Roots {
    fn new(allowed: &[PathBuf]) -> Roots {
        let resolved = allowed
            .iter()
            .map(|root| fs::canonicalize(root).unwrap_or_else(|_| root.clone()))
            .collect();
        Roots {
            given: allowed.to_vec(),
            resolved,
        }
    }

    /// `path` must already be resolved.
    fn contains(&self, path: &Path) -> bool {
        self.resolved.iter().any(|root| path.starts_with(root))
    }

    /// The root an absolute base is written under, and the rest of the base.
    fn split<'p>(&self, path: &'p Path) -> Option<(&Path, &'p Path)> {
        self.given
            .iter()
            .chain(&self.resolved)
            .filter_map(|root| Some((root.as_path(), path.strip_prefix(root).ok()?)))
            .max_by_key(|(root, _)| root.components().count())
    }
}

fn resolve_bases(
    source_root: &Path,
    roots: &Roots,
    base: Option<&str>,
) -> Result<Vec<PathBuf>, ArtifactError> {
    let raw = base.unwrap_or("");
    let unsafe_base = |reason| ArtifactError::UnsafeBase {
        base: raw.to_string(),
        reason,
    };
    let (anchor, rest) = if raw.starts_with('/') {
        let absolute = Path::new(raw);
        if absolute.components().any(|c| c == Component::ParentDir) {
            return Err(unsafe_base("contains a '..' component"));
        }
        let (root, rest) =
            roots
                .split(absolute)
                .ok_or_else(|| ArtifactError::BaseOutsideRoots {
                    base: raw.to_string(),
                    resolved: absolute.to_path_buf(),
                })?;
        let rest = rest.to_str().unwrap_or_default();
        (root, normalize(rest).map_err(unsafe_base)?)
    } else {
        (source_root, normalize(raw).map_err(unsafe_base)?)
    };

    let not_found = || ArtifactError::BaseNotFound {
        base: raw.to_string(),
    };
    let inside = |dir: PathBuf| {
        if roots.contains(&dir) {
            Ok(dir)
        } else {
            Err(ArtifactError::BaseOutsideRoots {
                base: raw.to_string(),
                resolved: dir,
            })
        }
    };

    if !is_glob(&rest) {
        let dir = match fs::canonicalize(anchor.join(&rest)) {
            Ok(dir) => dir,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(err) => return Err(io_error(&anchor.join(&rest))(err)),
        };
        if !dir.is_dir() {
            return Err(not_found());
        }
        return Ok(vec![inside(dir)?]);
    }

    let glob = compile(&rest, raw)?.compile_matcher();
    let shape = Shape::new(&rest);
    let anchor = match fs::canonicalize(anchor) {
        Ok(dir) => dir,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(err) => return Err(io_error(anchor)(err)),
    };
    let mut found = Vec::new();
    let walker = WalkDir::new(&anchor)
        .follow_links(false)
        .max_depth(shape.depth.unwrap_or(usize::MAX))
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| keep_entry(entry, &anchor, |rel| shape.may_match_dir(rel)));
    for entry in walker {
        let entry = entry.map_err(walk_error)?;
        if entry.depth() == 0 || !entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(&anchor).unwrap_or(entry.path());
        if glob.is_match(rel) {
            found.push(inside(entry.into_path())?);
        }
    }
    if found.is_empty() {
        return Err(not_found());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn spec<'a>(files: &'a [String], excludes: &'a [String]) -> ArtifactSpec<'a> {
        ArtifactSpec {
            files,
            base_directory: None,
            discard_paths: false,
            exclude_paths: excludes,
            enable_symlinks: false,
        }
    }

    fn run(root: &Path, spec: &ArtifactSpec) -> Result<Vec<String>, ArtifactError> {
        let picked = select(root, &[root.to_path_buf()], spec)?;
        Ok(picked.into_iter().map(|s| s.relative).collect())
    }

    fn my_build_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "my-build-1/my-file-1.txt", "1");
        write(dir.path(), "my-build-2/my-file-2.txt", "2");
        write(dir.path(), "my-build-2/my-subdirectory/my-file-3.txt", "3");
        dir
    }

    #[test]
    fn base_directory_is_left_out_of_paths() {
        let dir = my_build_tree();
        let files = strings(&["*/my-file-3.txt"]);
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some("my-build-2");
        assert_eq!(
            run(dir.path(), &spec).unwrap(),
            ["my-subdirectory/my-file-3.txt"]
        );
    }

    #[test]
    fn glob_base_with_discard_paths_merges_directories() {
        let dir = my_build_tree();
        let files = strings(&["**/*"]);
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some("my-build*");
        spec.discard_paths = true;
        assert_eq!(
            run(dir.path(), &spec).unwrap(),
            ["my-file-1.txt", "my-file-2.txt", "my-file-3.txt"]
        );
    }

    #[test]
    fn documented_pattern_forms() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "my-file.jar", "");
        write(dir.path(), "sub/my-file.jar", "");
        write(dir.path(), "sub/deeper/inner.txt", "");
        let check = |pattern: &str, want: &[&str]| {
            let files = strings(&[pattern]);
            assert_eq!(
                run(dir.path(), &spec(&files, &[])).unwrap(),
                want,
                "{pattern}"
            );
        };
        check("my-file.jar", &["my-file.jar"]);
        check("sub/my-file.jar", &["sub/my-file.jar"]);
        check(
            "**/*",
            &["my-file.jar", "sub/deeper/inner.txt", "sub/my-file.jar"],
        );
        check("sub/*", &["sub/my-file.jar"]);
        check("sub/**/*", &["sub/deeper/inner.txt", "sub/my-file.jar"]);
        check("*.jar", &["my-file.jar"]);
        check("**/*.jar", &["my-file.jar", "sub/my-file.jar"]);
        check("sub/my-file.ja?", &["sub/my-file.jar"]);
        check("sub/[d]*/*.txt", &["sub/deeper/inner.txt"]);
    }

    #[test]
    fn star_stays_inside_one_component_and_classes_work() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", "");
        write(dir.path(), "b.txt", "");
        write(dir.path(), "c.txt", "");
        write(dir.path(), "sub/a.txt", "");
        let files = strings(&["*.txt"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &[])).unwrap(),
            ["a.txt", "b.txt", "c.txt"]
        );
        let files = strings(&["[ab].txt", "su?/?.txt"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &[])).unwrap(),
            ["a.txt", "b.txt", "sub/a.txt"]
        );
    }

    #[test]
    fn leading_dot_slash_is_ignored() {
        let dir = my_build_tree();
        let files = strings(&["./my-build-1/my-file-1.txt", "./my-build-2/*"]);
        let mut spec = spec(&files, &[]);
        assert_eq!(
            run(dir.path(), &spec).unwrap(),
            ["my-build-1/my-file-1.txt", "my-build-2/my-file-2.txt"]
        );
        let files = strings(&["*"]);
        spec.files = &files;
        spec.base_directory = Some("./my-build-2/");
        assert_eq!(run(dir.path(), &spec).unwrap(), ["my-file-2.txt"]);
    }

    #[test]
    fn dot_files_are_matched() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "");
        write(dir.path(), ".git/config", "");
        write(dir.path(), "src/.hidden", "");
        write(dir.path(), "src/main.rs", "");
        let files = strings(&["**/*"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &[])).unwrap(),
            [".env", ".git/config", "src/.hidden", "src/main.rs"]
        );
        let files = strings(&["*"]);
        assert_eq!(run(dir.path(), &spec(&files, &[])).unwrap(), [".env"]);
    }

    #[test]
    fn exclude_paths_examples() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "");
        write(dir.path(), ".git/config", "");
        write(dir.path(), "app/.cache/blob", "");
        write(dir.path(), "app/.npmrc", "");
        write(dir.path(), "app/index.js", "");
        write(dir.path(), "app/node_modules/left-pad/index.js", "");
        write(dir.path(), "node_modules/x/y.js", "");
        write(dir.path(), "logs/file-name/out.log", "");
        write(dir.path(), "file-name", "");
        let files = strings(&["**/*"]);
        let check = |excludes: &[&str], want: &[&str]| {
            let excludes = strings(excludes);
            assert_eq!(
                run(dir.path(), &spec(&files, &excludes)).unwrap(),
                want,
                "{excludes:?}"
            );
        };
        check(
            &["**/.*/**/*"],
            &[
                ".env",
                "app/.npmrc",
                "app/index.js",
                "app/node_modules/left-pad/index.js",
                "file-name",
                "logs/file-name/out.log",
                "node_modules/x/y.js",
            ],
        );
        check(
            &["**/.*"],
            &[
                ".git/config",
                "app/.cache/blob",
                "app/index.js",
                "app/node_modules/left-pad/index.js",
                "file-name",
                "logs/file-name/out.log",
                "node_modules/x/y.js",
            ],
        );
        check(
            &["**/node_modules/**/*", "**/file-name/**/*"],
            &[
                ".env",
                ".git/config",
                "app/.cache/blob",
                "app/.npmrc",
                "app/index.js",
                "file-name",
            ],
        );
        check(
            &["**/.*/**/*", "**/.*", "./node_modules", "**/*.log"],
            &[
                "app/index.js",
                "app/node_modules/left-pad/index.js",
                "file-name",
            ],
        );
    }

    #[test]
    fn excludes_are_relative_to_the_base() {
        let dir = my_build_tree();
        let files = strings(&["**/*"]);
        let excludes = strings(&["my-subdirectory/*"]);
        let mut spec = spec(&files, &excludes);
        spec.base_directory = Some("my-build-2");
        assert_eq!(run(dir.path(), &spec).unwrap(), ["my-file-2.txt"]);
    }

    #[test]
    fn parent_and_absolute_paths_are_refused() {
        let dir = my_build_tree();
        for pattern in ["../etc/passwd", "my-build-1/../../x", "/etc/passwd"] {
            let files = strings(&[pattern]);
            let err = run(dir.path(), &spec(&files, &[])).unwrap_err();
            assert!(
                matches!(err, ArtifactError::UnsafePattern { pattern: ref named, .. } if named == pattern),
                "{pattern}: {err}"
            );
        }
        let files = strings(&["**/*"]);
        let excludes = strings(&["../x"]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &excludes)),
            Err(ArtifactError::UnsafePattern { .. })
        ));
        for base in ["..", "my-build-1/../..", "/etc", "/tmp/../etc"] {
            let mut spec = spec(&files, &[]);
            spec.base_directory = Some(base);
            let err = run(dir.path(), &spec).unwrap_err();
            assert!(
                matches!(
                    err,
                    ArtifactError::UnsafeBase { .. } | ArtifactError::BaseOutsideRoots { .. }
                ),
                "{base}: {err}"
            );
            assert!(err.to_string().contains(base), "{err}");
        }
    }

    #[test]
    fn absolute_base_inside_a_secondary_root() {
        let primary = my_build_tree();
        let secondary = tempfile::tempdir().unwrap();
        write(secondary.path(), "out/lib.so", "");
        let roots = [primary.path().to_path_buf(), secondary.path().to_path_buf()];
        let files = strings(&["**/*"]);
        let base = secondary.path().join("out");
        let base = base.to_str().unwrap();
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some(base);
        let picked = select(primary.path(), &roots, &spec).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].relative, "lib.so");

        let glob_base = format!("{}/o*", secondary.path().display());
        spec.base_directory = Some(&glob_base);
        let picked = select(primary.path(), &roots, &spec).unwrap();
        assert_eq!(picked[0].relative, "lib.so");

        // The same directory is refused once it is not an allowed root.
        let err = select(primary.path(), &roots[..1], &spec).unwrap_err();
        assert!(
            matches!(err, ArtifactError::BaseOutsideRoots { .. }),
            "{err}"
        );
    }

    #[test]
    fn symlinked_base_outside_roots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", "s");
        symlink(outside.path(), dir.path().join("out")).unwrap();
        let files = strings(&["**/*"]);
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some("out");
        let err = run(dir.path(), &spec).unwrap_err();
        assert!(
            matches!(err, ArtifactError::BaseOutsideRoots { .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_base_is_an_error_naming_it() {
        let dir = my_build_tree();
        let files = strings(&["**/*"]);
        for base in ["nowhere", "nothing*", "my-build-1/my-file-1.txt"] {
            let mut spec = spec(&files, &[]);
            spec.base_directory = Some(base);
            let err = run(dir.path(), &spec).unwrap_err();
            assert!(matches!(err, ArtifactError::BaseNotFound { .. }), "{err}");
            assert!(err.to_string().contains(base), "{err}");
        }
    }

    #[test]
    fn symlink_pointing_outside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "id_rsa", "secret");
        write(dir.path(), "ok.txt", "");
        symlink(outside.path().join("id_rsa"), dir.path().join("key")).unwrap();
        let files = strings(&["**/*"]);
        for enable_symlinks in [false, true] {
            let mut spec = spec(&files, &[]);
            spec.enable_symlinks = enable_symlinks;
            let err = run(dir.path(), &spec).unwrap_err();
            assert!(
                matches!(err, ArtifactError::SymlinkOutside { ref link, .. } if link.ends_with("key")),
                "{err}"
            );
        }
        // Excluded, it no longer matters where it points.
        let excludes = strings(&["key"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &excludes)).unwrap(),
            ["ok.txt"]
        );
    }

    #[test]
    fn symlink_to_directory_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", "s");
        write(dir.path(), "real/file.txt", "");
        symlink(outside.path(), dir.path().join("escape")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("loop")).unwrap();
        let files = strings(&["**/*"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &[])).unwrap(),
            ["real/file.txt"]
        );
        let files = strings(&["escape/secret"]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &[])),
            Err(ArtifactError::NoMatch { .. })
        ));
    }

    #[test]
    fn symlink_inside_copies_content_or_link() {
        let dir = tempfile::tempdir().unwrap();
        let secondary = tempfile::tempdir().unwrap();
        write(dir.path(), "lib/real.so", "library");
        write(secondary.path(), "shared.txt", "shared");
        symlink("real.so", dir.path().join("lib/alias.so")).unwrap();
        symlink(
            secondary.path().join("shared.txt"),
            dir.path().join("shared"),
        )
        .unwrap();
        let roots = [dir.path().to_path_buf(), secondary.path().to_path_buf()];
        let files = strings(&["**/*"]);

        let spec_content = spec(&files, &[]);
        let picked = select(dir.path(), &roots, &spec_content).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("content");
        let written = copy_into(&picked, &dest).unwrap();
        assert_eq!(written, ["lib/alias.so", "lib/real.so", "shared"]);
        let alias = dest.join("lib/alias.so");
        assert!(
            !fs::symlink_metadata(&alias)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&alias).unwrap(), "library");
        assert_eq!(fs::read_to_string(dest.join("shared")).unwrap(), "shared");

        let mut spec_links = spec(&files, &[]);
        spec_links.enable_symlinks = true;
        let picked = select(dir.path(), &roots, &spec_links).unwrap();
        let dest = out.path().join("links");
        copy_into(&picked, &dest).unwrap();
        let alias = dest.join("lib/alias.so");
        assert!(
            fs::symlink_metadata(&alias)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&alias).unwrap(), Path::new("real.so"));
        assert_eq!(fs::read_to_string(&alias).unwrap(), "library");
        assert_eq!(
            fs::read_link(dest.join("shared")).unwrap(),
            secondary.path().join("shared.txt")
        );
        assert!(
            !fs::symlink_metadata(dest.join("lib/real.so"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn dangling_symlinks_and_sockets_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "keep.txt", "");
        symlink("missing", dir.path().join("dangling")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let files = strings(&["**/*"]);
        assert_eq!(run(dir.path(), &spec(&files, &[])).unwrap(), ["keep.txt"]);
        let files = strings(&["sock"]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &[])),
            Err(ArtifactError::NoMatch { .. })
        ));
    }

    #[test]
    fn every_unmatched_pattern_is_reported() {
        let dir = my_build_tree();
        let files = strings(&["missing.jar", "my-build-1/*", "dist/**/*", "*.zip"]);
        let err = run(dir.path(), &spec(&files, &[])).unwrap_err();
        let ArtifactError::NoMatch { ref patterns } = err else {
            panic!("{err}");
        };
        assert_eq!(patterns, &strings(&["missing.jar", "dist/**/*", "*.zip"]));
        let message = err.to_string();
        for pattern in ["missing.jar", "dist/**/*", "*.zip"] {
            assert!(
                message.contains(&format!(
                    "no matching artifact paths found for pattern '{pattern}'"
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn pattern_matching_only_excluded_files_is_unmatched() {
        let dir = my_build_tree();
        let files = strings(&["my-build-1/*"]);
        let excludes = strings(&["**/*.txt"]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &excludes)),
            Err(ArtifactError::NoMatch { .. })
        ));
    }

    #[test]
    fn discard_paths_collision_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/app.jar", "");
        write(dir.path(), "b/app.jar", "");
        let files = strings(&["**/*.jar"]);
        let mut spec = spec(&files, &[]);
        spec.discard_paths = true;
        let err = run(dir.path(), &spec).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ArtifactError::Collision { .. }), "{message}");
        assert!(message.contains("a/app.jar"), "{message}");
        assert!(message.contains("b/app.jar"), "{message}");
    }

    #[test]
    fn glob_bases_that_overlap_collide_or_conflict() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "out-1/readme", "1");
        write(dir.path(), "out-2/readme", "2");
        let files = strings(&["**/*"]);
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some("out-*");
        assert!(matches!(
            run(dir.path(), &spec),
            Err(ArtifactError::Collision { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "out-1/x", "file");
        write(dir.path(), "out-2/x/y", "nested");
        assert!(matches!(
            run(dir.path(), &spec),
            Err(ArtifactError::PathConflict { .. })
        ));
    }

    #[test]
    fn overlapping_patterns_select_a_file_once() {
        let dir = my_build_tree();
        let files = strings(&["**/*", "my-build-1/my-file-1.txt", "my-build-1"]);
        assert_eq!(
            run(dir.path(), &spec(&files, &[])).unwrap(),
            [
                "my-build-1/my-file-1.txt",
                "my-build-2/my-file-2.txt",
                "my-build-2/my-subdirectory/my-file-3.txt"
            ]
        );
    }

    #[test]
    fn plain_directory_means_everything_under_it() {
        let dir = my_build_tree();
        for pattern in ["my-build-2", "my-build-2/", "./my-build-2"] {
            let files = strings(&[pattern]);
            assert_eq!(
                run(dir.path(), &spec(&files, &[])).unwrap(),
                [
                    "my-build-2/my-file-2.txt",
                    "my-build-2/my-subdirectory/my-file-3.txt"
                ],
                "{pattern}"
            );
        }
        let files = strings(&["."]);
        let mut spec = spec(&files, &[]);
        spec.base_directory = Some("my-build-2");
        assert_eq!(
            run(dir.path(), &spec).unwrap(),
            ["my-file-2.txt", "my-subdirectory/my-file-3.txt"]
        );
    }

    #[test]
    fn invalid_glob_is_reported() {
        let dir = my_build_tree();
        let files = strings(&["src/[a-"]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &[])),
            Err(ArtifactError::InvalidPattern { .. })
        ));
        let files = strings(&[""]);
        assert!(matches!(
            run(dir.path(), &spec(&files, &[])),
            Err(ArtifactError::InvalidPattern { .. })
        ));
        assert!(matches!(
            run(dir.path(), &spec(&[], &[])),
            Err(ArtifactError::NoFiles)
        ));
    }

    #[test]
    fn copy_keeps_mode_bits_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bin/run.sh", "#!/bin/sh\n");
        write(dir.path(), "data/a.txt", "a");
        let script = dir.path().join("bin/run.sh");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(
            dir.path().join("data/a.txt"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let files = strings(&["**/*"]);
        let picked = select(dir.path(), &[dir.path().to_path_buf()], &spec(&files, &[])).unwrap();
        let out = tempfile::tempdir().unwrap();
        let written = copy_into(&picked, out.path()).unwrap();
        assert_eq!(written, ["bin/run.sh", "data/a.txt"]);
        let mode = |rel: &str| {
            fs::metadata(out.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/run.sh"), 0o755);
        assert_eq!(mode("data/a.txt"), 0o640);
        assert_eq!(
            fs::read_to_string(out.path().join("data/a.txt")).unwrap(),
            "a"
        );
    }

    #[test]
    fn copy_refuses_non_empty_destination_and_unsafe_paths() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", "a");
        let out = tempfile::tempdir().unwrap();
        write(out.path(), "old", "");
        let item = Selected {
            source: dir.path().join("a.txt"),
            relative: "a.txt".to_string(),
            symlink: false,
        };
        assert!(matches!(
            copy_into(std::slice::from_ref(&item), out.path()),
            Err(ArtifactError::DestinationNotEmpty { .. })
        ));
        for relative in ["../a.txt", "/a.txt", "", "x/./a.txt"] {
            let bad = Selected {
                relative: relative.to_string(),
                ..item.clone()
            };
            assert!(matches!(
                copy_into(&[bad], &out.path().join("fresh")),
                Err(ArtifactError::UnsafeRelative { .. })
            ));
        }
        assert!(!out.path().join("fresh").exists());
    }

    #[test]
    fn walk_skips_what_cannot_match() {
        let shape = Shape::new("lib/*/x.jar");
        assert!(shape.may_match_under(Path::new("lib")));
        assert!(shape.may_match_under(Path::new("lib/a")));
        assert!(!shape.may_match_under(Path::new("lib/a/b")));
        assert!(!shape.may_match_under(Path::new("src")));
        let shape = Shape::new("lib/**/*.jar");
        assert!(shape.may_match_under(Path::new("lib/a/b/c")));
        assert!(!shape.may_match_under(Path::new("node_modules")));

        let excludes = strings(&["**/node_modules/**/*", "./.git", "**/*.log"]);
        let prune = PatternSet::new(&excludes, false)
            .unwrap()
            .prune_set()
            .unwrap();
        assert!(prune.is_match("node_modules"));
        assert!(prune.is_match("app/node_modules"));
        assert!(prune.is_match(".git"));
        assert!(!prune.is_match("app/.git"));
        assert!(!prune.is_match("logs"));
    }

    #[test]
    fn ten_thousand_files() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..100 {
            let sub = dir.path().join(format!("pkg-{d:03}/src"));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..100 {
                fs::write(sub.join(format!("file-{f:03}.txt")), "x").unwrap();
            }
        }
        write(dir.path(), "node_modules/dep/index.js", "");
        let files = strings(&["**/*"]);
        let excludes = strings(&["**/node_modules/**/*"]);
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let picked = select(
            dir.path(),
            &[dir.path().to_path_buf()],
            &spec(&files, &excludes),
        )
        .unwrap();
        let selected_after = started.elapsed();
        let written = copy_into(&picked, &out.path().join("artifact")).unwrap();
        let total = started.elapsed();
        println!(
            "10,000 files: select {:.1} ms, select + copy {:.1} ms",
            selected_after.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0
        );
        assert_eq!(written.len(), 10_000);
        assert_eq!(written[0], "pkg-000/src/file-000.txt");
    }
}
