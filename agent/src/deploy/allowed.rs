//! Where a deployment may install files. A bundle names absolute destinations; the agent
//! installs only under the roots its config allows, and never through a link that leads
//! elsewhere.

use std::path::{Component, Path, PathBuf};

/// Roots allowed when the config names none: where applications are installed by
/// convention, never the system's own directories.
pub const DEFAULT_ROOTS: [&str; 8] = [
    "/opt",
    "/srv",
    "/var/www",
    "/var/app",
    "/usr/local",
    "/home",
    "/tmp",
    "/var/tmp",
];

/// Never a destination, whatever the roots say.
const DENIED: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

#[derive(Debug, Clone)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
    denied: Vec<PathBuf>,
}

impl AllowedRoots {
    /// No destination at all: a deployment may run hooks but install no file.
    pub fn none(state: &Path) -> Self {
        let mut allowed = AllowedRoots::new(&[], state);
        allowed.roots.clear();
        allowed
    }

    /// `roots` as configured (the defaults when empty); `state` (the deployment root) is
    /// refused as a destination so a bundle cannot rewrite the agent's own records.
    pub fn new(roots: &[PathBuf], state: &Path) -> Self {
        let roots: Vec<PathBuf> = if roots.is_empty() {
            DEFAULT_ROOTS.iter().map(PathBuf::from).collect()
        } else {
            roots.to_vec()
        };
        let resolve = |p: &Path| resolve_existing(&normalize(p).unwrap_or_else(|| p.to_path_buf()));
        AllowedRoots {
            roots: roots.iter().map(|r| resolve(r)).collect(),
            denied: DENIED
                .iter()
                .map(PathBuf::from)
                .chain(std::iter::once(state.to_path_buf()))
                .map(|p| resolve(&p))
                .collect(),
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Checks a destination as written in an appspec: absolute, no `..`, and inside a root
    /// once every link on the way is followed.
    pub fn check(&self, destination: &str) -> Result<PathBuf, String> {
        let path = Path::new(destination);
        if !path.is_absolute() {
            return Err(format!(
                "the destination `{destination}` is not an absolute path; write it from `/`"
            ));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "the destination `{destination}` contains `..`; write the path it means"
            ));
        }
        let lexical = normalize(path).unwrap_or_else(|| path.to_path_buf());
        self.check_resolved(&lexical)
            .map(|_| lexical)
            .map_err(|resolved| {
                let via = if resolved == Path::new(destination) {
                    String::new()
                } else {
                    format!(" (it resolves to {})", resolved.display())
                };
                format!(
                    "the destination `{destination}`{via} is outside the directories deployments may write to ({}); allow it in the config (`deploy.allowed_destinations`) or with --allow-destination",
                    self.describe()
                )
            })
    }

    /// Whether `path`, resolved through the links that exist now, is inside a root; the
    /// resolved path on refusal.
    pub fn check_resolved(&self, path: &Path) -> Result<(), PathBuf> {
        let resolved = resolve_existing(path);
        let inside = |base: &PathBuf| resolved.starts_with(base);
        if self.roots.iter().any(inside) && !self.denied.iter().any(inside) {
            Ok(())
        } else {
            Err(resolved)
        }
    }

    fn describe(&self) -> String {
        if self.roots.is_empty() {
            return "none: this agent installs no files".to_string();
        }
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `path` without `.` and with `..` applied; `None` when `..` climbs above the start.
pub fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The longest existing ancestor of `path` with its links followed, joined with the rest.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_inside_and_outside() {
        let base = tempfile::tempdir().unwrap();
        let allowed = base.path().join("apps");
        std::fs::create_dir(&allowed).unwrap();
        let state = base.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let roots = AllowedRoots::new(std::slice::from_ref(&allowed), &state);
        let inside = allowed.join("web/new");
        assert!(roots.check(inside.to_str().unwrap()).is_ok());
        for bad in [
            "relative/path".to_string(),
            format!("{}/../escape", allowed.display()),
            "/etc".to_string(),
            state.join("x").display().to_string(),
        ] {
            assert!(roots.check(&bad).is_err(), "{bad}");
        }
        // A link inside the root that leads out of it does not make its target allowed.
        std::os::unix::fs::symlink("/etc", allowed.join("sneaky")).unwrap();
        let err = roots
            .check(allowed.join("sneaky/cron.d").to_str().unwrap())
            .unwrap_err();
        assert!(err.contains("resolves to /etc/cron.d"), "{err}");
    }

    #[test]
    fn none_allows_no_destination() {
        let roots = AllowedRoots::none(Path::new("/var/lib/agent/deployments"));
        for dest in ["/opt/app", "/tmp/x", "/srv"] {
            let err = roots.check(dest).unwrap_err();
            assert!(err.contains("this agent installs no files"), "{err}");
        }
    }

    #[test]
    fn defaults_refuse_system_directories() {
        let roots = AllowedRoots::new(&[], Path::new("/var/lib/agent/deployments"));
        assert!(roots.check("/opt/app").is_ok());
        for bad in [
            "/",
            "/etc/passwd",
            "/usr/bin",
            "/bin",
            "/boot",
            "/var/lib/agent/deployments/g",
        ] {
            assert!(roots.check(bad).is_err(), "{bad}");
        }
    }
}
