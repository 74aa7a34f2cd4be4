//! The deployment root, laid out as the CodeDeploy agent lays out its own, so that ops who
//! know one know the other:
//!
//! ```text
//! <root>/<group-id>/<deployment-id>/bundle.tar            the bundle as fetched (archives)
//! <root>/<group-id>/<deployment-id>/deployment-archive/   the unpacked revision
//! <root>/<group-id>/<deployment-id>/logs/scripts.log      every hook's output
//! <root>/<group-id>/<deployment-id>/summary.json          the result
//! <root>/deployment-instructions/<group-id>_last_successful_install
//! <root>/deployment-instructions/<group-id>_most_recent_install
//! <root>/deployment-instructions/<group-id>_last_successful_deployment
//! <root>/deployment-instructions/<group-id>-cleanup       what the last Install created
//! <root>/deployment-instructions/<group-id>-install.json
//! <root>/deployment-logs/agent-deployments.log
//! <root>/ongoing-deployment/<deployment-id>
//! ```
//!
//! Pointers hold the absolute path of a deployment directory and are replaced atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot use the deployment root {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "another deployment of group `{group}` is in progress on this host (lock {lock}); wait for it to finish"
    )]
    Busy { group: String, lock: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The pointers kept per deployment group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointer {
    /// Written when Install succeeds: ApplicationStop and the block-traffic hooks of the next
    /// deployment run from here.
    LastSuccessfulInstall,
    /// Written when DownloadBundle succeeds.
    MostRecentInstall,
    /// Written when every event succeeded: what a rollback redeploys.
    LastSuccessfulDeployment,
}

impl Pointer {
    fn suffix(self) -> &'static str {
        match self {
            Pointer::LastSuccessfulInstall => "_last_successful_install",
            Pointer::MostRecentInstall => "_most_recent_install",
            Pointer::LastSuccessfulDeployment => "_last_successful_deployment",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeploymentRoot {
    root: PathBuf,
}

impl DeploymentRoot {
    /// Opens (creating) the root; the path is made absolute so pointers stay valid.
    pub fn open(root: &Path) -> Result<Self, RootError> {
        let absolute = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err(root))?.join(root)
        };
        for dir in [
            "deployment-instructions",
            "deployment-logs",
            "ongoing-deployment",
        ] {
            fs::create_dir_all(absolute.join(dir)).map_err(io_err(&absolute))?;
        }
        let root = absolute.canonicalize().map_err(io_err(&absolute))?;
        Ok(DeploymentRoot { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn group_dir(&self, group_id: &str) -> PathBuf {
        self.root.join(group_id)
    }

    pub fn deployment_dir(&self, group_id: &str, deployment_id: &str) -> PathBuf {
        self.group_dir(group_id).join(deployment_id)
    }

    fn instructions(&self) -> PathBuf {
        self.root.join("deployment-instructions")
    }

    pub fn cleanup_file(&self, group_id: &str) -> PathBuf {
        self.instructions().join(format!("{group_id}-cleanup"))
    }

    pub fn install_file(&self, group_id: &str) -> PathBuf {
        self.instructions().join(format!("{group_id}-install.json"))
    }

    pub fn deployments_log(&self) -> PathBuf {
        self.root
            .join("deployment-logs")
            .join("agent-deployments.log")
    }

    fn pointer_file(&self, group_id: &str, pointer: Pointer) -> PathBuf {
        self.instructions()
            .join(format!("{group_id}{}", pointer.suffix()))
    }

    /// The deployment directory a pointer names, if it was ever written.
    pub fn pointer(&self, group_id: &str, pointer: Pointer) -> Option<PathBuf> {
        let text = fs::read_to_string(self.pointer_file(group_id, pointer)).ok()?;
        let path = PathBuf::from(text.trim_end_matches('\n'));
        (path.is_absolute() && !text.trim().is_empty()).then_some(path)
    }

    pub fn set_pointer(
        &self,
        group_id: &str,
        pointer: Pointer,
        deployment_dir: &Path,
    ) -> Result<(), RootError> {
        let file = self.pointer_file(group_id, pointer);
        write_atomically(&file, format!("{}\n", deployment_dir.display()).as_bytes())
    }

    /// Takes the group's lock for the whole deployment: two deployments of one group at once
    /// would remove each other's files.
    pub fn lock_group(&self, group_id: &str) -> Result<GroupLock, RootError> {
        let path = self.instructions().join(format!("{group_id}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(GroupLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(RootError::Busy {
                group: group_id.to_string(),
                lock: path.display().to_string(),
            }),
            Err((_, errno)) => Err(RootError::Io {
                path: path.display().to_string(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// Marks a deployment as under way, so that an agent restarted mid-deployment can report
    /// it instead of leaving it hanging.
    pub fn mark_ongoing(&self, deployment_id: &str, body: &str) -> Result<(), RootError> {
        let file = self.root.join("ongoing-deployment").join(deployment_id);
        write_atomically(&file, body.as_bytes())
    }

    pub fn clear_ongoing(&self, deployment_id: &str) {
        let _ = fs::remove_file(self.root.join("ongoing-deployment").join(deployment_id));
    }

    /// Deployments of the group that were started and never finished (the agent died).
    pub fn ongoing(&self) -> Vec<(String, String)> {
        let Ok(entries) = fs::read_dir(self.root.join("ongoing-deployment")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let body = fs::read_to_string(e.path()).ok()?;
                Some((name, body))
            })
            .collect()
    }

    /// Removes the group's oldest deployment directories so that, with the one about to be
    /// made, at most `keep` remain; the directories a pointer names are never removed.
    pub fn prune(&self, group_id: &str, keep: usize) -> Vec<PathBuf> {
        let group = self.group_dir(group_id);
        let Ok(entries) = fs::read_dir(&group) else {
            return Vec::new();
        };
        let protected: Vec<PathBuf> = [
            Pointer::LastSuccessfulInstall,
            Pointer::MostRecentInstall,
            Pointer::LastSuccessfulDeployment,
        ]
        .into_iter()
        .filter_map(|p| self.pointer(group_id, p))
        .collect();
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let started = fs::metadata(e.path().join(STARTED))
                    .and_then(|m| m.modified())
                    .or_else(|_| e.metadata().and_then(|m| m.modified()))
                    .unwrap_or(std::time::UNIX_EPOCH);
                (started, e.path())
            })
            .collect();
        dirs.sort();
        let excess = (dirs.len() + 1).saturating_sub(keep.max(1));
        let mut removed = Vec::new();
        for (_, dir) in dirs {
            if removed.len() >= excess {
                break;
            }
            if protected.iter().any(|p| p == &dir) {
                continue;
            }
            match fs::remove_dir_all(&dir) {
                Ok(()) => removed.push(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old revision")
                }
            }
        }
        removed
    }
}

/// A file in each deployment directory whose mtime orders deployments for pruning.
pub const STARTED: &str = ".started";

/// Held while a deployment runs; dropping it releases the group.
pub struct GroupLock {
    _lock: Flock<fs::File>,
}

/// Writes `bytes` to `path` so that a reader sees the old content or the new, never a mix,
/// even across a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RootError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(path))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| RootError::Io {
        path: path.display().to_string(),
        source: e.error,
    })?;
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let root = DeploymentRoot::open(dir.path()).unwrap();
        assert_eq!(root.pointer("g", Pointer::LastSuccessfulInstall), None);
        let d1 = root.deployment_dir("g", "d-1");
        root.set_pointer("g", Pointer::LastSuccessfulInstall, &d1)
            .unwrap();
        assert_eq!(root.pointer("g", Pointer::LastSuccessfulInstall), Some(d1));
        let d2 = root.deployment_dir("g", "d-2");
        root.set_pointer("g", Pointer::LastSuccessfulInstall, &d2)
            .unwrap();
        assert_eq!(root.pointer("g", Pointer::LastSuccessfulInstall), Some(d2));
        assert_eq!(root.pointer("g", Pointer::MostRecentInstall), None);
    }

    #[test]
    fn one_deployment_per_group_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = DeploymentRoot::open(dir.path()).unwrap();
        let held = root.lock_group("g").unwrap();
        assert!(matches!(root.lock_group("g"), Err(RootError::Busy { .. })));
        assert!(root.lock_group("other").is_ok());
        drop(held);
        assert!(root.lock_group("g").is_ok());
    }

    #[test]
    fn prune_keeps_the_newest_and_the_pointed_at() {
        let dir = tempfile::tempdir().unwrap();
        let root = DeploymentRoot::open(dir.path()).unwrap();
        let mut dirs = Vec::new();
        for i in 0..6 {
            let d = root.deployment_dir("g", &format!("d-{i}"));
            fs::create_dir_all(&d).unwrap();
            let started = fs::File::create(d.join(STARTED)).unwrap();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            started.set_modified(when).unwrap();
            dirs.push(d);
        }
        root.set_pointer("g", Pointer::LastSuccessfulDeployment, &dirs[0])
            .unwrap();
        let removed = root.prune("g", 3);
        // Three with the next one: the protected d-0, the newest d-5, and the next.
        assert_eq!(removed, dirs[1..5].to_vec());
        assert!(dirs[0].exists() && dirs[5].exists());
    }
}
