//! Keeps the state directory from growing without end: finished jobs' results, logs and
//! kept artifacts older than `agent.retention` are removed, and so are git mirrors no job
//! has fetched through for that long. Journal entries and running jobs' scratch
//! directories are never touched; they are the crash-safety records.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub results: usize,
    pub logs: usize,
    pub artifacts: usize,
    pub mirrors: usize,
}

/// Removes what finished longer than `keep` ago (by modification time) from `state`'s
/// `results/`, `logs/` and `artifacts/`, and the git mirrors under `git/mirrors/` last used
/// before then.
pub fn prune(state: &Path, keep: Duration) -> Pruned {
    let Some(cutoff) = SystemTime::now().checked_sub(keep) else {
        return Pruned::default();
    };
    Pruned {
        results: prune_dir(&state.join("results"), cutoff),
        logs: prune_dir(&state.join("logs"), cutoff),
        artifacts: prune_dir(&state.join("artifacts"), cutoff),
        mirrors: crate::source::git_fetch::evict_unused(&state.join("git/mirrors"), cutoff),
    }
}

fn prune_dir(dir: &Path, cutoff: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta.modified().is_ok_and(|at| at < cutoff);
        if !old {
            continue;
        }
        let gone = if meta.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an expired entry of the state directory");
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, by: Duration) {
        let at = SystemTime::now() - by;
        let file = std::fs::File::options()
            .write(path.is_file())
            .read(true)
            .open(path)
            .unwrap();
        file.set_modified(at).unwrap();
    }

    #[test]
    fn only_what_is_older_than_the_retention_goes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        for sub in [
            "results",
            "logs",
            "artifacts/old-job",
            "artifacts/new-job",
            "journal",
        ] {
            std::fs::create_dir_all(state.join(sub)).unwrap();
        }
        let day = Duration::from_secs(86400);
        for (file, days) in [
            ("results/old-job.json", 20),
            ("results/new-job.json", 1),
            ("logs/old-job.log", 20),
            ("logs/new-job.log", 0),
            ("journal/abc.json", 40),
        ] {
            std::fs::write(state.join(file), "x").unwrap();
            age(&state.join(file), day * days);
        }
        std::fs::write(state.join("artifacts/old-job/app.jar"), "x").unwrap();
        age(&state.join("artifacts/old-job"), day * 20);

        let pruned = prune(state, day * 15);
        assert_eq!(
            pruned,
            Pruned {
                results: 1,
                logs: 1,
                artifacts: 1,
                mirrors: 0,
            }
        );
        assert!(state.join("results/new-job.json").exists());
        assert!(!state.join("results/old-job.json").exists());
        assert!(state.join("logs/new-job.log").exists());
        assert!(!state.join("artifacts/old-job").exists());
        assert!(state.join("artifacts/new-job").exists());
        assert!(
            state.join("journal/abc.json").exists(),
            "the journal is never pruned"
        );
    }
}
